"""How far the probabilities are from how often the model is right: expected and maximum calibration error
(torchmetrics) and the reliability diagram, before and after temperature scaling when the model has a temperature.

Both use the top-label confidence (the probability of the predicted class) against whether that class is right,
which is exactly what torchmetrics' multiclass calibration error computes from the full probabilities.
"""

from pathlib import Path

import torch

from mlproj.reports.predictions import TestResult

BINS = 15  # torchmetrics' default


def calibration_errors(confidence: torch.Tensor, correct: torch.Tensor) -> dict[str, float]:
    """{"ece": expected (L1, weighted by bin size), "mce": maximum (worst bin)} over BINS equal-width bins."""
    from torchmetrics.functional.classification import binary_calibration_error

    return {
        name: float(binary_calibration_error(confidence.float().contiguous(), correct.long(), n_bins=BINS, norm=norm))
        for name, norm in (("ece", "l1"), ("mce", "max"))
    }


def calibration_metrics(result: TestResult, temperature: float) -> dict[str, float]:
    """test/ece and test/mce of the probabilities as reported; with a temperature, also before it was applied."""
    found = {f"test/{name}": value for name, value in calibration_errors(result.confidence, result.correct).items()}
    if result.uncalibrated_confidence is not None and temperature != 1.0:
        before = calibration_errors(result.uncalibrated_confidence, result.correct)
        found |= {f"test/{name}_before_scaling": value for name, value in before.items()}
    return found


def bin_accuracy(confidence: torch.Tensor, correct: torch.Tensor) -> tuple[list[float], list[float], list[int]]:
    """(mean confidence, accuracy, images) of each non-empty bin."""
    index = (confidence * BINS).long().clamp(max=BINS - 1)
    bins = [index == b for b in range(BINS)]
    return (
        [float(confidence[b].mean()) for b in bins if b.any()],
        [float(correct[b].float().mean()) for b in bins if b.any()],
        [int(b.sum()) for b in bins if b.any()],
    )


def plot_reliability(result: TestResult, temperature: float, path: Path) -> None:
    """Accuracy against confidence per bin, beside the diagonal a calibrated model follows; with a temperature,
    before and after scaling."""
    from matplotlib.figure import Figure

    series = [("as reported" if temperature == 1.0 else f"after scaling (T = {temperature:.2f})", result.confidence)]
    if result.uncalibrated_confidence is not None and temperature != 1.0:
        series.insert(0, ("before scaling", result.uncalibrated_confidence))
    figure = Figure(figsize=(5.5, 5), layout="constrained")
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="gray", linestyle="--", label="calibrated")
    for label, confidence in series:
        errors = calibration_errors(confidence, result.correct)
        mean_confidence, accuracy, _ = bin_accuracy(confidence, result.correct)
        axes.plot(mean_confidence, accuracy, marker="o", label=f"{label}: ECE {errors['ece']:.3f}")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="accuracy")
    axes.set_title(f"reliability diagram, {len(result)} test images, {BINS} bins")
    axes.legend(fontsize=8, loc="lower right")
    axes.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
