"""Prometheus metrics of one app: requests by route and status, latency, and predicted classes.

Each app has its own registry, so two apps in one process (tests, a demo beside the API) never share counts.
"""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

# Latency buckets for image classification on CPU: from a few milliseconds to tens of seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


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

    def observe(self, path: str, status: int, seconds: float) -> None:
        route = path if path in self.routes else "other"
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def predicted(self, label: str) -> None:
        self.predictions.labels(label).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
