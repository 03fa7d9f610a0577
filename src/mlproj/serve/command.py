"""`mlproj serve [MODEL_PATH] [options]`: load a model, warm it up, then serve it with uvicorn.

Defaults come from the environment the way containers are configured: MODEL_PATH for the model and PORT for the
port (Cloud Run sets PORT=8080).
"""

import argparse
import os
import sys

from mlproj.flags import FlagParser, check_paths
from mlproj.knobs import KNOBS, Knob
from mlproj.serve.batching import Batching  # light: torch is imported by its workers only

MODEL_PATH = Knob(
    str, "a .ckpt file (or gs:// URL), or a .pt / .onnx file written by `mlproj export`", path="file", urls=True
)
PORT = Knob(int, "the port to listen on", low=1, high=65535)


def cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0))


def with_model_path(parser: FlagParser) -> FlagParser:
    """`parser` taking MODEL_PATH too, as `mlproj serve` and `mlproj demo` both do (default: $MODEL_PATH, checked
    like a given one)."""
    parser.add_argument(
        "model_path",
        nargs="?",
        type=MODEL_PATH,
        default=os.environ.get("MODEL_PATH"),
        metavar="MODEL_PATH",
        note="$MODEL_PATH when set",
    )
    return parser


def parse_with_model(parser: FlagParser, argv: list[str]) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if not args.model_path:
        parser.error("give MODEL_PATH or set the MODEL_PATH environment variable")
    return args


def parser() -> FlagParser:
    parser = FlagParser(prog="mlproj serve", description="Serve top-k predictions of a model over HTTP.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 in a container)")
    # A string default goes through the type too: a bad $PORT is refused before the model loads.
    parser.add_argument("--port", type=PORT, default=os.environ.get("PORT", "8000"), note="$PORT when set")
    parser.add_argument(
        "--max-upload-mb",
        type=Knob(float, "the largest request in MB; larger ones are refused with 413", low=0, exclusive=True),
        default=10.0,
    )
    parser.add_argument(
        "--max-batch-size",
        type=Knob(int, "images of concurrent requests in one forward pass at most (1: no batching)", low=1),
        default=Batching.max_batch_size,
    )
    parser.add_argument(
        "--max-batch-delay-ms",
        type=Knob(float, "milliseconds a forward pass may wait for requests still being decoded", low=0),
        default=Batching.max_delay_s * 1000,
        note="a lone request never waits",
    )
    parser.add_argument(
        "--workers",
        type=Knob(int, "forward passes at once, threads of this process", low=1),
        note="default: one per core for ONNX, else 1",
    )
    parser.add_argument(
        "--threads",
        type=Knob(int, "PyTorch / ONNX Runtime intra-op threads per worker", low=1),
        note="default: the cores divided among the workers",
    )
    parser.add_argument(
        "--timeout",
        type=Knob(float, "seconds a request may wait for its answer before a 503", low=0, exclusive=True),
        default=30.0,
    )
    parser.add_argument(
        "--grace-period",
        type=Knob(float, "seconds the requests in flight may take after SIGTERM", low=0),
        default=8.0,
        note="Cloud Run kills 10 s after SIGTERM",
    )
    parser.add_argument(
        "--tta",
        type=KNOBS["tta"],
        metavar="{" + ",".join(KNOBS["tta"].choices) + "}",
        note="each image and its flipped (and shifted) copies in one forward pass; default: none",
    )
    return with_model_path(parser)


def parse_args(argv: list[str]) -> argparse.Namespace:
    return parse_with_model(parser(), argv)


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
    args = check_paths(parser(), parse_args(sys.argv[1:] if argv is None else argv))
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
