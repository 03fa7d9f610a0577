"""Which parts of a backbone train: all, only the classifier, or all but the first stages."""

import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from mlproj.errors import ConfigError
from mlproj.knobs import checked


def stage_groups(backbone: nn.Module) -> list[list[str]]:
    """Module names per stage, in order: stem, stages..., head (timm's coarse group matcher)."""
    from timm.models import group_modules

    groups = group_modules(backbone, backbone.group_matcher(coarse=True))
    return [groups[key] for key in sorted(groups)]


def frozen_modules(backbone: nn.Module, mode: str, freeze_stages: int) -> list[nn.Module]:
    checked("model.finetune", mode)
    if mode == "full":
        return []
    if mode == "linear_probe":
        return [backbone]
    groups = stage_groups(backbone)
    stages = len(groups) - 2  # minus stem and head
    if not 0 < freeze_stages <= stages:
        raise ConfigError(f"model.freeze_stages={freeze_stages} must be between 1 and {stages} for this backbone")
    return [backbone.get_submodule(name) for group in groups[: freeze_stages + 1] for name in group]


def apply_finetune(backbone: nn.Module, mode: str, freeze_stages: int = 0) -> list[nn.Module]:
    """Freeze per `mode`; return the BatchNorm layers whose running statistics must stay fixed too.

    The classifier always trains, so a linear probe is "freeze everything, then thaw the head".
    """
    modules = frozen_modules(backbone, mode, freeze_stages)
    for module in modules:
        module.requires_grad_(False)
    head = backbone.get_classifier()
    head.requires_grad_(True)
    in_head = {id(m) for m in head.modules()}
    return [m for module in modules for m in module.modules() if isinstance(m, _BatchNorm) and id(m) not in in_head]
