"""`mlproj COMMAND [overrides]`: one command for the Hydra tasks, each imported only when asked for."""

import importlib
import sys

COMMANDS = {
    "prepare": "scan the data, check every file decodes, write manifest and rejected-files report",
    "train": "fit a model (same as python train.py)",
    "eval": "test a checkpoint (same as python eval.py)",
    "predict": "top-k predictions for images (same as python predict.py)",
}


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
    importlib.import_module(f"mlproj.{command}").main()


if __name__ == "__main__":
    main()
