"""Reading and checking checkpoints, local paths and gs:// URLs alike.

Which checkpoint a training run resumes from is mlproj.resume.
"""

import logging
import pickle
import zipfile
from typing import Any

from mlproj import __version__
from mlproj.errors import ConfigError

log = logging.getLogger(__name__)

LAST = "last.ckpt"
PREVIOUS = "last.prev.ckpt"  # the last.ckpt before the newest one (see mlproj.checkpoint_io)


def checkpoint_in(checkpoint_dir: str) -> tuple[str, dict[str, Any]] | None:
    """The newest readable `last.ckpt` in `checkpoint_dir` (any fsspec location) with its contents, or the one
    before it when a kill left the newest truncated or unreadable."""
    import fsspec

    for name in (LAST, PREVIOUS):
        path = f"{checkpoint_dir.rstrip('/')}/{name}"
        fs, local = fsspec.core.url_to_fs(path)
        if not fs.exists(local):
            continue
        try:
            return path, load_checkpoint(path)
        except ConfigError as error:
            log.warning("%s; trying the checkpoint before it", error)
    return None


def load_checkpoint(path: str) -> dict[str, Any]:
    """Read a checkpoint safely (weights_only) from a path or URL; one-line errors for the usual mistakes."""
    import fsspec
    import torch
    from fsspec.implementations.local import LocalFileSystem

    try:
        fs, local = fsspec.core.url_to_fs(path)
        if isinstance(fs, LocalFileSystem):  # memory-mapped: checking class names costs no full read
            return torch.load(local, map_location="cpu", weights_only=True, mmap=True)
        with fs.open(local, "rb") as handle:
            return torch.load(handle, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise ConfigError(
            f"ckpt_path={path} does not exist: give a .ckpt file from a run's checkpoints/ folder"
        ) from error
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise ConfigError(f"ckpt_path={path} is not a readable checkpoint ({str(error).splitlines()[0]})") from error


def checkpoint_classes(checkpoint: dict[str, Any], path: str) -> list[str]:
    """Its class names, once it is known to be an mlproj checkpoint of this version."""
    hparams = checkpoint.get("hyper_parameters") or {}
    if "backbone" not in hparams or "state_dict" not in checkpoint:
        raise ConfigError(f"ckpt_path={path} was not written by mlproj's ImageClassifier (no backbone hyperparameters)")
    written_by = (checkpoint.get("mlproj") or {}).get("version")
    if written_by is not None and written_by != __version__:
        raise ConfigError(
            f"ckpt_path={path} was written by mlproj {written_by}, this is {__version__}:"
            f" use mlproj {written_by} (git checkout its commit) or train again"
        )
    return list(hparams.get("class_names") or [])


def check_state_keys(expected: dict[str, Any], checkpoint: dict[str, Any], path: str) -> None:
    """The checkpoint's weights fit the model built now, or one line naming what is missing or extra."""
    have = set(checkpoint["state_dict"])
    missing, extra = sorted(set(expected) - have), sorted(have - set(expected))
    if missing or extra:
        raise ConfigError(
            f"ckpt_path={path} does not fit this model: {len(missing)} missing ({', '.join(missing[:3])}),"
            f" {len(extra)} unexpected ({', '.join(extra[:3])}) weights: resume with the model config it was"
            " trained with, or start fresh"
        )


def short_list(names: list[str]) -> str:
    return f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''} ({len(names)} classes)"


def check_classes_match(checkpoint_classes: list[str], data_classes: list[str], path: str) -> None:
    if checkpoint_classes and checkpoint_classes != list(data_classes):
        raise ConfigError(
            f"ckpt_path={path} was trained on {short_list(checkpoint_classes)} but the data has"
            f" {short_list(list(data_classes))}: use the data it was trained on (experiment=NAME or data.root=DIR)"
        )
