"""Instantiating the config groups that are collections: callbacks and loggers."""

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from mlproj.errors import find_config_error


def build(node: Any, **kwargs: Any) -> Any:
    """hydra's instantiate, letting our one-line ConfigError through instead of Hydra's wrapper."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        config_error = find_config_error(error)
        if config_error is None:
            raise
        raise config_error from error


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """One object per entry that has a `_target_`; null entries switch one off (callbacks.ema=null)."""
    if not group:
        return []
    return [build(entry, _convert_="all") for entry in group.values() if entry and "_target_" in entry]


def build_datamodule(data: DictConfig) -> Any:
    """The DataModule, prepared (downloads, generated files) and scanned: bad data fails here, before training."""
    datamodule = build(data, _convert_="all")
    datamodule.prepare_data()
    datamodule.classes  # noqa: B018 - scanning validates root, classes and splits
    return datamodule


def connect_preprocessing(datamodule: Any, model: Any) -> None:
    """The data's loaders and the model's device-side transforms, both from the model's timm data config."""
    datamodule.configure_preprocessing(model.data_config)
    model.train_batch_transform = datamodule.batch_transforms["train"]
    model.eval_batch_transform = datamodule.batch_transforms["eval"]
