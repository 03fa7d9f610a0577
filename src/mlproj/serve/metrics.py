"""Prometheus metrics of one app: requests by route and status, latency, predicted classes, and the batching
(images per forward pass, images waiting for one, requests in flight).

Each app has its own registry, so two apps in one process (tests, a demo beside the API) never share counts.
"""

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Latency buckets for image classification on CPU: from a few milliseconds to tens of seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServeMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, routes: set[str]) -> None:
        self.routes = routes  # any other path counts as "other": a scanner cannot grow the label set
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlproj_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "mlproj_request_seconds",
            "Time from request to response, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "mlproj_predictions", "Images answered, by top-1 class", ["label"], registry=self.registry
        )
        self.batch_size = Histogram(
            "mlproj_batch_size", "Images per forward pass", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.queue_depth = Gauge(
            "mlproj_queue_depth", "Images decoded and waiting for a forward pass", registry=self.registry
        )
        self.in_flight = Gauge(
            "mlproj_requests_in_flight", "Requests admitted, not yet answered", registry=self.registry
        )

    def watch(self, queue_depth: Callable[[], float], in_flight: Callable[[], float]) -> None:
        """The gauges read these when scraped, so they are exact without being updated on every request."""
        self.queue_depth.set_function(queue_depth)
        self.in_flight.set_function(in_flight)

    def observe(self, path: str, status: int, seconds: float) -> None:
        route = path if path in self.routes else "other"
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def predicted(self, label: str) -> None:
        self.predictions.labels(label).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
