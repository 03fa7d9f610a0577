"""uvicorn's server with the shutdown Cloud Run and Kubernetes expect: on SIGTERM, refuse new requests with 503,
let the requests in flight finish within a grace period, then exit 0.

uvicorn on its own stops listening at once and, once done, raises the signal again, so the process ends by SIGTERM
(status 143) and clients that connect meanwhile are refused instead of told to retry. A second SIGTERM, or Ctrl+C,
still stops the uvicorn way.
"""

import logging
import signal
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from mlproj.serve.app import Lifecycle

log = logging.getLogger("uvicorn.error")  # uvicorn configures it: these lines show beside its own


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, grace_s: float) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.grace_s = grace_s
        self.stopping_since: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.stopping_since is None:
            self.stopping_since = time.monotonic()
            self.lifecycle.stopping = True
            log.info("SIGTERM: refusing new requests, finishing those in flight (at most %g s)", self.grace_s)
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        """Called every 0.1 s by uvicorn's main loop; True stops it (uvicorn then closes connections and exits)."""
        if self.stopping_since is not None:
            elapsed = time.monotonic() - self.stopping_since
            if self.lifecycle.in_flight == 0 or elapsed > self.grace_s:
                if self.lifecycle.in_flight:
                    log.warning("grace period over: dropping %d requests in flight", self.lifecycle.in_flight)
                return True
        return await super().on_tick(counter)


def serve(app: FastAPI, host: str, port: int, grace_s: float) -> None:
    """Runs until stopped; uvicorn then gives connections still open 1 s more (the drain came first)."""
    config = uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=1)
    DrainingServer(config, app.state.lifecycle, grace_s).run()
