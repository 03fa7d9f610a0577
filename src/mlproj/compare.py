"""`mlproj compare RUN_A RUN_B` and `mlproj compare --a RUN... --b RUN...`: is B better than A, or is the difference
noise? Runs are run dirs (their predictions.csv) or checkpoints (tested here on their own data's test split, unless
their run dir already holds that test); the numbers are mlproj.reports.comparison's.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from mlproj.console import aligned_columns
from mlproj.flags import FlagParser, check_paths
from mlproj.knobs import SIGNIFICANCE, Knob
from mlproj.reports.comparison import ALPHA, PREDICTIONS, TestedRun, compare_groups, compare_pair, comparison_table


def run_label(run_dir: Path) -> str:
    """The name `mlproj runs` shows: summary.json's, else the one the run dir gives (eval runs have no summary)."""
    from mlproj.run_record import read_summary, run_name

    return (read_summary(run_dir) or {}).get("name") or run_name(run_dir)


def tested_in(run_dir: Path, checkpoint: Path) -> bool:
    """Whether `run_dir`'s predictions.csv is `checkpoint`'s test (train.py tests its best checkpoint)."""
    metrics = run_dir / "metrics.json"
    if not (metrics.is_file() and (run_dir / PREDICTIONS).is_file()):
        return False
    tested = json.loads(metrics.read_text()).get("ckpt_path")
    return bool(tested) and Path(tested).resolve() == checkpoint.resolve()


def evaluate_checkpoint(path: str, name: str) -> TestedRun:
    """The checkpoint on its own data's test split, through the inference layer (its temperature, no TTA)."""
    from mlproj.build import build_datamodule
    from mlproj.errors import ConfigError
    from mlproj.evaluation import test_split_result
    from mlproj.inference.model import load_model
    from mlproj.reports.predictions import prediction_rows

    trained = load_model(path, key="RUN", exported=False)
    if not trained.trained_on:
        raise ConfigError(f"{path} carries no data config: test it with eval.py experiment=NAME and compare run dirs")
    datamodule = build_datamodule(trained.trained_on, trained.preprocessing)
    trained.check_classes(datamodule.classes)
    result = test_split_result(trained, datamodule)
    samples = datamodule.splits[datamodule.test_split]
    return TestedRun.of(name, path, *prediction_rows(result, datamodule.classes, samples, datamodule.root))


def tested_run(source: str) -> TestedRun:
    path = Path(source)
    if path.is_dir():
        return TestedRun.read(path, run_label(path))
    run_dir = path.parent.parent  # <run dir>/checkpoints/<name>.ckpt
    if tested_in(run_dir, path):
        return replace(TestedRun.read(run_dir, run_label(run_dir)), source=source)
    return evaluate_checkpoint(
        source, f"{run_label(run_dir)}/{path.name}" if path.parent.name == "checkpoints" else source
    )


def aligned(header: list[str], rows: list[list[str]]) -> str:
    """Plain columns, the run names left-aligned and the numbers right-aligned (as `mlproj runs` prints)."""
    return aligned_columns([header, *rows], [i >= 2 for i in range(len(header))])


RUN = Knob(str, "a run dir with predictions.csv (train.py, eval.py) or a checkpoint", path="file_or_folder", urls=True)


def parser() -> FlagParser:
    parser = FlagParser(
        prog="mlproj compare",
        description="Compare models tested on the same images: top-1 with 95% (Wilson) intervals, the paired "
        "difference B - A with Newcombe's interval and McNemar's exact test; with groups (seeds), mean ± std and "
        "Welch's t-test. A run is a run dir with predictions.csv (train.py, eval.py) or a checkpoint.",
    )
    parser.add_argument("runs", type=RUN, nargs="*", metavar="RUN", help="RUN_A RUN_B: run dirs or checkpoints")
    parser.add_argument("--a", type=RUN, nargs="+", default=[], metavar="RUN", note="group A: two runs or more")
    parser.add_argument("--b", type=RUN, nargs="+", default=[], metavar="RUN", note="group B: two runs or more")
    parser.add_argument(
        "--alpha",
        type=SIGNIFICANCE,
        default=ALPHA,
    )
    parser.add_argument("--json", action="store_true", help="the numbers as JSON")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    flags = parser()
    args = flags.parse_args(argv)
    if bool(args.runs) == bool(args.a or args.b) or (args.runs and len(args.runs) != 2):
        flags.error("give two runs (RUN_A RUN_B) or two groups (--a RUN... --b RUN...)")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = check_paths(parser(), parse_args(sys.argv[1:] if argv is None else argv))
    if args.runs:
        result = compare_pair(*(tested_run(source) for source in args.runs), alpha=args.alpha)
    else:
        groups = ([tested_run(source) for source in group] for group in (args.a, args.b))
        result = compare_groups(*groups, alpha=args.alpha)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    header, rows, notes = comparison_table(result)
    print(aligned(header, rows))
    print("\n".join(notes))


if __name__ == "__main__":
    from mlproj.cli import one_line_errors

    with one_line_errors():
        main()
