"""Wall time of each epoch (training and its validation), logged as `time/epoch_s`."""

import time

import lightning as L


class EpochTimer(L.Callback):
    """A run resumed mid-epoch gets no epoch start: its first epoch is timed from the resume (the time before the
    stop is not known here)."""

    def __init__(self) -> None:
        self.started = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("time/epoch_s", time.perf_counter() - self.started, on_step=False, on_epoch=True)
