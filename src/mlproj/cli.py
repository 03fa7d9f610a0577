"""`mlproj COMMAND ...`: the Hydra tasks (KEY=VALUE overrides) and the utilities around them (their own flags),
each imported only when asked for, and all ending the same way on a mistake (`one_line_errors`).

Light on purpose: `--help` and `--cfg job` import it (and mlproj.entry imports it) before torch or Lightning.
"""

import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

from mlproj.errors import find_config_error

COMMANDS = {
    "prepare": "scan the data, check every file decodes, write manifest and rejected-files report",
    "train": "fit a model (same as python train.py)",
    "eval": "test a checkpoint (same as python eval.py)",
    "predict": "top-k predictions for images (same as python predict.py)",
    "export": "a checkpoint as TorchScript or ONNX, checked against PyTorch: mlproj export ckpt_path=PATH format=onnx",
    "serve": "serve a model over HTTP, batching requests: mlproj serve MODEL_PATH [--port P] [--workers N] [--help]",
    "demo": "drag-and-drop predictions in the browser (Gradio, the demo extra): mlproj demo MODEL_PATH",
    "vertex": "train on Vertex AI: mlproj vertex submit [KEY=VALUE ...] --output-dir gs://... [--dry-run]",
    "runs": "past training runs, newest first: mlproj runs [--sort METRIC] [--status S] [--json] [--logs DIR]",
    "drift": "new images vs a run's training data: mlproj drift --reference RUN_DIR --images DIR [--output DIR]",
    "report": "one self-contained HTML page for a run, copied to reports/<run name>.html: mlproj report RUN_DIR",
    "compare": "is B better than A? mlproj compare RUN_A RUN_B [--json] or --a RUN... --b RUN... (seeds)",
}
# Commands whose module is not mlproj.<command>.
MODULES = {"vertex": "mlproj.cloud.vertex", "demo": "mlproj.serve.demo", "report": "mlproj.reports.run_report"}


@contextmanager
def one_line_errors(cleanup: Callable[[], None] | None = None) -> Iterator[None]:
    """How every mlproj command ends on a mistake or Ctrl+C.

    A ConfigError anywhere in an exception's chain (Hydra's instantiate wraps them) becomes `error: <message>` on
    stderr and exit status 2; Ctrl+C (KeyboardInterrupt) becomes `interrupted` and exit status 130. `cleanup` runs
    first in both cases. Any other exception is a bug and keeps its traceback; SystemExit passes through untouched.
    """
    try:
        yield
    except KeyboardInterrupt:
        if cleanup is not None:
            cleanup()
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:
        config_error = find_config_error(error)
        if config_error is None:
            raise
        if cleanup is not None:
            cleanup()
        print(f"error: {config_error}", file=sys.stderr)
        raise SystemExit(2) from None


def usage() -> str:
    lines = [f"  {name:<8} {meaning}" for name, meaning in COMMANDS.items()]
    return "usage: mlproj COMMAND [KEY=VALUE ...] [--help]\n\ncommands:\n" + "\n".join(lines)


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else None
    if command in ("-h", "--help"):
        print(usage())
        return
    if command not in COMMANDS:
        print((f"mlproj: unknown command {command!r}\n" if command else "") + usage(), file=sys.stderr)
        sys.exit(2)
    del sys.argv[1]  # the task sees its own overrides, as `python train.py ...` would
    run(command)


def run(command: str) -> None:
    """Import the command's module and run it, ending as every command ends on a mistake or Ctrl+C: the import is
    inside, since torch's takes seconds and a Ctrl+C then is as likely as during the work."""
    with one_line_errors():
        importlib.import_module(MODULES.get(command, f"mlproj.{command}")).main()


# The console scripts mlproj-train, mlproj-eval and mlproj-predict (pyproject.toml), like `python train.py`.
train_main, eval_main, predict_main = (partial(run, name) for name in ("train", "eval", "predict"))


if __name__ == "__main__":
    main()
