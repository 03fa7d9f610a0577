"""Load test of `mlproj serve`: N requests to POST /predict, all in flight at once, from this client process.

    python benchmarks/serve_load.py http://127.0.0.1:8000 IMAGE [--requests 200] [--timeout 60]

Every request uploads IMAGE and must come back 200 with one result; each has its own timeout, so the run ends in
bounded time. Prints one JSON line (requests, errors, seconds, throughput, p50/p99 latency) and exits 1 on any
error. Send it only to a server you run, on 127.0.0.1.
"""

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

BOUNDARY = "mlproj-load-boundary"


def multipart(filename: str, data: bytes) -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'
    return head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def one_request(url: str, body: bytes, timeout: float) -> tuple[float, str | None]:
    """(seconds, None) for a 200 with one result, else (seconds, what went wrong)."""
    request = urllib.request.Request(
        f"{url}/predict", data=body, headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            results = json.loads(answer.read())["results"]
            error = None if answer.status == 200 and len(results) == 1 else f"status {answer.status}"
    except (OSError, ValueError, KeyError) as failure:  # URLError, HTTPError, timeouts, bad JSON
        error = f"{type(failure).__name__}: {failure}"
    return time.perf_counter() - start, error


def run(url: str, image: Path, requests: int, timeout: float) -> dict:
    """All requests start together (one thread each, released by a barrier), so all are in flight at once."""
    body = multipart(image.name, image.read_bytes())
    outcomes: list[tuple[float, str | None]] = [(0.0, "not run")] * requests
    barrier = threading.Barrier(requests + 1)

    def worker(i: int) -> None:
        barrier.wait()
        outcomes[i] = one_request(url, body, timeout)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(requests)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join(timeout + 5)
    seconds = time.perf_counter() - start
    latencies = sorted(latency for latency, _ in outcomes)
    errors = [error for _, error in outcomes if error]
    percentiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "requests": requests,
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": round(seconds, 3),
        "throughput_rps": round(requests / seconds, 1),
        "p50_ms": round(percentiles[49] * 1000, 1),
        "p99_ms": round(percentiles[98] * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("image", type=Path, help="the image every request uploads")
    parser.add_argument("--requests", type=int, default=200, help="how many, all at once (default 200)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds each request may take (default 60)")
    args = parser.parse_args()
    report = run(args.url.rstrip("/"), args.image, args.requests, args.timeout)
    print(json.dumps(report))
    sys.exit(1 if report["errors"] else 0)


if __name__ == "__main__":
    main()
