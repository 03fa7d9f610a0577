"""The confusion matrix (torchmetrics) as a PNG: rows are actual classes, columns predicted ones."""

from pathlib import Path

from mlproj.reports.predictions import TestResult

# Past these many classes, cell counts (then tick labels) would be unreadable and are left out.
ANNOTATE_UP_TO = 20
LABEL_UP_TO = 60


def plot_confusion(result: TestResult, classes: list[str], path: Path) -> None:
    """Colours are row-normalised (each actual class sums to 1), so rare classes show as clearly as common ones;
    the numbers in the cells are counts."""
    from matplotlib.figure import Figure
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    n = len(classes)
    counts = multiclass_confusion_matrix(result.predicted, result.labels, n).numpy()
    rates = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    side = min(3 + 0.35 * n, 14)
    figure = Figure(figsize=(side + 1.5, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, label="fraction of the actual class")
    if n <= ANNOTATE_UP_TO:
        for row in range(n):
            for column in range(n):
                if counts[row, column]:
                    colour = "white" if rates[row, column] > 0.5 else "black"
                    axes.text(column, row, str(counts[row, column]), ha="center", va="center", color=colour, size=8)
    if n <= LABEL_UP_TO:
        axes.set_xticks(range(n), classes, rotation=90 if max(map(len, classes)) > 3 else 0)
        axes.set_yticks(range(n), classes)
    correct = int(counts.trace())
    axes.set(xlabel="predicted", ylabel="actual")
    axes.set_title(f"confusion matrix: {correct}/{int(counts.sum())} correct")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
