"""`mlproj runs`: the training runs under logs/ as a table (or JSON), newest first, from their summary.json alone.

It must answer in about a second with hundreds of runs, so it reads nothing but summary.json files and imports
nothing beyond the standard library and light mlproj modules (run_record, console, flags, knobs).
"""

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from mlproj.console import aligned_columns
from mlproj.flags import FlagParser, check_paths
from mlproj.knobs import Knob
from mlproj.run_record import REPORTED_METRICS, SUMMARY, read_summary, run_process_alive

# `stale`: summary.json says running, but its process is gone from this host (killed, crashed, machine rebooted).
STATUSES = ("running", "finished", "failed", "interrupted", "stale")
ALIASES = {"val": "val/acc", "best": "val/acc_best", "test": "test/acc", "top5": "test/acc_top5", "loss": "test/loss"}
# Where run dirs are, relative to --logs: single runs, and each job of a Hydra multirun (-m, Optuna searches).
RUN_DIRS = ("train/runs/*", "train/multiruns/*/*")
# (header, the cell a run shows in it, right-aligned)
Column = tuple[str, Callable[[dict[str, Any]], str], bool]


def resolved_status(summary: dict[str, Any]) -> str:
    """The recorded status, except that a `running` run whose process has gone from this host is `stale`.

    A run recorded on another host stays `running`: no process there can be checked from here.
    """
    status = str(summary.get("status"))
    return "stale" if status == "running" and run_process_alive(summary) is False else status


def find_runs(logs: Path) -> list[dict[str, Any]]:
    """Every training run's summary, its status resolved and `run_dir` where it is now, newest first."""
    runs = []
    for pattern in RUN_DIRS:
        for path in logs.glob(f"{pattern}/{SUMMARY}"):
            summary = read_summary(path.parent)
            if not isinstance(summary, dict):
                print(f"mlproj runs: skipped {path}: not a readable summary", file=sys.stderr)
                continue
            runs.append({**summary, "status": resolved_status(summary), "run_dir": str(path.parent.absolute())})
    return sorted(runs, key=lambda run: (str(run.get("started_at") or ""), run["run_dir"]), reverse=True)


def metric(run: dict[str, Any], name: str) -> float | None:
    value = (run.get("metrics") or {}).get(name)
    return value if isinstance(value, int | float) else None


def by_metric(runs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Best first (lowest for a loss, highest otherwise); runs without the metric last; ties keep newest first."""
    scored = [run for run in runs if metric(run, name) is not None]
    unscored = [run for run in runs if metric(run, name) is None]
    return sorted(scored, key=lambda run: metric(run, name), reverse=not name.endswith("loss")) + unscored


def local_time(iso: Any) -> str:
    try:
        return datetime.fromisoformat(str(iso)).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return "-"


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def with_interval(run: dict[str, Any], name: str) -> str:
    """`0.9120 ± 0.0170`: the metric and half the width of its 95% interval (`<name>_ci95`), when recorded."""
    value, interval = metric(run, name), (run.get("metrics") or {}).get(f"{name}_ci95")
    if value is None or not (isinstance(interval, list) and len(interval) == 2):
        return number(value)
    return f"{value:.4f} ± {(interval[1] - interval[0]) / 2:.4f}"


def data_source(run: dict[str, Any]) -> str:
    """Where the run's images came from: the shard set it streamed, or its data root (relative when below here)."""
    if run.get("shards"):
        return str(run["shards"])
    root = run.get("data_root")
    if not root:
        return "-"
    path = Path(str(root))
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


COLUMNS: tuple[Column, ...] = (
    ("name", lambda run: run.get("name") or "-", False),
    ("experiment", lambda run: run.get("experiment") or "-", False),
    ("backbone", lambda run: run.get("backbone") or "-", False),
    ("data", data_source, False),
    ("status", lambda run: run["status"], False),
    ("started", lambda run: local_time(run.get("started_at")), False),
    ("epochs", lambda run: str(run.get("epochs_completed", "-")), True),
    ("batch", lambda run: str(run.get("batch_size", "-")), True),
    ("best val top-1", lambda run: number(metric(run, "val/acc_best")), True),
    ("test top-1", lambda run: with_interval(run, "test/acc"), True),
    ("test loss", lambda run: number(metric(run, "test/loss")), True),
)


def table(runs: list[dict[str, Any]]) -> str:
    rows = [[header for header, _, _ in COLUMNS], *([cell(run) for _, cell, _ in COLUMNS] for run in runs)]
    return aligned_columns(rows, [right for _, _, right in COLUMNS])


def parser() -> FlagParser:
    parser = FlagParser(
        prog="mlproj runs",
        description="Training runs under --logs (logs/train/runs and logs/train/multiruns), newest first, read "
        "from their summary.json files. A `running` run whose process is gone from this host shows as `stale`; "
        "one recorded on another host shows as `running`, since it cannot be checked from here.",
    )
    parser.add_argument(
        "--logs",
        type=Knob(Path, "the logs folder (paths.log_dir)"),
        default=Path("logs"),
        metavar="DIR",
    )
    parser.add_argument(
        "--sort",
        type=Knob(str, "the metric to list runs by, best first (or its alias)", choices=(*REPORTED_METRICS, *ALIASES)),
        metavar="METRIC",
        note=f"{', '.join(REPORTED_METRICS)} or an alias: "
        + ", ".join(f"{alias}={full}" for alias, full in ALIASES.items()),
    )
    parser.add_argument(
        "--status",
        type=Knob(str, "the statuses of the runs listed", choices=STATUSES, many=True),
        note=f"comma-separated: {', '.join(STATUSES)}",
    )
    parser.add_argument(
        "--json", action="store_true", help="a JSON list: each run's summary.json, resolved status and run_dir"
    )
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    return parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = check_paths(parser(), parse_args(sys.argv[1:] if argv is None else argv))
    runs = find_runs(args.logs)
    if args.status:
        runs = [run for run in runs if run["status"] in args.status]
    if args.sort:
        runs = by_metric(runs, ALIASES.get(args.sort, args.sort))
    if args.json:
        print(json.dumps(runs, indent=2, default=str))
    elif runs:
        print(table(runs))
    else:
        print(f"no training runs under {args.logs / 'train'}{' with that status' if args.status else ''}")


if __name__ == "__main__":
    main()
