"""SIGTERM and SIGINT from the moment a run dir exists: training stops at a batch boundary with a checkpoint.

Light on purpose: installed before torch and Lightning are imported.
"""

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

_requested = False  # a stop asked of this DDP rank, not yet agreed on by all ranks (stop_agreed)


class StopSignals:
    """SIGTERM and SIGINT handlers, installed as soon as the run dir exists.

    While a trainer fits, a signal only asks Lightning to stop after the current batch (SIGINT too, so Ctrl+C
    stops cleanly). Outside fitting the process ends at once: SIGINT as Python's own KeyboardInterrupt (the command
    then ends as `interrupted`, exit status 130, its run dir removed if nothing but Hydra's files is in it), SIGTERM
    as SystemExit(143); the run record writes either down as `interrupted`. Under DDP the signal may reach one rank,
    or all at different moments, so it is only noted here and every rank stops after the same batch (`stop_agreed`,
    called by the preemption callback).
    """

    def __init__(self) -> None:
        self._trainer: Any = None
        self.received: int | None = None  # the signal that stopped training: after Ctrl+C the command ends with 130

    @property
    def trainer(self) -> Any:
        return self._trainer

    @trainer.setter
    def trainer(self, trainer: Any) -> None:
        """The run's trainer. Lightning's own SIGTERM notifier is switched off: it runs in the handler chain before
        this one and, under DDP, calls a collective inside the signal handler, which pairs with whatever collective
        another rank is in (a gradient all-reduce, a buffer broadcast) and hangs or garbles both."""
        self._trainer = trainer
        if trainer is not None:
            trainer._signal_connector._sigterm_notifier_fn = _ignore

    def install(self) -> "StopSignals":
        global _requested
        _requested = False
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.handle)
        return self

    @contextmanager
    def ending_commands(self) -> Iterator[None]:
        """Lightning ends a fit stopped by a signal with SystemExit(0) (its SIGTERMException): right for a preempted
        job, which is not a failure. After Ctrl+C the command ends as Python's KeyboardInterrupt instead
        (`interrupted`, exit status 130), so `python train.py && ...` goes no further."""
        try:
            yield
        except SystemExit:
            if self.received == signal.SIGINT:
                raise KeyboardInterrupt from None
            raise

    def handle(self, signum: int, frame: FrameType | None) -> None:
        global _requested
        trainer = self.trainer
        if trainer is not None and trainer.state.fn == "fit" and trainer.state.status == "running":
            log.warning("%s: stopping after this batch, with a checkpoint", signal.Signals(signum).name)
            self.received = signum
            if trainer.world_size > 1:
                _requested = True
            else:
                trainer._signal_connector.received_sigterm = True  # what Lightning's own SIGTERM notifier sets
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Stands in for Lightning's SIGTERM notifier (module level, so a trainer still pickles for ddp_spawn)."""


def stop_agreed(trainer: Any) -> bool:
    """Whether training stops after this batch. Under DDP every rank calls this after every training batch: a stop
    asked of any rank (one small all-reduce) becomes Lightning's `received_sigterm` on all of them at once, so they
    all save the same checkpoint and leave after the same batch. Not during validation, whose ranks may run
    different numbers of batches (a shard split's remainder goes to the last rank): a stop asked then is taken after
    the next training batch, and the checkpoint of the epoch's last training batch is already written."""
    if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(_requested, all=False):
        trainer._signal_connector.received_sigterm = True
    return bool(trainer.received_sigterm)
