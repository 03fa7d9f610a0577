"""Writing checkpoints so that a kill at any moment leaves a readable one behind."""

import os
from typing import Any

import fsspec
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mlproj.checkpoints import LAST, PREVIOUS


class AtomicCheckpointIO(TorchCheckpointIO):
    """Each checkpoint is written under a temporary name and then renamed into place; the `last.ckpt` being
    replaced is kept as `last.prev.ckpt`, so a truncated or unreadable newest one still has a predecessor.
    Local paths and fsspec URLs (gs://) take the same path; on a bucket a rename is a copy of a complete object.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        fs, target = fsspec.core.url_to_fs(str(path))
        fs.makedirs(fs._parent(target), exist_ok=True)
        staging = f"{target}.tmp-{os.getpid()}"
        with fs.open(staging, "wb") as handle:
            torch.save(checkpoint, handle)
        if target.endswith(f"/{LAST}") and fs.exists(target):
            fs.mv(target, target[: -len(LAST)] + PREVIOUS)
        fs.mv(staging, target)
