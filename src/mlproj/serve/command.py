"""`mlproj serve [MODEL_PATH] [--host H] [--port P] [--max-upload-mb N]`: load a model, then serve it with uvicorn.

Defaults come from the environment the way containers are configured: MODEL_PATH for the model and PORT for the
port (Cloud Run sets PORT=8080).
"""

import argparse
import os
import sys

MODEL_HELP = "a .ckpt file (or gs:// URL), or a .pt / .onnx file written by `mlproj export` (default: $MODEL_PATH)"


def parse_with_model(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """`parser`'s options plus MODEL_PATH, as `mlproj serve` and `mlproj demo` both take it."""
    parser.add_argument(
        "model_path", nargs="?", default=os.environ.get("MODEL_PATH"), metavar="MODEL_PATH", help=MODEL_HELP
    )
    args = parser.parse_args(argv)
    if not args.model_path:
        parser.error("give MODEL_PATH or set the MODEL_PATH environment variable")
    return args


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mlproj serve", description="Serve top-k predictions of a model over HTTP.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")), help="default: $PORT or 8000")
    parser.add_argument(
        "--max-upload-mb", type=float, default=10.0, help="larger requests are refused with 413 (default: 10)"
    )
    return parse_with_model(parser, argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import uvicorn

    from mlproj.serve.app import create_app
    from mlproj.serve.predictor import Predictor

    uvicorn.run(create_app(Predictor.load(args.model_path), args.max_upload_mb), host=args.host, port=args.port)
