"""Optimizers from timm, schedulers stepped the way each one expects."""

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn

from mlproj.errors import ConfigError

SCHEDULERS = ("cosine", "onecycle", "step", "none")


@contextmanager
def all_trainable(module: nn.Module) -> Iterator[None]:
    """Let the optimizer see frozen parameters too, so unfreezing later needs no new param groups.

    Frozen parameters get no gradient, and torch optimizers skip parameters whose grad is None.
    """
    frozen = [p for p in module.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def build_optimizer(module: nn.Module, lr: float, settings: Mapping[str, Any]) -> torch.optim.Optimizer:
    """timm's create_optimizer_v2: no weight decay on norms and biases, optional layer decay."""
    from timm.optim import create_optimizer_v2

    options = {k: v for k, v in settings.items() if k != "lr" and v is not None}
    with all_trainable(module):
        try:
            return create_optimizer_v2(module, lr=lr, **options)
        except (AssertionError, ValueError) as error:
            raise ConfigError(f"model.optimizer={dict(settings)}: {error}") from error


LENGTH_SCHEDULES = ("cosine", "onecycle")  # planned over the whole run: they need its length in updates


def check_schedule_length(name: str, max_epochs: int | None, max_steps: int | None) -> None:
    """trainer.max_epochs=-1 trains until stopped (max_time, a stop signal); a schedule planned over the whole run
    then has no length unless trainer.max_steps gives one."""
    if name in LENGTH_SCHEDULES and max_epochs == -1 and (max_steps is None or max_steps < 0):
        raise ConfigError(
            f"model.scheduler.name={name} is planned over the run's length, and trainer.max_epochs=-1 with no"
            " trainer.max_steps has none: set trainer.max_steps=N, or model.scheduler=step or none"
        )


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    lr: float,
    settings: Mapping[str, Any],
    total_steps: int | None,
    steps_per_epoch: int,
) -> dict[str, Any] | None:
    """A Lightning lr_scheduler config; per-update schedules get interval "step". `total_steps` is None for a run
    with no planned end."""
    name = settings.get("name", "none")
    if name == "none":
        return None
    if name in LENGTH_SCHEDULES and total_steps is None:
        check_schedule_length(name, -1, None)
    if name == "onecycle":
        assert total_steps is not None
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=lr,
            total_steps=max(1, total_steps),
            pct_start=settings["pct_start"],
            div_factor=settings["div_factor"],
            final_div_factor=settings["final_div_factor"],
        )
        return {"scheduler": scheduler, "interval": "step"}
    if name == "cosine":
        from timm.scheduler import CosineLRScheduler

        assert total_steps is not None
        warmup = min(int(settings["warmup_epochs"] * max(1, steps_per_epoch)), max(0, total_steps - 1))
        scheduler = CosineLRScheduler(
            optimizer,
            t_initial=max(1, total_steps - warmup),
            lr_min=settings["min_lr"],
            warmup_t=warmup,
            warmup_lr_init=settings["warmup_lr"],
            warmup_prefix=True,  # the cosine starts at the peak once warm-up ends
            t_in_epochs=False,
        )
        return {"scheduler": scheduler, "interval": "step"}
    if name == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings["step_size"], gamma=settings["gamma"])
        return {"scheduler": scheduler, "interval": "epoch"}
    raise ConfigError(f"model.scheduler.name={name} is not one of {', '.join(SCHEDULERS)}")


def planned_steps(scheduler: Any) -> int | None:
    """The number of updates a per-update schedule was built for (None for per-epoch ones)."""
    if hasattr(scheduler, "t_initial"):  # timm: warm-up comes before the cosine
        return scheduler.t_initial + (scheduler.warmup_t if scheduler.warmup_prefix else 0)
    return getattr(scheduler, "total_steps", None)


def fast_forward(scheduler: Any, done_steps: int) -> None:
    """Put a freshly built per-update schedule at update `done_steps` (both kinds compute lr from the count)."""
    from timm.scheduler.scheduler import Scheduler

    if isinstance(scheduler, Scheduler):
        scheduler.step_update(num_updates=done_steps)
    elif done_steps > 0:
        scheduler.last_epoch = done_steps - 1
        with warnings.catch_warnings():  # "step() before optimizer.step()": intended, no update is skipped
            warnings.simplefilter("ignore", UserWarning)
            scheduler.step()
