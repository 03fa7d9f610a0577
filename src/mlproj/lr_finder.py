"""Lightning's learning-rate finder, with its loss-vs-lr plot kept in the run dir."""

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def tune_learning_rate(trainer: Any, model: Any, datamodule: Any, run_dir: Path) -> float:
    """Set `model.lr` to the finder's suggestion (the peak for one-cycle) and save `lr_find.png`."""
    import matplotlib

    matplotlib.use("Agg")
    from lightning.pytorch.tuner import Tuner

    finder = Tuner(trainer).lr_find(model, datamodule=datamodule, attr_name="lr")
    if finder is None:  # not global rank 0
        return float(model.lr)
    finder.plot(suggest=True).savefig(run_dir / "lr_find.png", dpi=100)
    if finder.suggestion() is None:
        log.warning(
            "learning-rate finder had too few steps (%d) to suggest a rate; keeping lr=%g (plot: %s)",
            len(finder.results.get("lr", [])),
            model.lr,
            run_dir / "lr_find.png",
        )
    else:
        log.info("learning-rate finder suggests %.3g (plot: %s)", model.lr, run_dir / "lr_find.png")
    return float(model.lr)
