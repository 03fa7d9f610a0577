"""Check a W&B sweep file offline with W&B's own engine, and print parameter sets it proposes.

`wandb sweep` validates only on the server; this catches a bad file before that. Run it with the
interpreter of the small venv `make sweep-validator` builds (the `sweeps` package pins numpy<2, so it
stays out of the project's environment; nothing here imports mlproj):

    .venv/sweeps-validator/bin/python src/mlproj/sweep_check.py configs/sweep/mushroom_resnet50.yaml --propose 3
"""

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml

# Hydra reads `key=value`; `${args}` would hand it `--key=value`, which it rejects.
HYDRA_ARGS = "${args_no_hyphens}"


def violations(config: Any) -> list[str]:
    """W&B's schema violations, plus what Hydra needs from `command`."""
    from sweeps import schema_violations_from_proposed_config

    if not isinstance(config, dict):
        return ["a sweep file must be a mapping of sweep keys"]
    problems = schema_violations_from_proposed_config(config)
    command = config.get("command")
    if command is not None and HYDRA_ARGS not in command:
        problems.append(f"command must pass the parameters as {HYDRA_ARGS} (Hydra's key=value overrides)")
    return problems


def propose(config: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The next `count` parameter sets of a fresh sweep, as the W&B controller would hand them to agents."""
    from sweeps import next_runs

    runs = next_runs(config, [], validate=True, n=count)
    return [{name: plain(entry["value"]) for name, entry in run.config.items()} for run in runs if run is not None]


def plain(value: Any) -> Any:
    """NumPy scalars as the Python numbers the agent gets from the server's JSON."""
    return value.item() if hasattr(value, "item") else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="sweep YAML files")
    parser.add_argument("--propose", type=int, default=0, metavar="N", help="print N proposed parameter sets as JSON")
    args = parser.parse_args(argv)
    # sweeps' own pydantic model still uses a v1 config key; nothing the user can act on.
    warnings.filterwarnings("ignore", message="Valid config keys have changed in V2")
    status = 0
    for path in args.files:
        config = yaml.safe_load(path.read_text())
        problems = violations(config)
        for problem in problems:
            print(f"error: {path}: {problem}", file=sys.stderr)
        if problems:
            status = 1
        elif args.propose:
            print(json.dumps(propose(config, args.propose)))
        else:
            print(f"ok {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
