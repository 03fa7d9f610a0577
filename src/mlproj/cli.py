"""`mlproj COMMAND ...`: the Hydra tasks (KEY=VALUE overrides) and the utilities around them (their own flags),
each imported only when asked for."""

import importlib
import sys

COMMANDS = {
    "prepare": "scan the data, check every file decodes, write manifest and rejected-files report",
    "train": "fit a model (same as python train.py)",
    "eval": "test a checkpoint (same as python eval.py)",
    "predict": "top-k predictions for images (same as python predict.py)",
    "export": "a checkpoint as TorchScript or ONNX, checked against PyTorch: mlproj export ckpt_path=PATH format=onnx",
    "serve": "serve a model over HTTP: mlproj serve MODEL_PATH [--host H] [--port P] [--max-upload-mb N]",
    "demo": "drag-and-drop predictions in the browser (Gradio, the demo extra): mlproj demo MODEL_PATH",
    "vertex": "train on Vertex AI: mlproj vertex submit [KEY=VALUE ...] --output-dir gs://... [--dry-run]",
    "runs": "past training runs, newest first: mlproj runs [--sort METRIC] [--status S] [--json] [--logs DIR]",
    "drift": "new images vs a run's training data: mlproj drift --reference RUN_DIR --images DIR [--output DIR]",
    "report": "one self-contained HTML page for a run, copied to reports/<run name>.html: mlproj report RUN_DIR",
}
# Commands whose module is not mlproj.<command>.
MODULES = {"vertex": "mlproj.cloud.vertex", "demo": "mlproj.serve.demo", "report": "mlproj.reports.run_report"}


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
    importlib.import_module(MODULES.get(command, f"mlproj.{command}")).main()


if __name__ == "__main__":
    main()
