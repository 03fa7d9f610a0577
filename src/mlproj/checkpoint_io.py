"""Writing checkpoints so that a kill at any moment leaves a readable one behind."""

from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mlproj.checkpoints import LAST, PREVIOUS
from mlproj.storage import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Each checkpoint is written whole or not at all (mlproj.storage.atomic_write); the `last.ckpt` being
    replaced is kept as `last.prev.ckpt`, so a truncated or unreadable newest one still has a predecessor.
    Local paths and fsspec URLs (gs://) take the same path.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        url = str(path)
        keep = PREVIOUS if url.endswith(f"/{LAST}") else None
        atomic_write(url, lambda handle: torch.save(checkpoint, handle), keep_previous_as=keep)
