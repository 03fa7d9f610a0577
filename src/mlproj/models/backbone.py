"""timm backbones: names checked before anything trains, weights from the hub or a file."""

import difflib
from pathlib import Path
from typing import Any

import torch.nn as nn

from mlproj.errors import ConfigError


def check_backbone_name(name: str) -> None:
    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(f"model.backbone={name} is not a timm model: {hint}(timm.list_models('*pattern*') lists names)")


def local_weights(pretrained_file: str) -> Path:
    """A local path for weights given as a path or any fsspec URL (gs://...), fetched once into a cache."""
    if "://" not in pretrained_file:
        path = Path(pretrained_file).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"model.pretrained_file={pretrained_file} does not exist: give a weights file path or gs:// URL"
            )
        return path
    import fsspec

    cache = {"cache_storage": str(Path.home() / ".cache" / "mlproj" / "weights")}
    try:
        return Path(fsspec.open_local(f"filecache::{pretrained_file}", filecache=cache))
    except (ImportError, ValueError, FileNotFoundError) as error:  # no gcsfs, unknown protocol, no such object
        raise ConfigError(
            f"model.pretrained_file={pretrained_file} cannot be read ({error}): check the URL, and for gs:// install"
            " gcsfs (pip install gcsfs) and set up credentials"
        ) from error


def data_config_for(name: str, image_size: int | None = None, crop_pct: float | None = None) -> dict[str, Any]:
    """timm's evaluation preprocessing for `name` (input size, interpolation, mean, std, crop), from its pretrained
    config alone, so it is decided once before the model or the data exist; `image_size` and `crop_pct` are the
    data's resolution when it sets one. Lists, not tuples: it is stored in checkpoints and model cards as JSON."""
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    check_backbone_name(name)
    pretrained_cfg = get_pretrained_cfg(name)
    config = dict(resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict() if pretrained_cfg else None))
    if image_size is not None:
        config["input_size"] = (3, int(image_size), int(image_size))
    if crop_pct is not None:
        config["crop_pct"] = float(crop_pct)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def create_backbone(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """`timm.create_model` with a one-line error when pretrained weights cannot be had offline."""
    import timm

    check_backbone_name(name)
    overlay = {"file": str(local_weights(pretrained_file))} if pretrained_file else None
    try:
        return timm.create_model(
            name,
            pretrained=pretrained or overlay is not None,
            num_classes=num_classes,
            pretrained_cfg_overlay=overlay,
            **kwargs,
        )
    except Exception as error:
        if not pretrained or overlay is not None:
            raise
        raise ConfigError(
            f"model.pretrained=true but the weights of {name} could not be fetched ({type(error).__name__}):"
            " run once with network access (they are cached), set model.pretrained_file=PATH_OR_GS_URL,"
            " or train from scratch with model.pretrained=false"
        ) from error
