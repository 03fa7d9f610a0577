"""Dynamic batching: the images of requests that arrive together run as one forward pass.

The idea of TorchServe's `max_batch_delay` and Triton's dynamic batching, inside one process: request handlers put
their cropped images on one queue; each of `workers` threads takes what is queued (at most `max_batch_size` images),
waits up to `max_delay_s` for more only while other requests are still being decoded, runs one forward pass and hands
each image its row. A lone request never waits. PyTorch and ONNX Runtime release the GIL while they compute, so the
workers' forward passes run at once, each on its own intra-op threads.
"""

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batching:
    max_batch_size: int = 16  # images per forward pass
    max_delay_s: float = 0.005  # how long a pass may wait for images still being decoded
    workers: int = 1  # forward passes at once


@dataclass(frozen=True)
class Pending:
    crop: "torch.Tensor"  # uint8 (3, H, W)
    answer: Future  # its row of the batch's output


class Batcher:
    """The queue between request handlers (the event loop) and the forward passes (worker threads)."""

    def __init__(
        self,
        run: "Callable[[torch.Tensor], torch.Tensor]",
        batching: Batching,
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.run = run  # uint8 crops (N, 3, H, W) -> N rows
        self.batching = batching
        self.on_batch = on_batch  # told the size of every forward pass (the batch-size metric)
        self.queue: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self.decoding = 0  # images of requests still being decoded; changed by the event loop thread only
        self.threads: list[threading.Thread] = []

    def waiting(self) -> int:
        """Images queued for a forward pass (a stop marker may count as one while the server stops)."""
        return self.queue.qsize()

    def start(self) -> None:
        self.threads = [
            threading.Thread(target=self.work, name=f"mlproj-batch-{i}", daemon=True)
            for i in range(self.batching.workers)
        ]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join()

    def submit(self, crops: "torch.Tensor") -> list[Future]:
        """One future per image of `crops` (N, 3, H, W), each resolved with its row of a forward pass."""
        pending = [Pending(crop, Future()) for crop in crops]
        for item in pending:
            self.queue.put(item)
        return [item.answer for item in pending]

    def next_batch(self) -> list[Pending] | None:
        """What is queued, up to the batch size; None once the server stops."""
        first = self.queue.get()
        if first is None:
            return None
        batch = [first] if first.answer.set_running_or_notify_cancel() else []
        deadline = time.monotonic() + self.batching.max_delay_s
        while len(batch) < self.batching.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = self.queue.get(timeout=remaining) if self.decoding and remaining > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if item is None:  # stopping: leave the marker for this thread's next call
                self.queue.put(None)
                break
            if item.answer.set_running_or_notify_cancel():  # False: its request timed out while queued
                batch.append(item)
        return batch

    def work(self) -> None:
        import torch

        while (batch := self.next_batch()) is not None:
            if not batch:
                continue
            self.on_batch(len(batch))
            try:
                rows = self.run(torch.stack([item.crop for item in batch]))
            except Exception as error:  # a model failure answers every request of the pass with a 500
                log.exception("forward pass of %d images failed", len(batch))
                for item in batch:
                    item.answer.set_exception(error)
                continue
            for item, row in zip(batch, rows, strict=True):
                item.answer.set_result(row)
