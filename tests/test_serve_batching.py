"""The batch queue of `mlproj serve` on its own: which images share a forward pass, and when a pass waits.

The forward pass here is a plain function that records the batches it is given: the queue's decisions are the
subject, and the servers in test_serve.py check the same queue with real models over HTTP.
"""

import threading
import time
from collections.abc import Iterator

import pytest
import torch

from mlproj.serve.batching import Batcher, Batching


class Recorder:
    """A forward pass that doubles its input and remembers each batch's size; `gate` holds it until released."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        self.gate.wait(10)
        self.sizes.append(len(crops))
        return crops.float() * 2


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def start(recorder: Recorder) -> Iterator:
    started = []

    def build(**settings: float) -> Batcher:
        batcher = Batcher(recorder, Batching(**settings), on_batch=lambda size: None)
        batcher.start()
        started.append(batcher)
        return batcher

    yield build
    for batcher in started:
        batcher.stop()


def images(n: int, first: int = 0) -> torch.Tensor:
    return torch.arange(first, first + n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()


def test_queued_images_share_a_pass_up_to_the_batch_size_and_each_gets_its_own_row(start, recorder) -> None:
    batcher = start(max_batch_size=4, max_delay_s=0.0, workers=1)
    recorder.gate.clear()  # the worker takes the first image, then everything else queues behind it
    answers = batcher.submit(images(1))
    time.sleep(0.2)
    answers += batcher.submit(images(9, first=1))
    recorder.gate.set()
    rows = [answer.result(10) for answer in answers]
    assert recorder.sizes == [1, 4, 4, 1]
    assert [int(row[0, 0, 0]) for row in rows] == [2 * i for i in range(10)]


def test_a_lone_request_does_not_wait_for_the_delay(start, recorder) -> None:
    batcher = start(max_batch_size=16, max_delay_s=5.0, workers=1)
    began = time.monotonic()
    batcher.submit(images(1))[0].result(10)
    assert time.monotonic() - began < 1.0
    assert recorder.sizes == [1]


def test_a_pass_waits_for_images_still_being_decoded(start, recorder) -> None:
    batcher = start(max_batch_size=16, max_delay_s=5.0, workers=1)
    batcher.decoding = 1  # a request is being decoded: the pass waits for it, up to the delay
    first = batcher.submit(images(1))
    time.sleep(0.2)
    batcher.decoding = 0
    second = batcher.submit(images(1, first=1))
    assert [int(answer.result(10)[0, 0, 0]) for answer in first + second] == [0, 2]
    assert recorder.sizes == [2]


def test_a_request_cancelled_while_queued_is_left_out_of_the_pass(start, recorder) -> None:
    batcher = start(max_batch_size=8, max_delay_s=0.0, workers=1)
    recorder.gate.clear()
    batcher.submit(images(1))
    time.sleep(0.2)
    gone, kept = batcher.submit(images(2, first=1))
    assert gone.cancel()  # what a request that timed out does with its images
    recorder.gate.set()
    assert int(kept.result(10)[0, 0, 0]) == 4
    assert recorder.sizes == [1, 1]


def test_a_failing_pass_fails_only_its_own_requests(start, recorder) -> None:
    def fail_on_seven(crops: torch.Tensor) -> torch.Tensor:
        if (crops == 7).any():
            raise RuntimeError("the model broke")
        return recorder(crops)

    batcher = start(max_batch_size=1, max_delay_s=0.0, workers=1)
    batcher.run = fail_on_seven
    broken, fine = batcher.submit(torch.cat([images(1, first=7), images(1, first=3)]))
    with pytest.raises(RuntimeError, match="the model broke"):
        broken.result(10)
    assert int(fine.result(10)[0, 0, 0]) == 6


def test_workers_run_passes_at_once(start, recorder) -> None:
    batcher = start(max_batch_size=1, max_delay_s=0.0, workers=2)
    recorder.gate.clear()
    answers = batcher.submit(images(2))
    time.sleep(0.2)
    assert batcher.waiting() == 0  # both images were taken, one by each worker, while the first pass is held
    recorder.gate.set()
    assert [int(answer.result(10)[0, 0, 0]) for answer in answers] == [0, 2]
