"""Load test of `mlproj serve`: concurrent single-image POST /predict requests from separate client processes.

    python benchmarks/serve_load.py URL IMAGE [--requests 200] [--timeout 60]
    python benchmarks/serve_load.py --compare [--blocks 3] [--seconds 6]

URL IMAGE: that many requests, all sent at once (one client each, spread over client processes), against a server
you run on 127.0.0.1; every request must come back 200 with one result within its timeout. Prints one JSON line
(requests, errors, seconds, throughput, p50/p99 latency) and exits 1 on any error.

--compare builds a resnet18 at 224 px (one training step from random weights on a few photos of
../shared/data/hymenoptera, then its int8 ONNX export, calibrated on those photos), starts the servers itself and
measures them side by side, in alternating blocks of closed-loop clients (each client sends its next request when
the last one is answered):

- batched (`mlproj serve CKPT`, the defaults) against the same server with `--max-batch-size 1`, 64 clients
  (throughput, p99) and one client (p50: batching must not tax a lone request);
- the best configuration docs/serving.md documents against today's `mlproj serve CKPT` (one forward pass per
  request on each of FastAPI's 40 threads), 64 clients;
- 200 clients against the batched server: the errors.

Each ratio is the median of its per-block ratios; the lines follow benchmarks/README.md.
"""

import argparse
import http.client
import json
import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from multiprocessing.pool import Pool
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "hymenoptera"
MLPROJ = str(Path(sys.executable).parent / "mlproj")
BOUNDARY = "mlproj-load-boundary"
MAX_CLIENT_PROCESSES = 8
CORES = len(os.sched_getaffinity(0))
# The best configuration docs/serving.md documents: the int8 ONNX export (`mlproj export format=onnx quantize=true`)
# with its defaults, one single-threaded worker per core, batches of up to 16 images.
BEST = ("--workers", str(CORES), "--threads", "1")
# Today's `mlproj serve CKPT` before batching: one forward pass per request in each of FastAPI's 40 worker threads,
# each on PyTorch's default intra-op threads (one per core). Measured against that code itself: the same throughput.
TODAY = ("--max-batch-size", "1", "--workers", "40", "--threads", str(CORES))

Outcome = tuple[float, float, str | None]  # (time answered, seconds taken, error or None)


def multipart(filename: str, data: bytes) -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'
    return head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: defined for a single value too."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def one_request(connection: http.client.HTTPConnection, body: bytes) -> str | None:
    """None for a 200 with one result, else what went wrong (the connection is then closed and reopened)."""
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    try:
        connection.request("POST", "/predict", body, headers)
        answer = connection.getresponse()
        payload = answer.read()
        if answer.status != 200:
            connection.close()
            return f"status {answer.status}: {payload[:200]!r}"
        return None if len(json.loads(payload)["results"]) == 1 else "not one result"
    except (OSError, ValueError, KeyError, http.client.HTTPException) as failure:  # timeouts, resets, bad JSON
        connection.close()
        return f"{type(failure).__name__}: {failure}"


def client_process(url: str, body: bytes, clients: int, start_at: float, until: float, each: int, timeout: float):
    """`clients` threads from `start_at` (wall clock): each sends `each` requests, or as many as fit before `until`
    when `each` is 0, one after the other on its own keep-alive connection."""
    address = urlsplit(url)
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=timeout)
        time.sleep(max(0.0, start_at - time.time()))
        sent = 0
        while (each and sent < each) or (not each and time.time() < until):
            begin = time.perf_counter()
            error = one_request(connection, body)
            with lock:
                outcomes.append((time.time(), time.perf_counter() - begin, error))
            sent += 1
        connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@dataclass(frozen=True)
class Load:
    requests: int  # answered inside the measured window
    errors: list[str]
    seconds: float
    latencies: list[float]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def summary(self) -> dict:
        return {
            "requests": self.requests,
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
            "seconds": round(self.seconds, 3),
            "throughput_rps": round(self.throughput, 1),
            "p50_ms": round(percentile(self.latencies, 50) * 1000, 1) if self.latencies else None,
            "p99_ms": round(percentile(self.latencies, 99) * 1000, 1) if self.latencies else None,
        }


def run_clients(
    pool: Pool,
    url: str,
    body: bytes,
    clients: int,
    each: int = 0,
    seconds: float = 0,
    warmup: float = 0,
    timeout: float = 60,
) -> Load:
    """`clients` concurrent clients spread over the pool's processes. With `each`, every client sends that many
    requests and all are counted; else they send for `warmup + seconds` and only answers in the last `seconds`
    count."""
    processes = min(clients, MAX_CLIENT_PROCESSES)  # the pool has at least that many: all start together
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    start = time.time() + 0.5  # every process has its threads started by then
    until = start + warmup + seconds
    jobs = [(url, body, share, start, until, each, timeout) for share in shares]
    outcomes = [outcome for part in pool.starmap(client_process, jobs) for outcome in part]
    if each:
        window = outcomes
        seconds = max(answered for answered, _, _ in outcomes) - start
    else:
        window = [o for o in outcomes if start + warmup <= o[0] <= until]
    latencies = [latency for _, latency, error in window if error is None]
    return Load(len(latencies), [error for _, _, error in window if error], seconds, latencies)


def client_pool(processes: int) -> Pool:
    """Client processes forked from this light process (it never imports torch)."""
    return multiprocessing.get_context("fork").Pool(processes)


# --- --compare: the model, the servers, the blocks ---------------------------------------------------------------


def first_photo(size: tuple[int, int] = (500, 375)) -> Path:
    """The first validation photo of the typical hymenoptera size, by name."""
    from PIL import Image

    for path in sorted((PHOTOS / "val").rglob("*.jpg")):
        with Image.open(path) as image:
            if image.size == size:
                return path
    raise SystemExit(f"no {size[0]}x{size[1]} JPEG under {PHOTOS / 'val'}")


def run(command: list[str], what: str) -> None:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{what} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")


def build_models(work: Path) -> tuple[Path, Path]:
    """A resnet18 checkpoint at 224 px after one training step from random weights (nothing is downloaded), and its
    int8 ONNX export with the card beside it. Serving speed does not depend on what the weights learned."""
    photos = work / "photos"
    for label in ("ants", "bees"):
        (photos / label).mkdir(parents=True)
        for path in sorted((PHOTOS / "train" / label).glob("*.jpg"))[:8]:
            (photos / label / path.name).symlink_to(path)
    train = [sys.executable, str(ROOT / "train.py"), "data=imagefolder", f"data.root={photos}"]
    train += ["model.backbone=resnet18", "model.pretrained=false", "data.image_size=224", "data.num_workers=0"]
    train += ["data.batch_size=4", "debug=limit", "trainer.max_epochs=1", "trainer.limit_train_batches=1"]
    train += ["trainer.limit_val_batches=1", "test=false", "logger=csv", f"paths.log_dir={work / 'logs'}"]
    run([*train, f"paths.cache_dir={work / 'cache'}"], "training the resnet18 checkpoint")
    (checkpoint,) = (work / "logs").rglob("last.ckpt")
    export = [
        MLPROJ,
        "export",
        f"ckpt_path={checkpoint}",
        "format=onnx",
        "quantize=true",
        f"output_dir={work / 'onnx'}",
    ]
    run([*export, f"input={photos}", "check_images=8", f"paths.log_dir={work / 'logs'}"], "the ONNX export")
    return checkpoint, work / "onnx" / "model.int8.onnx"


@dataclass
class Server:
    name: str
    command: list[str]
    url: str = ""
    process: subprocess.Popen | None = None

    def start(self, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        with log.open("w") as handle:
            command = [*self.command, "--port", str(port)]
            self.process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)

    def wait(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise SystemExit(f"{self.name} server did not answer /health within {timeout} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def side_by_side(
    pool: Pool,
    body: bytes,
    ours: Server,
    theirs: Server,
    clients: int,
    blocks: int,
    seconds: float,
) -> list[tuple[Load, Load]]:
    """Alternating blocks (ours first in odd blocks, theirs first in even ones), each after a 2 s warm-up that fills
    the pipeline (at 64 clients a request takes a second or more)."""
    pairs = []
    for block in range(blocks):
        order = (ours, theirs) if block % 2 == 0 else (theirs, ours)
        loads = {
            server.name: run_clients(pool, server.url, body, clients, seconds=seconds, warmup=2) for server in order
        }
        pair = (loads[ours.name], loads[theirs.name])
        print(
            f"{clients} clients, block {block + 1}/{blocks}: "
            + ", ".join(f"{name} {json.dumps(load.summary())}" for name, load in loads.items()),
            flush=True,
        )
        pairs.append(pair)
    return pairs


def ratio_line(name: str, value: float, goal: str, limit: float) -> str:
    met = value >= limit if goal == ">=" else value <= limit
    return f"ratio {name} {value:.3f} (goal {goal} {limit:g}){'' if met else ' MISSED'}"


def compare(blocks: int, seconds: float, keep: Path | None) -> list[str]:
    work = Path(tempfile.mkdtemp(prefix="mlproj-serve-load-"))
    servers: list[Server] = []
    try:
        image = first_photo()
        body = multipart(image.name, image.read_bytes())
        began = time.monotonic()
        checkpoint, onnx = build_models(work)
        print(f"models: {checkpoint} and {onnx.name} in {time.monotonic() - began:.0f} s; photo {image.name}")
        serve = [MLPROJ, "serve", "--timeout", "60"]
        batched = Server("batched", [*serve, str(checkpoint)])
        unbatched = Server("unbatched", [*serve, str(checkpoint), "--max-batch-size", "1"])
        best = Server("best", [*serve, str(onnx), *BEST])
        today = Server("today", [*serve, str(checkpoint), *TODAY])
        servers = [batched, unbatched, best, today]
        for server in servers:
            server.start(free_port(), work / f"{server.name}.log")
            print(f"{server.name}: {' '.join(server.command[1:])}")
        for server in servers:
            server.wait()
        with client_pool(MAX_CLIENT_PROCESSES) as pool:
            loaded = side_by_side(pool, body, batched, unbatched, 64, blocks, seconds)
            alone = side_by_side(pool, body, batched, unbatched, 1, blocks, seconds)
            fastest = side_by_side(pool, body, best, today, 64, blocks, seconds)
            crowds = {
                server.name: run_clients(pool, server.url, body, 200, seconds=seconds) for server in (batched, best)
            }
            for name, crowd in crowds.items():
                print(f"200 clients, {name}: {json.dumps(crowd.summary())}")
        lines = [
            ratio_line("serve_throughput", median(a.throughput / b.throughput for a, b in loaded), ">=", 2),
            ratio_line(
                "serve_p99",
                median(percentile(a.latencies, 99) / percentile(b.latencies, 99) for a, b in loaded),
                "<=",
                0.5,
            ),
            ratio_line(
                "serve_single_p50",
                median(percentile(a.latencies, 50) / percentile(b.latencies, 50) for a, b in alone),
                "<=",
                1.1,
            ),
            ratio_line("serve_best_throughput", median(a.throughput / b.throughput for a, b in fastest), ">=", 3),
            ratio_line("serve_errors_200", sum(len(crowd.errors) for crowd in crowds.values()), "<=", 0),
        ]
        return lines
    finally:
        for server in servers:
            server.stop()
        if keep:
            shutil.copytree(work, keep, dirs_exist_ok=True, symlinks=True)
        shutil.rmtree(work, ignore_errors=True)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("image", nargs="?", type=Path, help="the image every request uploads")
    parser.add_argument("--requests", type=int, default=200, help="how many, all at once (default 200)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds each request may take (default 60)")
    parser.add_argument("--compare", action="store_true", help="build resnet18, start the servers, compare them")
    parser.add_argument("--blocks", type=int, default=3, help="--compare: blocks per pair of servers (default 3)")
    parser.add_argument("--seconds", type=float, default=6, help="--compare: measured seconds per block (default 6)")
    parser.add_argument("--keep", type=Path, help="--compare: copy the models and server logs here")
    args = parser.parse_args()
    if args.compare:
        if not PHOTOS.is_dir():
            print(f"skipped: {PHOTOS} is absent (the hymenoptera photos, see ../shared/data/README.md)")
            return
        print("\n".join(compare(args.blocks, args.seconds, args.keep)))
        return
    if not args.url or not args.image:
        parser.error("give URL and IMAGE, or --compare")
    if args.requests < 1:
        parser.error(f"--requests {args.requests}: give 1 or more")
    body = multipart(args.image.name, args.image.read_bytes())
    with client_pool(min(args.requests, MAX_CLIENT_PROCESSES)) as pool:
        load = run_clients(pool, args.url.rstrip("/"), body, args.requests, each=1, timeout=args.timeout)
    print(json.dumps(load.summary()))
    sys.exit(1 if load.errors else 0)


if __name__ == "__main__":
    main()
