"""Surviving preemption: stop signals end training at a batch boundary with a checkpoint of the exact state.

Spot VMs and Vertex AI send SIGTERM, people press Ctrl+C, and SIGKILL comes without warning. So `last.ckpt` is
written every `every_n_steps` steps, at the end of every epoch's training and when a stop signal arrives; each
holds the random states too, and the data order depends on (seed, epoch, position) only (mlproj.data.order), so a
resumed run continues exactly where the checkpoint left off.
"""

import logging
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mlproj.checkpoints import LAST
from mlproj.data.order import resume_at
from mlproj.data.shard_format import ShardReadError
from mlproj.stop_signals import stop_agreed

log = logging.getLogger(__name__)

RNG_KEY = "mlproj_rng"


def rng_states() -> dict[str, Any]:
    """Every random state a training step draws from, in types `torch.load(weights_only=True)` accepts."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.copy()), int(position), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in states["python"]))
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy(), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class Preemption(L.Callback):
    """Writes `<dirpath>/last.ckpt` every `every_n_steps` optimizer steps (0: never), after each epoch's last
    training batch and on a stop signal; stores the random states in every checkpoint and restores them when
    training resumes."""

    def __init__(self, dirpath: str, every_n_steps: int = 100) -> None:
        self.dirpath = dirpath
        self.every_n_steps = int(every_n_steps)
        self._restored: dict[str, Any] | None = None  # the checkpoint being resumed from, until training starts
        self._saved_at = -1

    @property
    def last_path(self) -> str:
        return f"{self.dirpath.rstrip('/')}/{LAST}"

    def save(self, trainer: L.Trainer) -> None:
        if trainer.global_step != self._saved_at:
            trainer.save_checkpoint(self.last_path)
            self._saved_at = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        stopping = stop_agreed(trainer)  # under DDP a collective: every rank calls it after every batch
        periodic = self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0
        if periodic or stopping or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The finished state (last validation done, epoch counters advanced), which a longer run resumes from.

        Written whether or not a stop came in between: Lightning's ModelCheckpoint writes `last.ckpt` here only in a
        process that has not saved one yet, so without this a resumed run would end with a different file than the
        same run left alone. A stop signal never reaches here (it ends fit through on_exception).
        """
        trainer.save_checkpoint(self.last_path)
        self._saved_at = trainer.global_step

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """A stop during validation: the checkpoint after the epoch's last batch is already there.

        A shard that cannot be read mid-epoch fails while the next training batch is fetched, so the loops hold
        exactly the batches done: that position is saved, and the same command with ckpt_path=last continues there
        once the shard is fixed. Under DDP the other ranks are not at a barrier, so the last periodic checkpoint
        stands instead.
        """
        if isinstance(exception, SIGTERMException) and trainer.is_global_zero:
            log.warning("stopped by a signal; resume with the same command and ckpt_path=last (%s)", self.last_path)
        if isinstance(exception, ShardReadError) and trainer.training and trainer.world_size == 1:
            self.save(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = rng_states()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._restored = checkpoint

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After sanity checks and set-up, right before the first resumed batch draws anything: the data order
        continues where the checkpoint stopped, and the random states are those it saved."""
        if self._restored is not None:
            resume_at(trainer)
            if RNG_KEY in self._restored:
                set_rng_states(self._restored[RNG_KEY])
            self._restored = None
        self._saved_at = trainer.global_step
