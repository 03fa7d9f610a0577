"""The test stage of train.py and the whole of eval.py: one code path, so their numbers and outputs agree.

Also what both do around it: fitting a checkpoint's temperature on the validation split (`calibrate=true`), and a
test split through the inference layer without a Trainer (`mlproj compare` of a checkpoint).
"""

import logging
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from mlproj.inference.model import TrainedModel
    from mlproj.reports.predictions import TestResult

log = logging.getLogger(__name__)

TOP_K = 5  # the top-k kept per image in predictions.csv, as in the top-5 metric


def run_test(
    trainer: Any,
    model: Any,
    datamodule: Any,
    ckpt_path: str | None,
    output_dir: Path | None = None,
    weights_from: str | None = None,
    temperature: float = 1.0,
    tta: str | None = None,
) -> dict[str, Any]:
    """Test `model` (or the weights at `ckpt_path`) on the data's test split (val when there is none), as served:
    logits divided by `temperature`, each batch with its `tta` views (mlproj.inference.served).

    With `output_dir`, also write the evaluation outputs there (see `write_outputs`) and return their intervals,
    calibration errors and accuracy without TTA with the metrics; `weights_from` names the checkpoint `model` was
    loaded from when `ckpt_path` is None (eval.py loads it itself), for metrics.json.
    """
    from mlproj.inference.served import ServedForward
    from mlproj.reports.predictions import TestPredictions

    served = ServedForward(temperature, tta) if temperature != 1.0 or tta else None
    collector = TestPredictions(TOP_K, served)
    trainer.callbacks.append(collector)
    try:
        with served.attached(model) if served is not None else nullcontext():
            results = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True)
    finally:
        trainer.callbacks.remove(collector)
    metrics: dict[str, Any] = {name: float(value) for name, value in (results[0] if results else {}).items()}
    if output_dir is None or not trainer.is_global_zero:
        return metrics
    checkpoint = weights_from or trainer.ckpt_path
    overall = {
        "ckpt_path": checkpoint and str(checkpoint),
        "split": datamodule.test_split,
        "temperature": temperature,
        "tta": tta,
        **metrics,
    }
    if trainer.world_size > 1:  # each process saw a share of the images: only the synced metrics are whole
        from mlproj.reports.metrics import synced_intervals, write_metrics

        found = synced_intervals(metrics, len(datamodule.splits[datamodule.test_split]))
        write_metrics(output_dir, {**overall, **found})
        metrics |= found
        log.warning(
            "no per-class metrics, predictions or figures from %d processes: run eval.py with trainer.devices=1"
            " trainer.strategy=auto for them",
            trainer.world_size,
        )
    elif collector.batches:
        metrics |= write_outputs(output_dir, overall, collector.result(), datamodule, model)
    return metrics


def rounded(metrics: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    """Metrics (numbers and [low, high] intervals) rounded for a log line."""
    return {
        name: [round(v, digits) for v in value] if isinstance(value, list) else round(value, digits)
        for name, value in metrics.items()
    }


def write_outputs(
    output_dir: Path, overall: dict[str, Any], result: Any, datamodule: Any, model: Any
) -> dict[str, Any]:
    """metrics.json, metrics.csv, predictions.csv and figures/ (confusion_matrix.png, misclassified.png,
    reliability.png); returns what metrics.json got beyond `overall`: 95% intervals, calibration errors (before
    and after the temperature) and, with TTA, top-1 without it."""
    from mlproj.reports.calibration import calibration_metrics, plot_reliability
    from mlproj.reports.confusion import plot_confusion
    from mlproj.reports.gradcam import plot_misclassified
    from mlproj.reports.metrics import class_metrics, intervals, single_view_accuracy, write_metrics
    from mlproj.reports.predictions import write_predictions

    classes = datamodule.classes
    samples = datamodule.splits[datamodule.test_split]
    temperature = overall.get("temperature", 1.0)
    found = intervals(result, len(classes)) | calibration_metrics(result, temperature) | single_view_accuracy(result)
    record = {**overall, "images": len(result), **found}
    write_metrics(output_dir, record, class_metrics(result, len(classes)), classes)
    write_predictions(output_dir / "predictions.csv", result, classes, samples, datamodule.root)
    plot_confusion(result, classes, output_dir / "figures" / "confusion_matrix.png")
    plot_reliability(result, temperature, output_dir / "figures" / "reliability.png")
    plot_misclassified(
        result, classes, samples, model.backbone, datamodule.data_config, output_dir / "figures" / "misclassified.png"
    )
    log.info("evaluation outputs in %s: metrics.json, metrics.csv, predictions.csv, figures/", output_dir)
    return found


def preprocessed(datamodule: Any, loader: Any) -> "Iterator[tuple[torch.Tensor, torch.Tensor]]":
    """The loader's batches through the DataModule's evaluation transform, as the test pass feeds the model."""
    import torch

    for images, labels in loader:
        with torch.inference_mode():
            yield datamodule.batch_transforms["eval"](images), labels


def test_split_result(trained: "TrainedModel", datamodule: Any, tta: str | None = None) -> "TestResult":
    """Every image of the test split through `trained.probabilities` (its temperature, `tta`), in order, on the CPU:
    what a test pass collects, without a Trainer (`mlproj compare` of a checkpoint)."""
    from mlproj.reports.predictions import TestResult, top_k

    results = []
    for images, labels in preprocessed(datamodule, datamodule.test_dataloader()):
        classes, probs = top_k(trained.probabilities(images, tta), TOP_K)
        results.append({"labels": labels, "top_classes": classes, "top_probs": probs})
    return TestResult.of(results)


def calibrate(trained: "TrainedModel", datamodule: Any, device: Any = "cpu") -> float:
    """Fit the temperature on the validation split (the checkpoint's logits on `device`, no TTA), store it in the
    checkpoint (mlproj.inference.calibration) and return it."""
    import torch

    from mlproj.errors import ConfigError
    from mlproj.inference.calibration import fit_temperature, store_temperature

    if not len(datamodule.splits.get("val", [])):
        raise ConfigError(f"calibrate=true: {trained.path}'s data has no validation images to fit a temperature on")
    module = trained.module.to(device)
    logits, labels = [], []
    with torch.inference_mode():
        for images, batch_labels in preprocessed(datamodule, datamodule.val_dataloader()):
            logits.append(module(images.to(device)).float().cpu())
            labels.append(batch_labels)
    trained.module.cpu()
    temperature = fit_temperature(torch.cat(logits), torch.cat(labels))
    store_temperature(trained.path, temperature)
    log.info("temperature %.4f stored in %s", temperature, trained.path)
    return temperature


def calibrate_best(trainer: Any, datamodule: Any) -> float:
    """`calibrate` the run's best checkpoint at the end of training, on the trainer's device; 1.0 (and a warning)
    when there is none, or when the run has several processes (each saw a share of the validation split)."""
    from mlproj.inference.model import load_model

    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if not best or trainer.world_size > 1:
        log.warning(
            "calibrate=true: no temperature fitted (%s): run eval.py ckpt_path=CKPT calibrate=true on one device",
            "no best checkpoint" if not best else f"{trainer.world_size} processes",
        )
        return 1.0
    return calibrate(load_model(best, exported=False), datamodule, trainer.strategy.root_device)
