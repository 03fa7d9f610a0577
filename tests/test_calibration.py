"""Calibration: temperature scaling on a deliberately over-confident model, and `eval.py calibrate=true` on a real
checkpoint (the temperature stored in it, reported before and after, applied by predict.py and carried into an
exported model's card)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mlproj.inference.calibration import fit_temperature
from mlproj.reports.calibration import calibration_errors

from conftest import compose, train_tiny


def over_confident(seed: int, images: int = 2000, classes: int = 5, scale: float = 4.0) -> tuple:
    """Labels drawn from softmax(true logits), and a model that reports `scale` times those logits: right as often
    as a calibrated one, far surer of itself."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(images, 8, generator=generator)
    true_logits = features @ torch.randn(8, classes, generator=generator)
    labels = torch.multinomial(true_logits.softmax(dim=1), 1, generator=generator).squeeze(1)
    return scale * true_logits, labels


def errors_of(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    confidence, predicted = logits.softmax(dim=1).max(dim=1)
    return calibration_errors(confidence, predicted == labels)


def test_temperature_scaling_lowers_the_calibration_error_of_an_over_confident_model() -> None:
    val_logits, val_labels = over_confident(seed=0)
    test_logits, test_labels = over_confident(seed=1)
    temperature = fit_temperature(val_logits, val_labels)
    assert temperature == pytest.approx(4.0, rel=0.15)  # it finds the factor the model is over-confident by
    before, after = errors_of(test_logits, test_labels), errors_of(test_logits / temperature, test_labels)
    assert before["ece"] > 0.15 and after["ece"] < 0.04
    assert after["mce"] < before["mce"]
    assert (test_logits / temperature).argmax(1).equal(test_logits.argmax(1))  # no prediction changes


def test_calibration_errors_are_torchmetrics_multiclass_ones() -> None:
    from torchmetrics.functional.classification import multiclass_calibration_error

    logits, labels = over_confident(seed=2, images=500)
    probabilities = logits.softmax(dim=1)
    expected = {
        name: float(multiclass_calibration_error(probabilities, labels, 5, n_bins=15, norm=norm))
        for name, norm in (("ece", "l1"), ("mce", "max"))
    }
    assert errors_of(logits, labels) == pytest.approx(expected, abs=1e-6)


def read_pixels(path: Path) -> np.ndarray:
    """HxWx3 uint8, as predict.py reads a file."""
    from mlproj.data.samples import Samples

    return Samples(labels=np.zeros(1, dtype=np.int64), paths=np.asarray([str(path)])).array(0)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(images, checkpoint, eval run dir): a tiny checkpoint through `eval.py calibrate=true tta=flip`."""
    from hydra.core.global_hydra import GlobalHydra

    from mlproj.eval import evaluate

    tmp = tmp_path_factory.mktemp("calibrated")
    images, run_dir = train_tiny(tmp, per_class=8)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    try:
        evaluate(compose("eval", [f"ckpt_path={checkpoint}", "calibrate=true", "tta=flip"], tmp / "eval"))
    finally:
        GlobalHydra.instance().clear()
    return images, checkpoint, tmp / "eval"


def test_eval_calibrates_stores_the_temperature_and_reports_before_and_after(calibrated) -> None:
    from mlproj.inference.model import load_model

    _, checkpoint, eval_dir = calibrated
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    temperature = load_model(str(checkpoint)).temperature
    assert temperature != 1.0 and metrics["temperature"] == temperature
    for name in ("test/ece", "test/mce", "test/ece_before_scaling", "test/mce_before_scaling"):
        assert 0 <= metrics[name] <= 1
    assert metrics["tta"] == "flip" and 0 <= metrics["test/acc_without_tta"] <= 1  # and with it: test/acc
    low, high = metrics["test/acc_without_tta_ci95"]
    assert low <= metrics["test/acc_without_tta"] <= high
    assert (eval_dir / "figures" / "reliability.png").stat().st_size > 10_000


def test_predict_and_exported_models_apply_the_stored_temperature(calibrated, tmp_path: Path) -> None:
    from hydra.core.global_hydra import GlobalHydra

    from mlproj.export.task import export
    from mlproj.inference.model import load_model
    from mlproj.predict import predict

    images, checkpoint, _ = calibrated
    trained = load_model(str(checkpoint))
    image = sorted(images.rglob("*.png"))[0]
    try:
        output = predict(compose("predict", [f"ckpt_path={checkpoint}", f"input={image}"], tmp_path / "predict"))
        onnx = export(compose("export", [f"ckpt_path={checkpoint}", f"output_dir={tmp_path}"], tmp_path))
    finally:
        GlobalHydra.instance().clear()
    with output.open(newline="") as handle:
        (row,) = csv.DictReader(handle)
    batch = trained.preprocess([read_pixels(image)])
    logits = trained.logits(batch)
    assert float(row["prob1"]) == pytest.approx(float((logits / trained.temperature).softmax(1).max()), abs=1e-5)
    assert float(row["prob1"]) != pytest.approx(float(logits.softmax(1).max()), abs=1e-4)  # not the raw softmax
    exported = load_model(str(onnx))
    assert exported.card.temperature == trained.temperature
    assert exported.probabilities(batch) == pytest.approx(trained.probabilities(batch), abs=1e-5)


def test_training_with_calibrate_stores_the_temperature_in_the_best_checkpoint(train_in_process, image_folder) -> None:
    from mlproj.inference.model import load_model
    from mlproj.reports.run_report import render

    images = image_folder(per_class=8)
    quick = ["data=imagefolder", "model.backbone=resnet10t", "data.image_size=32", "data.num_workers=0"]
    metrics, run_dir = train_in_process(
        *quick, f"data.root={images}", "debug=limit", "trainer.max_epochs=1", "calibrate=true"
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    temperature = load_model(summary["best_checkpoint"]).temperature
    assert temperature != 1.0
    tested = json.loads((run_dir / "metrics.json").read_text())
    assert tested["temperature"] == temperature
    assert {"test/ece", "test/ece_before_scaling"} <= set(metrics) <= set(summary["metrics"])
    page = render(run_dir)[1]
    assert f"{tested['test/ece_before_scaling']:.4f} before, {tested['test/ece']:.4f} after temperature" in page
