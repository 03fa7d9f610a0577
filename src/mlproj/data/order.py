"""The order images are drawn in, and their random draws, as functions of (seed, epoch, position) alone.

A run stopped mid-epoch and resumed must continue with the very next image and give it the same crop it would
have had: permutations come from (seed, epoch), loader workers reseed per image, and the sampler can skip the
images a resumed epoch already trained on. Nothing here draws from the global random state at iterator creation.
"""

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler, get_worker_info


def run_seed() -> int:
    """The seed `seed_everything` was given (Lightning exports it to every process, loader workers included)."""
    return int(os.environ.get("PL_GLOBAL_SEED", "0"))


class EpochSampler(DistributedSampler):
    """Indices in a permutation of (seed, epoch) (or in order), each yielded as a draw number `epoch * size + i`.

    Datasets read image `draw % size` and seed that image's augmentation with the draw number, so it depends on
    (seed, epoch, index) and not on which worker or how many batches ran before. Lightning calls `set_epoch`.
    `skip` leaves out the first draws of the next epoch iterated, counted over all ranks: the images a resumed
    epoch already trained on.

    Under DDP each rank takes every world-size-th draw of the same permutation (padded to a multiple of the world
    size, as DistributedSampler does). Being a DistributedSampler keeps Lightning from wrapping it in its
    DistributedSamplerWrapper, which would neither pass `set_epoch` on nor keep `skip` in step with the ranks.
    """

    def __init__(self, size: int, shuffle: bool) -> None:  # no super().__init__(): ranks are read when iterating
        self.size = size
        self.shuffle = shuffle
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @staticmethod
    def ranks() -> tuple[int, int]:
        """(rank, world size) of the process group, (0, 1) without one."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        return -(-self.size // self.ranks()[1])

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(run_seed() * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        rank, world = self.ranks()
        total = len(self) * world
        order = order.repeat(-(-total // max(self.size, 1)))[:total]
        skip, self.skip = self.skip, 0
        yield from (order[skip + rank :: world] + self.epoch * self.size).tolist()


@contextmanager
def seeded_for(draw: int) -> Iterator[None]:
    """Python, NumPy and torch seeded for one image (timm's crops and RandAugment use all three).

    In the main process (no loader workers) the global states are put back afterwards, so the device-side
    augmentations keep their own stream.
    """
    saved = None if get_worker_info() is not None else (random.getstate(), np.random.get_state(), torch.get_rng_state())
    seed = (run_seed() * 1_000_003 + draw) % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)  # the CPU generator only: the GPU's keeps its own stream
    try:
        yield
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


def resume_at(trainer: Any) -> None:
    """Point a restored trainer's training loader at the next unseen image of the epoch it stopped in.

    Lightning creates the loader's iterator (and fetches a first batch) before it restores a checkpoint, so the
    iterator is made again here, from a sampler set to the restored epoch and the batches already trained in it. A
    loader streaming shards (one with `resume(epoch, batches_done)`) is set to the same position.
    """
    loader = trainer.train_dataloader
    sampler = getattr(loader, "sampler", None)
    fit_loop = trainer.fit_loop
    epoch = fit_loop.epoch_progress.current.processed
    done = fit_loop.epoch_loop.batch_progress.current.processed  # `completed` lags by one when saved at batch end
    done = done if 0 < done < trainer.num_training_batches else 0
    if isinstance(sampler, EpochSampler):
        sampler.set_epoch(epoch)
        sampler.skip = done * loader.batch_size * trainer.world_size
    elif callable(getattr(loader, "resume", None)):  # streamed from shards: mlproj.data.streaming.ShardLoader
        loader.resume(epoch, done)
    else:
        return
    iter(fit_loop._data_fetcher)  # private, but the only handle on the iterator Lightning already made
