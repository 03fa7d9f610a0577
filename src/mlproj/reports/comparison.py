"""Runs compared image by image on the same test images: each one's top-1 accuracy with its 95% interval, the paired
difference with Newcombe's interval, McNemar's exact test, and a sentence saying what the numbers mean; groups of
runs (seeds) by mean and standard deviation with Welch's t-test. `mlproj compare` prints it, `mlproj report RUN_A
RUN_B` shows it.

What is compared is predictions.csv (mlproj.reports.predictions): two runs that answer the same for every image are
identical, probabilities included.
"""

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlproj.errors import ConfigError
from mlproj.stats import PairedResults, welch_test, wilson_interval

ALPHA = 0.05
PREDICTIONS = "predictions.csv"


@dataclass(frozen=True)
class TestedRun:
    """One model's answers on a test split: each image's predictions.csv row (actual, prediction, top-k)."""

    name: str
    source: str  # the run dir or checkpoint, as given
    rows: dict[str, tuple[str, ...]]  # image -> (actual, prediction, probability, label1, prob1, ...)

    @classmethod
    def of(cls, name: str, source: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> "TestedRun":
        if list(header[:3]) != ["path", "actual", "prediction"]:
            raise ConfigError(
                f"{source}: its predictions hold no actual classes (a predict.py output?): compare runs tested by"
                " train.py or eval.py, or their checkpoints"
            )
        return cls(name, source, {row[0]: tuple(row[1:]) for row in rows})

    @classmethod
    def read(cls, run_dir: Path, name: str) -> "TestedRun":
        """From a run dir's predictions.csv; one line when it has none."""
        path = run_dir / PREDICTIONS
        if not path.is_file():
            raise ConfigError(
                f"{run_dir} has no {PREDICTIONS}: give a run dir that train.py (test=true) or eval.py wrote on one"
                " device, or a checkpoint"
            )
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            return cls.of(name, str(run_dir), next(reader, []), list(reader))

    def correct(self, images: Sequence[str]) -> np.ndarray:
        return np.array([self.rows[image][0] == self.rows[image][1] for image in images], dtype=bool)

    def summary(self, images: Sequence[str]) -> dict[str, Any]:
        right = int(self.correct(images).sum())
        return {
            "name": self.name,
            "source": self.source,
            "acc": right / len(images),
            "acc_ci95": list(wilson_interval(right, len(images))),
        }


def same_images(runs: Sequence[TestedRun]) -> list[str]:
    """The images every run was tested on, in one order; one line when the lists or their labels differ."""
    first = runs[0]
    for run in runs[1:]:
        if run.rows.keys() != first.rows.keys():
            common = len(run.rows.keys() & first.rows.keys())
            raise ConfigError(
                f"{first.source} and {run.source} were tested on different images ({len(first.rows)} and"
                f" {len(run.rows)}, {common} in common): evaluate both on the same test split"
                " (python eval.py ckpt_path=CKPT data.root=DIR)"
            )
        relabelled = next((image for image in first.rows if run.rows[image][0] != first.rows[image][0]), None)
        if relabelled is not None:
            raise ConfigError(
                f"{relabelled} is {first.rows[relabelled][0]} in {first.source} but {run.rows[relabelled][0]} in"
                f" {run.source}: the runs label their test images differently"
            )
    return sorted(first.rows)


def p_text(p_value: float) -> str:
    return f"{p_value:.3f}" if p_value >= 0.001 else f"{p_value:.1e}"


def verdict(difference: float, p_value: float, alpha: float, test: str = "") -> str:
    """ "B is better: +2.1 points, p = 0.003" or "no significant difference: B - A = +0.4 points, p = 0.620"."""
    points = 100 * difference
    if p_value < alpha:
        return f"{'B' if difference > 0 else 'A'} is better: +{abs(points):.1f} points, {test}p = {p_text(p_value)}"
    return f"no significant difference: B - A = {points:+.1f} points, {test}p = {p_text(p_value)}"


def compare_pair(a: TestedRun, b: TestedRun, alpha: float = ALPHA) -> dict[str, Any]:
    """A against B on the images both were tested on (refused when they differ), as JSON-ready numbers."""
    images = same_images([a, b])
    paired = PairedResults.of(a.correct(images), b.correct(images))
    identical = all(a.rows[image] == b.rows[image] for image in images)
    sentence = (
        f"identical: the same predictions and probabilities on all {len(images)} images"
        if identical
        else verdict(paired.difference, paired.p_value, alpha)
    )
    return {
        "images": len(images),
        "a": a.summary(images),
        "b": b.summary(images),
        "difference": paired.difference,
        "difference_ci95": list(paired.difference_interval()),
        "mcnemar": {"only_a": paired.only_a, "only_b": paired.only_b, "p_value": paired.p_value},
        "identical": identical,
        "alpha": alpha,
        "verdict": sentence,
    }


def compare_groups(a: Sequence[TestedRun], b: Sequence[TestedRun], alpha: float = ALPHA) -> dict[str, Any]:
    """Runs of A against runs of B (seeds, say) on the same images: mean and standard deviation of top-1 in each
    group, Welch's t-test of the difference."""
    if len(a) < 2 or len(b) < 2:
        raise ConfigError(
            f"--a has {len(a)} run(s) and --b {len(b)}: a group needs two or more (a spread to test); for one run"
            " each, give RUN_A RUN_B"
        )
    images = same_images([*a, *b])
    groups = {"a": [run.summary(images) for run in a], "b": [run.summary(images) for run in b]}
    welch = welch_test([run["acc"] for run in groups["a"]], [run["acc"] for run in groups["b"]])
    return {
        "images": len(images),
        "a": {"runs": groups["a"], "mean": welch.mean_a, "std": welch.std_a},
        "b": {"runs": groups["b"], "mean": welch.mean_b, "std": welch.std_b},
        "difference": welch.difference,
        "difference_ci95": list(welch.difference_interval),
        "welch_p_value": welch.p_value,
        "alpha": alpha,
        "verdict": verdict(welch.difference, welch.p_value, alpha, test="Welch "),
    }


def images(count: int) -> str:
    return f"{count} image{'' if count == 1 else 's'}"


def interval(bounds: Sequence[float], signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"[{bounds[0]:{sign}.4f}, {bounds[1]:{sign}.4f}]"


def comparison_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, notes) of a compare_pair or compare_groups result: the table both the terminal and the HTML
    report show, and the lines under it."""
    header = ["", "run", "top-1", "95% interval"]
    if "runs" in result["a"]:
        rows = [
            [group.upper(), run["name"], f"{run['acc']:.4f}", interval(run["acc_ci95"])]
            for group in ("a", "b")
            for run in result[group]["runs"]
        ]
        rows += [
            [
                f"{g.upper()} mean",
                f"{len(result[g]['runs'])} runs",
                f"{result[g]['mean']:.4f}",
                f"± {result[g]['std']:.4f} (std)",
            ]
            for g in ("a", "b")
        ]
        test = f"Welch's t-test of the means: p = {p_text(result['welch_p_value'])}"
    else:
        rows = [
            [group.upper(), result[group]["name"], f"{result[group]['acc']:.4f}", interval(result[group]["acc_ci95"])]
            for group in ("a", "b")
        ]
        mcnemar = result["mcnemar"]
        test = (
            f"McNemar's exact test: {images(mcnemar['only_a'])} only A got right, {mcnemar['only_b']} only B;"
            f" p = {p_text(mcnemar['p_value'])}"
        )
    rows.append(["B - A", "", f"{result['difference']:+.4f}", interval(result["difference_ci95"], signed=True)])
    return header, rows, [f"{images(result['images'])} tested", test, result["verdict"]]
