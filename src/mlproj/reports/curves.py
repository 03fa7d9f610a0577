"""Per-epoch history from the CSV logger's csv/metrics.csv: learning curves and epoch times as figures."""

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

History = dict[str, dict[int, float]]  # column -> epoch -> value

CURVES = (("loss", "loss"), ("acc", "top-1 accuracy"), ("acc_top5", "top-5 accuracy"))


def epoch_history(path: Path) -> History:
    """Every train/, val/, lr- and time/ column by epoch; a resumed run's rewritten epochs keep their last value.

    The learning-rate monitor logs at the start of each epoch, on rows without an epoch: such a row belongs to the
    first epoch whose training ended at or after its step.
    """
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    history: History = defaultdict(dict)
    ends: dict[int, int] = {}  # epoch -> the step its training ended at
    for row in rows:
        if row.get("epoch") and row.get("train/loss"):
            ends[int(row["epoch"])] = int(row["step"])
    for row in rows:
        if row.get("epoch"):
            epoch = int(row["epoch"])
        else:
            step = int(row["step"])
            epoch = min((e for e, end in ends.items() if end >= step), default=max(ends, default=-1) + 1)
        for column, value in row.items():
            if value and column.startswith(("train/", "val/", "lr-", "time/")):
                history[column][epoch] = float(value)
    return dict(history)


def plot(axes: Any, series: dict[int, float], label: str) -> None:
    epochs = sorted(series)
    axes.plot(epochs, [series[e] for e in epochs], marker="o", markersize=3, label=label)


def curves_figure(history: History) -> Any:
    """Loss, top-1, top-5 (train and val) and the learning rate of every parameter group, against the epoch."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(11, 7), layout="constrained")
    grid = figure.subplots(2, 2)
    for axes, (metric, title) in zip(grid.flat, CURVES, strict=False):
        for stage in ("train", "val"):
            if f"{stage}/{metric}" in history:
                plot(axes, history[f"{stage}/{metric}"], stage)
        axes.set_title(title)
    lr_axes = grid.flat[3]
    for column in sorted(c for c in history if c.startswith("lr-")):
        plot(lr_axes, history[column], column.removeprefix("lr-"))
    lr_axes.set_title("learning rate (at the epoch's start)")
    for axes in grid.flat:
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if axes.has_data():
            axes.legend(fontsize=8)
    return figure


def epoch_times_figure(times: dict[int, float]) -> Any:
    """Wall time of each epoch (training and its validation), from the EpochTimer callback's `time/epoch_s`."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(8, 3), layout="constrained")
    axes = figure.add_subplot()
    epochs = sorted(times)
    axes.bar(epochs, [times[e] for e in epochs], color="tab:gray")
    axes.set(xlabel="epoch", ylabel="seconds", title=f"epoch wall time: {sum(times.values()):.1f} s in all")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure
