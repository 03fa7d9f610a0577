"""The test stage of train.py and the whole of eval.py: one code path, so their numbers and outputs agree."""

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TOP_K = 5  # the top-k kept per image in predictions.csv, as in the top-5 metric


def run_test(
    trainer: Any,
    model: Any,
    datamodule: Any,
    ckpt_path: str | None,
    output_dir: Path | None = None,
    weights_from: str | None = None,
) -> dict[str, float]:
    """Test `model` (or the weights at `ckpt_path`) on the data's test split (val when there is none).

    With `output_dir`, also write the evaluation outputs there (see `write_outputs`); `weights_from` names the
    checkpoint `model` was loaded from when `ckpt_path` is None (eval.py loads it itself), for metrics.json.
    """
    from mlproj.reports.predictions import TestPredictions

    collector = TestPredictions(TOP_K)
    trainer.callbacks.append(collector)
    try:
        results = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True)
    finally:
        trainer.callbacks.remove(collector)
    metrics = {name: float(value) for name, value in (results[0] if results else {}).items()}
    if output_dir is None or not trainer.is_global_zero:
        return metrics
    checkpoint = weights_from or trainer.ckpt_path
    overall = {"ckpt_path": checkpoint and str(checkpoint), "split": datamodule.test_split, **metrics}
    if trainer.world_size > 1:  # each process saw a share of the images: only the synced metrics are whole
        from mlproj.reports.metrics import write_metrics

        write_metrics(output_dir, overall)
        log.warning(
            "no per-class metrics, predictions or figures from %d processes: run eval.py with trainer.devices=1"
            " trainer.strategy=auto for them",
            trainer.world_size,
        )
    elif collector.batches:
        write_outputs(output_dir, overall, collector.result(), datamodule, model)
    return metrics


def write_outputs(output_dir: Path, overall: dict[str, Any], result: Any, datamodule: Any, model: Any) -> None:
    """metrics.json, metrics.csv, predictions.csv, figures/confusion_matrix.png and figures/misclassified.png."""
    from mlproj.reports.confusion import plot_confusion
    from mlproj.reports.gradcam import plot_misclassified
    from mlproj.reports.metrics import class_metrics, write_metrics
    from mlproj.reports.predictions import write_predictions

    classes = datamodule.classes
    samples = datamodule.splits[datamodule.test_split]
    write_metrics(output_dir, {**overall, "images": len(result)}, class_metrics(result, len(classes)), classes)
    write_predictions(output_dir / "predictions.csv", result, classes, samples, datamodule.root)
    plot_confusion(result, classes, output_dir / "figures" / "confusion_matrix.png")
    plot_misclassified(
        result, classes, samples, model.backbone, datamodule.data_config, output_dir / "figures" / "misclassified.png"
    )
    log.info("evaluation outputs in %s: metrics.json, metrics.csv, predictions.csv, figures/", output_dir)
