"""Per-class precision, recall and F1 (torchmetrics) and 95% intervals of the headline metrics, written as
metrics.json (everything) and metrics.csv (the per-class table)."""

import json
from pathlib import Path
from typing import Any

import torch

from mlproj.reports.predictions import TestResult
from mlproj.stats import bootstrap_interval, wilson_interval
from mlproj.storage import write_csv

PER_CLASS = ("precision", "recall", "f1")


def class_metrics(result: TestResult, num_classes: int) -> dict[str, torch.Tensor]:
    """Per class (average=None) and macro-averaged; recall per class is that class's top-1 accuracy."""
    from torchmetrics.functional.classification import multiclass_f1_score, multiclass_precision, multiclass_recall

    functions = {"precision": multiclass_precision, "recall": multiclass_recall, "f1": multiclass_f1_score}
    preds, target = result.predicted, result.labels
    metrics = {name: fn(preds, target, num_classes, average=None) for name, fn in functions.items()}
    metrics |= {f"{name}_macro": fn(preds, target, num_classes, average="macro") for name, fn in functions.items()}
    metrics["support"] = torch.bincount(target, minlength=num_classes)
    return metrics


def macro_f1(num_classes: int) -> Any:
    """Macro F1 of (predicted, actual) arrays, torchmetrics' own (classes absent from both are left out)."""
    from torchmetrics.functional.classification import multiclass_f1_score

    def statistic(predicted: Any, actual: Any) -> float:
        preds, target = torch.as_tensor(predicted), torch.as_tensor(actual)
        return float(multiclass_f1_score(preds, target, num_classes, average="macro", validate_args=False))

    return statistic


def intervals(result: TestResult, num_classes: int) -> dict[str, list[float]]:
    """95% intervals: Wilson for top-1 and top-5 accuracy (counts of correct images), a seeded bootstrap for macro
    F1 (no closed form): `test/acc_ci95`, `test/acc_top5_ci95`, `test/f1_macro_ci95`, each [low, high]."""
    images = len(result)
    top5 = (result.top_classes[:, :5] == result.labels[:, None]).any(dim=1)
    samples = (result.predicted.numpy(), result.labels.numpy())
    found = {
        "test/acc_ci95": wilson_interval(int(result.correct.sum()), images),
        "test/acc_top5_ci95": wilson_interval(int(top5.sum()), images),
        "test/f1_macro_ci95": bootstrap_interval(macro_f1(num_classes), samples),
    }
    return {name: [low, high] for name, (low, high) in found.items()}


def synced_intervals(metrics: dict[str, Any], images: int) -> dict[str, list[float]]:
    """Wilson intervals from accuracies synced across processes (DDP, where no process holds every prediction): they
    need only the rate and the number of images. Macro F1 needs the predictions, so it has none there."""
    found = {}
    for name in ("test/acc", "test/acc_top5"):
        if name in metrics and images > 0:
            found[f"{name}_ci95"] = list(wilson_interval(round(metrics[name] * images), images))
    return found


def single_view_accuracy(result: TestResult) -> dict[str, Any]:
    """With test-time augmentation: top-1 of the images as given (`test/acc_without_tta`), with its interval."""
    if result.single_view_predicted is None:
        return {}
    right = int((result.single_view_predicted == result.labels).sum())
    return {
        "test/acc_without_tta": right / len(result),
        "test/acc_without_tta_ci95": list(wilson_interval(right, len(result))),
    }


def write_metrics(
    output_dir: Path,
    overall: dict[str, Any],
    per_class: dict[str, torch.Tensor] | None = None,
    classes: list[str] | None = None,
) -> None:
    """metrics.json: `overall` (split, checkpoint, test/acc, test/acc_top5, test/loss) and, given `per_class`, the
    macro averages as test/precision_macro ... and `per_class` by class name; metrics.csv: one row per class."""
    output_dir.mkdir(parents=True, exist_ok=True)
    record = dict(overall)
    if per_class is not None and classes is not None:
        table = {
            name: {**{m: float(per_class[m][i]) for m in PER_CLASS}, "support": int(per_class["support"][i])}
            for i, name in enumerate(classes)
        }
        record |= {f"test/{name}_macro": float(per_class[f"{name}_macro"]) for name in PER_CLASS}
        record["per_class"] = table
        rows = ([name, row["support"], *(f"{row[m]:.6f}" for m in PER_CLASS)] for name, row in table.items())
        write_csv(output_dir / "metrics.csv", ["class", "support", *PER_CLASS], rows)
    (output_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
