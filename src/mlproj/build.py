"""Instantiating the config groups that are collections: callbacks and loggers."""

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """One object per entry that has a `_target_`; null entries switch one off (callbacks.ema=null)."""
    if not group:
        return []
    return [instantiate(entry, _convert_="all") for entry in group.values() if entry and "_target_" in entry]


def build_datamodule(data: DictConfig) -> Any:
    """The DataModule, prepared (downloads, generated files) and scanned: bad data fails here, before training."""
    datamodule = instantiate(data, _convert_="all")
    datamodule.prepare_data()
    datamodule.classes  # noqa: B018 - scanning validates root, classes and splits
    return datamodule
