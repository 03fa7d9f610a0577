"""`mlproj report RUN_DIR`: one self-contained HTML page per run, to keep in git and share.

Figures are embedded as PNG data, so the page is one file that opens anywhere. It shows what the run dir holds:
the run and its config (summary.json, .hydra/config.yaml), the test metrics (metrics.json, metrics.csv), learning
curves and epoch times (csv/metrics.csv), the confusion matrix and the misclassified grid (figures/), and the
learning-rate finder's plot (lr_find.png) when there is one. Given two runs, the page is the second's, with a section
comparing it with the first (mlproj.reports.comparison, as `mlproj compare RUN_A RUN_B` prints it).
"""

import argparse
import base64
import csv
import io
import json
import sys
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from mlproj.errors import ConfigError
from mlproj.flags import FlagParser, check_paths
from mlproj.knobs import Knob
from mlproj.storage import write_text

SUMMARY_FIELDS = (
    ("status", "status"),
    ("experiment", "experiment"),
    ("backbone", "backbone"),
    ("started_at", "started"),
    ("ended_at", "ended"),
    ("epochs_completed", "epochs"),
    ("batch_size", "global batch"),
    ("tuned_lr", "tuned learning rate"),
    ("data_root", "data"),
    ("split_sizes", "split sizes"),
    ("test_split", "tested on"),
    ("best_checkpoint", "best checkpoint"),
    ("git_commit", "git commit"),
    ("git_dirty", "uncommitted changes"),
)
TEST_METRICS = (
    ("test/acc", "top-1"),
    ("test/acc_top5", "top-5"),
    ("test/loss", "loss"),
    ("test/precision_macro", "precision (macro)"),
    ("test/recall_macro", "recall (macro)"),
    ("test/f1_macro", "F1 (macro)"),
    ("test/acc_without_tta", "top-1 without test-time augmentation"),
    ("test/ece", "expected calibration error (ECE)"),
    ("test/mce", "maximum calibration error (MCE)"),
    ("test/ece_before_scaling", "ECE before temperature scaling"),
    ("test/mce_before_scaling", "MCE before temperature scaling"),
)
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0; } .subtitle { color: #666; margin-top: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 2px 10px; border-bottom: 1px solid #ddd; }
th { text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; } pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def read_json(path: Path) -> dict[str, Any]:
    """The file's object ({} when absent); a truncated or hand-broken file is a ConfigError naming it."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ConfigError(
            f"{path} is not valid JSON ({error}): the run was cut off while writing it, or it was edited; restore it,"
            " or report another run dir"
        ) from None


def png_data(source: Path | Any) -> str:
    """A `data:` URI of a PNG file, or of a matplotlib figure rendered now."""
    if isinstance(source, Path):
        data = source.read_bytes()
    else:
        buffer = io.BytesIO()
        source.savefig(buffer, format="png", dpi=90)
        data = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def image(source: Path | Any, alt: str) -> str:
    return f'<img src="{png_data(source)}" alt="{escape(alt)}">'


def table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f'<td class="num">{value:.4f}</td>'
        if isinstance(value, int) and not isinstance(value, bool):
            return f'<td class="num">{value}</td>'
        return f"<td>{escape(str(value))}</td>"

    head = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def run_section(run_dir: Path, summary: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The run's facts from summary.json (an eval run dir has metrics.json's checkpoint and split instead), and
    the resolved config."""
    facts = {"run dir": str(run_dir.absolute())}
    facts |= {label: summary[key] for key, label in SUMMARY_FIELDS if summary.get(key) is not None}
    if not summary:
        facts |= {"checkpoint": metrics.get("ckpt_path"), "tested on": metrics.get("split")}
    facts = {
        label: ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)
        for label, value in facts.items()
        if value is not None
    }
    # Hydra's copy, else the CSV logger's (runs made without Hydra's output subdir, or in-process).
    configs = [
        path for path in (run_dir / ".hydra" / "config.yaml", run_dir / "csv" / "hparams.yaml") if path.is_file()
    ]
    resolved = (
        f"<details><summary>resolved config ({configs[0].relative_to(run_dir)})</summary>"
        f"<pre>{escape(configs[0].read_text())}</pre></details>"
        if configs
        else ""
    )
    return table(list(facts.items())) + resolved


def interval_text(metrics: dict[str, Any], key: str) -> str:
    """`[0.8940, 0.9280]` for a metric with a recorded 95% interval (`<key>_ci95`), else empty."""
    interval = metrics.get(f"{key}_ci95")
    return f"[{interval[0]:.4f}, {interval[1]:.4f}]" if isinstance(interval, list) else ""


def metrics_section(run_dir: Path, metrics: dict[str, Any]) -> str:
    overall = [
        (label, float(metrics[key]), interval_text(metrics, key)) for key, label in TEST_METRICS if key in metrics
    ]
    text = f"<p>{metrics.get('images', '?')} images of the {escape(str(metrics.get('split', 'test')))} split</p>"
    per_class = run_dir / "metrics.csv"
    if per_class.is_file():
        with per_class.open(newline="") as handle:
            rows = [
                [row["class"], int(row["support"]), *(float(row[m]) for m in ("precision", "recall", "f1"))]
                for row in csv.DictReader(handle)
            ]
        text += "<h3>per class</h3>" + table(rows, ["class", "images", "precision", "recall", "F1"])
    return table(overall, ["metric", "value", "95% interval"]) + text


def comparison_section(baseline: Path, run_dir: Path) -> tuple[str, str]:
    """(title, HTML): this run (B) against `baseline` (A) on the same test images."""
    from mlproj.reports.comparison import TestedRun, compare_pair, comparison_table

    runs = [TestedRun.read(path, run_title(path)) for path in (baseline, run_dir)]
    header, rows, notes = comparison_table(compare_pair(*runs))
    text = "".join(f"<p>{escape(note)}</p>" for note in notes[:-1]) + f"<p><strong>{escape(notes[-1])}</strong></p>"
    return f"Compared with {runs[0].name}", table(rows, header) + text


def calibration_text(metrics: dict[str, Any]) -> str:
    """ECE before and after temperature scaling (or as it is, for a model without a temperature), and TTA."""
    if "test/ece" not in metrics:
        return ""
    if "test/ece_before_scaling" in metrics:
        text = (
            f"ECE {metrics['test/ece_before_scaling']:.4f} before, {metrics['test/ece']:.4f} after temperature"
            f" scaling (T = {metrics['temperature']:.3f}, fitted on the validation split)"
        )
    else:
        text = f"ECE {metrics['test/ece']:.4f}, no temperature scaling (calibrate=true fits one)"
    tta = f"; test-time augmentation: {metrics['tta']}" if metrics.get("tta") else ""
    return f"<p>{escape(text + tta)}</p>"


def sections(run_dir: Path, baseline: Path | None = None) -> list[tuple[str, str, str]]:
    """(id, title, HTML) for each part the run dir has the files for; a comparison first when given a baseline."""
    from mlproj.reports.curves import curves_figure, epoch_history, epoch_times_figure

    summary = read_json(run_dir / "summary.json")
    metrics = read_json(run_dir / "metrics.json")
    parts = [("run", "Run", run_section(run_dir, summary, metrics))]
    if baseline is not None:
        parts.append(("comparison", *comparison_section(baseline, run_dir)))
    if metrics:
        parts.append(("metrics", "Test metrics", metrics_section(run_dir, metrics)))
    history_file = run_dir / "csv" / "metrics.csv"
    history = epoch_history(history_file) if history_file.is_file() else {}
    if any(column.startswith(("train/", "val/")) for column in history):
        parts.append(("curves", "Learning curves", image(curves_figure(history), "learning curves")))
    if "time/epoch_s" in history:
        parts.append(("epoch-times", "Epoch times", image(epoch_times_figure(history["time/epoch_s"]), "epoch times")))
    figures = (
        ("confusion", "Confusion matrix", run_dir / "figures" / "confusion_matrix.png"),
        ("misclassified", "Most confidently misclassified", run_dir / "figures" / "misclassified.png"),
        ("lr-finder", "Learning-rate finder", run_dir / "lr_find.png"),
    )
    parts += [(key, title, image(path, title)) for key, title, path in figures if path.is_file()]
    reliability = run_dir / "figures" / "reliability.png"
    if reliability.is_file():
        parts.append(("calibration", "Calibration", calibration_text(metrics) + image(reliability, "reliability")))
    return parts


def run_title(run_dir: Path) -> str:
    """summary.json's name, else the name the run dir gives (eval runs have no summary)."""
    from mlproj.run_record import run_name

    if not ((run_dir / "summary.json").is_file() or (run_dir / "metrics.json").is_file()):
        raise ConfigError(
            f"RUN_DIR={run_dir} is not a run dir (no summary.json or metrics.json): give a training run dir such as"
            " logs/train/runs/<time> (`mlproj runs --json` lists them) or an eval run dir"
        )
    return read_json(run_dir / "summary.json").get("name") or run_name(run_dir)


def render(run_dir: Path, baseline: Path | None = None) -> tuple[str, str]:
    """(run name, page); with `baseline`, the page compares the run with it."""
    name = run_title(run_dir)
    parts = sections(run_dir, baseline)
    contents = " · ".join(f'<a href="#{key}">{escape(title)}</a>' for key, title, _ in parts)
    body = "".join(f'<section id="{key}"><h2>{escape(title)}</h2>{html}</section>' for key, title, html in parts)
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(name)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{escape(name)}</h1>"
        f'<p class="subtitle">mlproj run report · {contents}</p>{body}</body></html>\n'
    )
    return name, page


def parser() -> FlagParser:
    parser = FlagParser(
        prog="mlproj report",
        description="Write RUN_DIR/report.html, one self-contained page (figures embedded), and a copy as "
        "COPY_TO/<run name>.html to commit and share. Given two run dirs (RUN_A RUN_B), the page is RUN_B's, with a "
        "section comparing it with RUN_A on the same test images (as `mlproj compare RUN_A RUN_B`).",
    )
    parser.add_argument(
        "run_dirs",
        type=Knob(
            Path, "a training (or eval) run dir: logs/train/runs/<time> (`mlproj runs` lists them)", path="folder"
        ),
        nargs="+",
        metavar="RUN_DIR",
        note="or two: RUN_A RUN_B",
    )
    parser.add_argument(
        "--copy-to",
        type=Knob(Path, "the folder the copy of the page goes to", path="output"),
        default="reports",  # a string default goes through the type too
        metavar="DIR",
    )
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    return parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """`mlproj report`; a ConfigError ends as one line through mlproj.cli.one_line_errors."""
    args = check_paths(parser(), parse_args(sys.argv[1:] if argv is None else argv))
    if len(args.run_dirs) > 2:
        raise ConfigError(f"{len(args.run_dirs)} run dirs: give one (RUN_DIR) or two to compare (RUN_A RUN_B)")
    *baseline, run_dir = args.run_dirs
    name, page = render(run_dir, baseline[0] if baseline else None)
    written, copy = run_dir / "report.html", args.copy_to / f"{name}.html"
    for path in (written, copy):
        write_text(path, page)
    print(f"wrote {written} and {copy}")


if __name__ == "__main__":
    from mlproj.cli import one_line_errors

    with one_line_errors():
        main()
