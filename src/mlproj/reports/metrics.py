"""Per-class precision, recall and F1 (torchmetrics), written as metrics.json (everything) and metrics.csv (the
per-class table)."""

import json
from pathlib import Path
from typing import Any

import torch

from mlproj.reports.predictions import TestResult
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
