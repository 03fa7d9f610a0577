"""What a trained model answers as served: the test-time augmentation views of each batch in one call to the model
(mlproj.inference.tta), their logits averaged, then divided by the temperature it was calibrated with.

Two forms of the one rule: `served_logits` wraps a logits function (TrainedModel.probabilities: serving, compare,
the export check), `ServedForward` hooks a module's forward for passes Lightning runs (eval's test pass, predict.py).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from mlproj.inference.tta import VIEWS, merge, views


def served_logits(
    logits: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, temperature: float, tta: str | None
) -> torch.Tensor:
    """Calibrated logits of a normalised float batch: one call to `logits` with every view."""
    return merge(logits(views(images, tta)).float(), tta) / temperature


class ServedForward:
    """Forward hooks that make a module's forward compute `served_logits`, keeping what a test pass also reports:
    the last batch's logits of the images as given (`plain`: no TTA, no temperature) and before the temperature
    (`uncalibrated`), for accuracy without TTA and calibration error before scaling."""

    def __init__(self, temperature: float = 1.0, tta: str | None = None) -> None:
        self.temperature = temperature
        self.tta = tta
        self.plain: torch.Tensor | None = None
        self.uncalibrated: torch.Tensor | None = None

    def before(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (views(args[0], self.tta), *args[1:])

    def after(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        merged = merge(output, self.tta)
        self.plain = output[: len(output) // VIEWS.get(self.tta, 1)].detach()
        self.uncalibrated = merged.detach()
        return merged / self.temperature

    @contextmanager
    def attached(self, module: nn.Module) -> Iterator["ServedForward"]:
        """The hooks on `module` for the duration of the block."""
        handles = [module.register_forward_pre_hook(self.before), module.register_forward_hook(self.after)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
