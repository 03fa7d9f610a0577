"""Turning config nodes into objects: the data, with its preprocessing decided once, and the collection groups
(callbacks, loggers)."""

from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mlproj.errors import find_config_error

# Keys of a data config that choose the preprocessing (with the backbone) rather than configure the DataModule.
PREPROCESSING_KEYS = ("image_size", "crop_pct")


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


def resolve_preprocessing(backbone: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The one decision on preprocessing (timm's data config: size, crop, mean, std, interpolation) for a run:
    the backbone's, at the data's `image_size`/`crop_pct` when set. The DataModule and the checkpoint take it from
    here; the model never sees it."""
    from mlproj.models.backbone import data_config_for

    return data_config_for(backbone, data.get("image_size"), data.get("crop_pct"))


def build_datamodule(data: DictConfig | Mapping[str, Any], preprocessing: Mapping[str, Any] | None) -> Any:
    """The DataModule, prepared (downloads, generated files) and loaded (scanned, checked, cached): bad data fails
    here, before training. With `preprocessing`, its loaders and device transforms are set up too."""
    settings = OmegaConf.to_container(data, resolve=True) if isinstance(data, DictConfig) else dict(data)
    for key in PREPROCESSING_KEYS:
        settings.pop(key, None)
    datamodule = build(settings, _convert_="all")
    datamodule.prepare_data()
    datamodule.load()
    if preprocessing is not None:
        datamodule.configure_preprocessing(preprocessing)
    return datamodule
