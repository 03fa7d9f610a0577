"""Reading a shard set (mlproj.data.shard_format) as it streams from a bucket or folder, with LitData.

Each split is a LitData optimized dataset. Every rank, and every loader worker in it, reads only its own chunks
(LitData assigns them from the rank, the worker and the shuffle), so no process lists, downloads or decodes the
whole set before the first step, and the local chunk cache stays within `data.stream_cache_gb`.

What an epoch sees:

- train: the chunks, then the images inside each chunk, shuffled from (seed, epoch) (LitData's `seed` and epoch).
  Only whole global batches are trained: the last `N mod (batch_size x ranks)` images of each epoch's shuffled order
  are left out of that epoch (a different few each epoch, since the order changes), and every other image is seen
  exactly once across all ranks and workers. A split smaller than one global batch is trained whole.
- val and test: in shard order, every image exactly once across all ranks. LitData gives each rank the same number
  of whole batches and the last rank the images left over, so it may run a few batches more (nothing in validation
  waits on the other ranks per batch); a split smaller than `batch_size x ranks` leaves a rank without a batch,
  which Lightning refuses: lower data.batch_size for such a split.

Every image's random crop is seeded by (seed, epoch, its index in the split), the draw number the decode-once cache
path uses too (mlproj.data.order): the same image gets the same crop whichever rank, worker or batch reads it, and a
run resumed mid-epoch continues with the very images, and crops, it would have had (`ShardLoader.resume`).

JPEGs are decoded in the loader workers (`data.decode=workers`) or, batched, on the device with
`torchvision.io.decode_jpeg` (nvJPEG on a GPU; `data.decode=device`), where `ShardBatchTransform` crops each image
with its own draw before the batch transforms. PNGs (images stored losslessly) are always decoded in the workers.
"""

import json
import math
import multiprocessing
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset
from litdata.streaming.sampler import ChunkedIndex
from torch import nn
from torch.utils.data import get_worker_info
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from mlproj.data.batch_transforms import ImageTransform
from mlproj.data.order import run_seed, seeded_for
from mlproj.data.shard_format import ShardIndex, ShardReadError, join
from mlproj.errors import ConfigError
from mlproj.storage import is_remote, read_text

JPEG_MAGIC = b"\xff\xd8"
CHUNKS_PER_WORKER = 4  # chunks a loader worker may hold at once: the one read, the ones prefetched, one being freed
LITDATA_INDEX = "index.json"
CHUNK_NAME = re.compile(r"chunk-\d+-\d+\.bin")  # how LitData names chunk files


def is_jpeg(data: torch.Tensor) -> bool:
    return bytes(data[:2].tolist()) == JPEG_MAGIC


def decode(data: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) RGB from stored bytes: JPEG or PNG (any other format torchvision reads, too)."""
    if is_jpeg(data):
        return decode_jpeg(data, mode=ImageReadMode.RGB)
    return decode_image(data, mode=ImageReadMode.RGB)


def crop_decoded(transform: ImageTransform, image: torch.Tensor) -> torch.Tensor:
    """The loader's per-image transform on a decoded (3, H, W) uint8 image, wherever it is.

    On the CPU it is exactly the transform the cache path runs (HxWx3 pixels in, uint8 crop out); on an accelerator
    the crop runs in float (antialiased resizing of uint8 is a CPU-only kernel), rounded back to uint8. There the
    random draws of the `pad` crop come from the accelerator's generator, not the seeded CPU one.
    """
    pixels = image.permute(1, 2, 0).contiguous()
    if image.device.type == "cpu":
        return transform(pixels.numpy())
    cropped = transform.crop(pixels.permute(2, 0, 1)[None].float())[0]
    return cropped.round_().clamp_(0, 255).to(torch.uint8)


def undecodable(image: str, error: RuntimeError) -> ShardReadError:
    reason = " ".join(str(error).split())
    return ShardReadError(
        f"data.shards: {image} does not decode ({reason}): write the shards again with `mlproj prepare`, then resume"
        " with the same command and ckpt_path=last (the checkpoints are kept)"
    )


class ShardImages:
    """A batch of images from shards as the loader sends it (the labels travel beside it).

    Either `crops`, uint8 (N, 3, S, S) made in the workers, or `parts`: per image its uint8 crop or, for a JPEG left
    to the device, its bytes, with `draws`, the draw number its crop is seeded by. `indices` (each image's index in
    its split) and `paths` say which images they are. Lightning moves tensors to the device but not this object: the
    bytes must stay on the CPU for `decode_jpeg`; `ShardBatchTransform` decodes and moves it.
    """

    def __init__(
        self,
        crops: torch.Tensor | None,
        parts: list[torch.Tensor] | None,
        draws: list[int],
        indices: torch.Tensor,
        paths: list[str],
    ) -> None:
        self.crops, self.parts, self.draws, self.indices, self.paths = crops, parts, draws, indices, paths

    def __len__(self) -> int:
        return len(self.indices)

    def pin_memory(self) -> "ShardImages":
        crops = None if self.crops is None else self.crops.pin_memory()
        return ShardImages(crops, self.parts, self.draws, self.indices, self.paths)

    def decoded(self, transform: ImageTransform, device: torch.device) -> torch.Tensor:
        """(N, 3, S, S) on `device`: the JPEGs decoded there in one call and each cropped with its own draw."""
        if self.crops is not None:
            return self.crops.to(device, non_blocking=True)
        assert self.parts is not None
        slots = [k for k, part in enumerate(self.parts) if part.dim() == 1]
        try:
            images = decode_jpeg([self.parts[k] for k in slots], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            for k in slots:  # find the image that does not decode, and name it
                try:
                    decode_jpeg(self.parts[k], mode=ImageReadMode.RGB, device=device)
                except RuntimeError as error:
                    raise undecodable(self.paths[k], error) from error
            raise
        parts = [part.to(device, non_blocking=True) if part.dim() == 3 else part for part in self.parts]
        for k, image in zip(slots, images, strict=True):
            with seeded_for(self.draws[k]):
                parts[k] = crop_decoded(transform, image)
        return torch.stack(parts)


def collate(items: Sequence[tuple[torch.Tensor, int, int, int, str]]) -> tuple[ShardImages, torch.Tensor]:
    """(images, labels), the images as ShardImages: stacked crops when the workers decoded them all."""
    images, labels, draws, indices, paths = zip(*items, strict=True)
    whole = all(image.dim() == 3 for image in images)
    return (
        ShardImages(
            torch.stack(images) if whole else None,
            None if whole else list(images),
            list(draws),
            torch.tensor(indices, dtype=torch.int64),
            list(paths),
        ),
        torch.tensor(labels, dtype=torch.int64),
    )


class ShardDataset(StreamingDataset):
    """One split of a shard set, streamed: each image comes out as its uint8 crop, decoded and cropped in the worker
    (seeded by its draw number), or, for JPEGs left to the device, as its bytes; with its label, draw, index and path.
    """

    def __init__(
        self,
        url: str,
        size: int,
        transform: ImageTransform,
        decode_here: bool,
        shuffle: bool,
        drop_last: bool,
        cache_dir: str | None,
        max_cache_size: int | None,
    ) -> None:
        super().__init__(
            url,
            cache_dir=cache_dir,
            shuffle=shuffle,
            drop_last=drop_last,
            seed=run_seed(),
            max_cache_size=max_cache_size,
        )
        self.url = url
        self.size = size
        self.image_transform = transform
        self.decode_here = decode_here
        # Loader workers persist across epochs (LitData would start them afresh for every epoch: LitData issue
        # #641), so the epoch the main process sets must reach them: through shared memory, as forked workers
        # hold a copy of this object.
        self.shared_epoch = multiprocessing.Value("i", self.current_epoch, lock=False)
        self.iterated_here = False

    def set_epoch(self, current_epoch: int) -> None:
        super().set_epoch(current_epoch)
        self.shared_epoch.value = self.current_epoch

    def __iter__(self) -> "ShardDataset":
        if get_worker_info() is not None:
            if self.iterated_here:  # a persistent worker's next epoch: the main process's, never a stale resume
                self.reset_state_dict()
                self.current_epoch = self.shared_epoch.value
            self.iterated_here = True
        return super().__iter__()

    def __getitem__(self, index: Any) -> Any:
        if not isinstance(index, ChunkedIndex):  # random access by position: the stored sample as it is
            return super().__getitem__(index)
        try:
            item = super().__getitem__(index)
        except Exception as error:  # the download failed (the storage client retries what is transient first)
            chunk, reason = self.failure(error, index.chunk_index)
            raise ShardReadError(
                f"data.shards: chunk {chunk} of {self.url} could not be read ({reason}): check the bucket, then"
                " resume with the same command and ckpt_path=last (the checkpoints are kept)"
            ) from error
        i = int(index.index)
        draw = (self.current_epoch - 1) * self.size + i  # LitData counts epochs from 1, Lightning from 0
        data = torch.frombuffer(bytearray(item["image"]), dtype=torch.uint8)
        image = data  # JPEG bytes for the device, unless decoded and cropped here
        if self.decode_here or not is_jpeg(data):
            try:
                decoded = decode(data)
            except RuntimeError as error:
                self.forget_chunk(index.chunk_index)
                where = f"{item['path']} in chunk {self.chunk_name(index.chunk_index)} of {self.url}"
                raise undecodable(where, error) from error
            with seeded_for(draw):
                image = crop_decoded(self.image_transform, decoded)
        return image, int(item["label"]), draw, i, str(item["path"])

    def failure(self, error: BaseException, chunk_index: int) -> tuple[str, str]:
        """(the chunk that failed, why in one line): LitData's download thread may fail on a chunk prefetched for
        later while this one is read, so the name is taken from the first cause that names a chunk."""
        causes = [error]
        while causes[-1].__cause__ is not None and len(causes) < 10:
            causes.append(causes[-1].__cause__)
        root = causes[-1]
        reason = " ".join(f"{type(root).__name__}: {str(root).splitlines()[0] if str(root) else ''}".split())
        for cause in reversed(causes):
            named = CHUNK_NAME.search(unquote(str(cause)))
            if named:
                return named.group(0), reason[:300]
        return self.chunk_name(chunk_index), reason[:300]

    def forget_chunk(self, chunk_index: int) -> None:
        """Drop a chunk holding a broken image from the local chunk cache, so that the run resumed once the bucket's
        copy is fixed downloads that copy. A local shard set is read in place: nothing to drop."""
        if not is_remote(self.url):
            return
        try:
            cached = self.cache._reader.config.download_filepath(chunk_index)  # type: ignore[union-attr]
        except (AttributeError, IndexError, KeyError, TypeError):
            return
        Path(cached).unlink(missing_ok=True)

    def chunk_name(self, chunk_index: int) -> str:
        try:
            return self.cache._reader.config._chunks[chunk_index]["filename"]  # type: ignore[union-attr]
        except (AttributeError, IndexError, KeyError, TypeError):
            return f"#{chunk_index}"


class ShardLoader(StreamingDataLoader):
    """LitData's loader, with its epoch taken from the trainer (`epoch_source()`, counted from 0) rather than from
    how often it was iterated (a learning-rate search or a sanity check iterates it too), and a `resume` that
    continues at any batch of any epoch."""

    def __init__(self, dataset: ShardDataset, epoch_source: Callable[[], int], **options: Any) -> None:
        super().__init__(dataset, collate_fn=collate, **options)
        self.epoch_source = epoch_source

    def __iter__(self) -> Iterator[Any]:
        if self.restore and self.current_epoch != self.epoch_source() + 1:
            # The resumed epoch is over: Lightning stops at the loader's length, never exhausting it.
            self.restore = False
        if not self.restore:
            self.current_epoch = self.epoch_source()  # LitData adds one as the epoch starts: it counts from 1
        try:
            yield from super().__iter__()
        except ShardReadError as error:  # raised in a worker: keep the message's last line, not the traceback
            raise ShardReadError(str(error).strip().splitlines()[-1].split("ShardReadError: ", 1)[-1]) from None

    def resume(self, epoch: int, batches_done: int) -> None:
        """Continue with batch `batches_done` of `epoch` (at its start when 0), whatever Lightning restored.

        Lightning stores this loader's `state_dict()` in checkpoints, but loads it only into a loader made after the
        checkpoint was restored; the learning-rate schedule asks for the number of steps first, which makes the
        loader before, so a resumed run would start its epoch over (measured here: LitData issue #775). The
        Preemption callback calls this when training starts (mlproj.data.order.resume_at) with the position the
        loops restored: with whole batches per worker, taken in turn, `batches_done * batch_size` images into the
        epoch on this rank.
        """
        self._iterator = None  # running workers hold the old position: the next epoch starts new ones
        self.dataset.reset_state_dict()
        self.restore = False
        if batches_done <= 0:
            return
        self.dataset.set_epoch(epoch + 1)
        yielded = batches_done * self.batch_size
        state = {
            "dataset": self.dataset.state_dict(yielded, self.num_workers, self.batch_size),
            "current_epoch": epoch + 1,
            "num_samples_yielded": yielded,
            "latest_worker_idx": (batches_done - 1) % max(self.num_workers, 1),
        }
        self.load_state_dict(state)


class ShardBatchTransform(nn.Module):
    """The device's part for batches from shards: decode the JPEGs the workers left (batched, where the batch is) and
    crop each with its own draw, then the usual batch transform (flips, normalisation, erasing)."""

    def __init__(self, image_transform: ImageTransform, batch_transform: nn.Module) -> None:
        super().__init__()
        self.image_transform = image_transform
        self.batch_transform = batch_transform

    def forward(self, images: "ShardImages | torch.Tensor") -> torch.Tensor:
        if isinstance(images, ShardImages):
            device = next(self.batch_transform.buffers()).device
            images = images.decoded(self.image_transform, device)
        return self.batch_transform(images)


class ShardSplit:
    """A split of a shard set as the DataModule's `splits` hold it: its size and class counts come from the index,
    its images stay where they are until a loader streams them.

    For the evaluation outputs, `describe(i)` and `array(i)` answer for the i-th image of the last test pass, in the
    order the loader sent them (`record`), as a Samples' do for its i-th image.
    """

    paths = None  # the recorded paths are relative to the data root already

    def __init__(self, url: str, size: int, class_counts: Sequence[int], cache_dir: str | None = None) -> None:
        self.url = url
        self.size = int(size)
        self.class_counts = np.asarray(class_counts, dtype=np.int64)
        self.cache_dir = cache_dir  # where chunks read for `array` are kept (LitData's default when None)
        self.tested: list[tuple[int, str]] = []
        self._reader: StreamingDataset | None = None

    def __len__(self) -> int:
        return self.size

    def record(self, indices: torch.Tensor, paths: Sequence[str]) -> None:
        self.tested.extend(zip(indices.tolist(), paths, strict=True))

    def describe(self, i: int) -> str:
        return self.tested[i][1]

    def array(self, i: int) -> np.ndarray:
        """The i-th tested image as HxWx3 uint8 RGB, read from its chunk."""
        if self._reader is None:
            self._reader = StreamingDataset(self.url, cache_dir=self.cache_dir)
        item = self._reader[self.tested[i][0]]
        return decode(torch.frombuffer(bytearray(item["image"]), dtype=torch.uint8)).permute(1, 2, 0).numpy()


def shard_splits(index: ShardIndex, cache_dir: str | None) -> dict[str, ShardSplit]:
    return {
        name: ShardSplit(index.split_url(name), size, index.class_counts.get(name, []), cache_dir)
        for name, size in index.splits.items()
        if size > 0
    }


def device_decode(mode: str, accelerator: str | None) -> bool:
    """`data.decode`: auto decodes JPEGs on the device when training on CUDA."""
    if mode == "auto":
        return accelerator == "cuda"
    return mode == "device"


def chunk_bytes(url: str) -> list[int]:
    """The sizes of a split's chunks, from LitData's index.json (the one file a StreamingDataset reads first)."""
    text = read_text(join(url, LITDATA_INDEX))
    if text is None:
        raise ConfigError(f"data.shards: {url} holds no {LITDATA_INDEX}: write the shards again with `mlproj prepare`")
    return [int(chunk["chunk_bytes"]) for chunk in json.loads(text)["chunks"]]


def cache_bounds(splits: Mapping[str, ShardSplit], stream_cache_gb: float, num_workers: int) -> dict[str, int | None]:
    """The local chunk cache of each remote split, in bytes: `data.stream_cache_gb` shared by image count.

    A split that fits its share whole gets no bound (nothing is ever evicted). A share below what the loader holds
    at once (`CHUNKS_PER_WORKER` of the largest chunks per worker) would stall the loader: that is a ConfigError.
    """
    total = sum(len(split) for split in splits.values())
    bounds: dict[str, int | None] = {}
    for name, split in splits.items():
        if not is_remote(split.url):
            bounds[name] = None  # LitData reads local chunks in place
            continue
        share = int(stream_cache_gb * 2**30 * len(split) / total)
        sizes = chunk_bytes(split.url)
        needed = CHUNKS_PER_WORKER * max(num_workers, 1) * max(sizes, default=0)
        if share >= sum(sizes):
            bounds[name] = None
        elif share < needed:
            raise ConfigError(
                f"data.stream_cache_gb={stream_cache_gb:g} leaves {share / 2**30:.3g} GB for the {name} split of"
                f" data.shards, below the {needed / 2**30:.3g} GB its {max(num_workers, 1)} loader workers hold at"
                f" once ({CHUNKS_PER_WORKER} chunks of up to {max(sizes) / 2**20:.0f} MB each): raise"
                f" data.stream_cache_gb to at least {math.ceil(needed * total / len(split) / 2**30 * 10) / 10:g}"
            )
        else:
            bounds[name] = share
    return bounds
