"""Puts what eval and predict need beyond weights into every checkpoint: data config, versions."""

from typing import Any

import lightning as L

METADATA_KEY = "mlproj"


class CheckpointMetadata(L.Callback):
    def __init__(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[METADATA_KEY] = self.metadata
