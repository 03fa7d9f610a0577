"""`mlproj serve [MODEL_PATH] [options]`: load a model, warm it up, then serve it with uvicorn.

Defaults come from the environment the way containers are configured: MODEL_PATH for the model and PORT for the
port (Cloud Run sets PORT=8080).
"""

import argparse
import os
import sys
from collections.abc import Callable

from mlproj.knobs import KNOBS
from mlproj.serve.batching import Batching  # light: torch is imported by its workers only

MODEL_HELP = "a .ckpt file (or gs:// URL), or a .pt / .onnx file written by `mlproj export` (default: $MODEL_PATH)"


def cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0))


def parse_with_model(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """`parser`'s options plus MODEL_PATH, as `mlproj serve` and `mlproj demo` both take it."""
    parser.add_argument(
        "model_path", nargs="?", default=os.environ.get("MODEL_PATH"), metavar="MODEL_PATH", help=MODEL_HELP
    )
    args = parser.parse_args(argv)
    if not args.model_path:
        parser.error("give MODEL_PATH or set the MODEL_PATH environment variable")
    return args


def above_zero(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: `kind` of the text, refused unless above 0."""

    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text}: give a number above 0")
        return value

    parse.__name__ = getattr(kind, "__name__", "number")  # argparse names it in "invalid int value: 'x'"
    return parse


def port(text: str) -> int:
    """An argparse type (checked before the model loads); a default from $PORT goes through it too."""
    value = int(text)
    if not 0 < value < 2**16:
        raise argparse.ArgumentTypeError(f"{text}: give a port from 1 to 65535")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mlproj serve", description="Serve top-k predictions of a model over HTTP.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 in a container)")
    parser.add_argument("--port", type=port, default=os.environ.get("PORT", "8000"), help="default: $PORT or 8000")
    parser.add_argument(
        "--max-upload-mb",
        type=above_zero(float),
        default=10.0,
        help="larger requests are refused with 413 (default: 10)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=above_zero(int),
        default=Batching.max_batch_size,
        help="images of concurrent requests run as one forward pass of at most this many (default: %(default)s; 1:"
        " none)",
    )
    parser.add_argument(
        "--max-batch-delay-ms",
        type=float,
        default=Batching.max_delay_s * 1000,
        help="how long a forward pass may wait for requests still being decoded (default: %(default)g; a lone request"
        " never waits)",
    )
    parser.add_argument(
        "--workers",
        type=above_zero(int),
        help="forward passes at once, threads of this process (default: one per core for ONNX, else 1)",
    )
    parser.add_argument(
        "--threads",
        type=above_zero(int),
        help="PyTorch / ONNX Runtime intra-op threads per worker (default: the cores divided among the workers)",
    )
    parser.add_argument(
        "--timeout",
        type=above_zero(float),
        default=30.0,
        help="seconds a request may wait for its answer before a 503 (default: 30)",
    )
    parser.add_argument(
        "--grace-period",
        type=float,
        default=8.0,
        help="after SIGTERM, seconds the requests in flight may take before the server exits (default: 8; Cloud Run"
        " kills 10 s after SIGTERM)",
    )
    parser.add_argument(
        "--tta",
        choices=KNOBS["tta"].choices,
        help="test-time augmentation: each image and its flipped (and shifted) copies in one forward pass"
        " (default: none)",
    )
    args = parse_with_model(parser, argv)
    if args.max_batch_delay_ms < 0 or args.grace_period < 0:
        parser.error("--max-batch-delay-ms and --grace-period take 0 or more")
    return args


def workers_and_threads(model_path: str, workers: int | None, threads: int | None) -> tuple[int, int]:
    """What the benchmark measured best by default (docs/serving.md): ONNX Runtime answers fastest with one
    single-threaded worker per core, PyTorch with one worker whose batched passes use every core. Either way the
    workers share the cores out between their intra-op threads."""
    from mlproj.inference.runtimes import format_of

    workers = workers or (cores() if format_of(model_path) == "onnx" else 1)
    return workers, threads or max(1, cores() // workers)


def limit_threads(threads: int) -> None:
    """Intra-op threads per worker, set before the model loads, so workers x threads never oversubscribe the cores:
    PyTorch's for checkpoints and TorchScript, ONNX Runtime's (read when a session is made without a thread count)."""
    import torch

    torch.set_num_threads(threads)
    os.environ["ORT_INTRA_OP_NUM_THREADS"] = str(threads)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    workers, threads = workers_and_threads(args.model_path, args.workers, args.threads)
    limit_threads(threads)
    from mlproj.serve.app import create_app
    from mlproj.serve.predictor import Predictor
    from mlproj.serve.server import serve

    batching = Batching(args.max_batch_size, args.max_batch_delay_ms / 1000, workers)
    predictor = Predictor.load(args.model_path, args.tta)
    print(
        f"mlproj serve: {args.model_path} ({predictor.card.format}, tta {args.tta}), {workers} workers x {threads}"
        " threads, forward"
        f" passes of up to {args.max_batch_size} images (waiting up to {args.max_batch_delay_ms:g} ms)",
        file=sys.stderr,
        flush=True,
    )
    serve(create_app(predictor, args.max_upload_mb, batching, args.timeout), args.host, args.port, args.grace_period)
