"""SIGTERM and SIGINT from the moment a run dir exists: training stops at a batch boundary with a checkpoint.

Light on purpose: installed before torch and Lightning are imported.
"""

import logging
import signal
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


class StopSignals:
    """SIGTERM and SIGINT handlers, installed as soon as the run dir exists.

    While a trainer fits, a signal only asks Lightning to stop after the current batch (its own SIGTERM notifier
    does the same; SIGINT is turned into it, so Ctrl+C stops cleanly too). Outside fitting the process ends at
    once with SystemExit, which the run record writes down as `interrupted`.
    """

    def __init__(self) -> None:
        self.trainer: Any = None  # set once the run's trainer exists

    def install(self) -> "StopSignals":
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.handle)
        return self

    def handle(self, signum: int, frame: FrameType | None) -> None:
        trainer = self.trainer
        if trainer is not None and trainer.state.fn == "fit" and trainer.state.status == "running":
            log.warning("%s: stopping after this batch, with a checkpoint", signal.Signals(signum).name)
            trainer._signal_connector.received_sigterm = True  # what Lightning's own SIGTERM notifier sets
            return
        raise SystemExit(128 + signum)
