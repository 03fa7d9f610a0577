"""The DataModule all data sources share: loaders, transforms (in workers and on the device), manifest; subclasses
only find samples. With `shards`, every source reads a shard set instead (mlproj.data.streaming)."""

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mlproj.data.order import EpochSampler, seeded_for
from mlproj.data.samples import Samples
from mlproj.data.shard_format import MANIFEST, ShardIndex, join, read_index
from mlproj.data.splits import write_manifest, write_rejected
from mlproj.data.transforms import build_batch_transform, build_transform, needs_pil
from mlproj.data.validate import ImageCheck
from mlproj.errors import ConfigError
from mlproj.knobs import checked
from mlproj.storage import is_remote

if TYPE_CHECKING:
    from types import ModuleType

log = logging.getLogger(__name__)


class ImageDataset(Dataset):
    """One image at a time through `transform` (HxWx3 uint8 in, uint8 CHW tensor out), in loader workers."""

    def __init__(self, samples: Samples, transform: Callable) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, draw: int) -> tuple[torch.Tensor, int]:
        """`draw` is the sampler's draw number (see EpochSampler): image `draw % len`, randomness seeded by it."""
        i = draw % len(self.samples)
        with seeded_for(draw):
            return self.transform(self.samples.array(i)), int(self.samples.labels[i])


class TensorBatches(Dataset):
    """uint8 (N, C, H, W) pixels held in memory: a batch is one indexing operation, with no workers and no per-image
    Python (the DataLoader hands `__getitems__` the whole batch of indices)."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor) -> None:
        self.pixels = pixels
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pixels[i], self.labels[i]

    def __getitems__(self, draws: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(draws) % len(self.labels)
        return self.pixels[index], self.labels[index]


def whole_batch(batch: Any) -> Any:
    """The collate function of TensorBatches: its `__getitems__` already returns the batch."""
    return batch


class ImageDataModule(L.LightningDataModule):
    """Built in three explicit steps: construct (settings only, checked), `load()` (find, check and cache the
    samples: bad data fails here), `configure_preprocessing(data_config)` (the model's timm data config, resolved once
    by mlproj.build). Splits come from `load_splits()`; a missing test split falls back to val (see `test_split`).

    With `shards` (a shard set's URL, see mlproj.data.shard_format) the samples come from there instead: `load()`
    reads only the set's index, and the loaders stream each rank's part (mlproj.data.streaming), with a local chunk
    cache of at most `stream_cache_gb` and JPEGs decoded where `decode` says (auto: on the device when it is CUDA).
    `shard_quality` is the JPEG quality `mlproj prepare shards=URL` writes with.
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 64,
        num_workers: int = 2,
        augment: Mapping[str, Any] | None = None,
        split_seed: int = 42,
        memory_mb: float = 2048,
        shards: str | None = None,
        stream_cache_gb: float = 50,
        shard_quality: int = 90,
        decode: str = "auto",
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser().absolute()
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.augment = dict(augment or {})
        self.split_seed = int(split_seed)
        self.memory_mb = float(memory_mb)
        self.shards = shard_url(shards) if shards else None
        self.stream_cache_gb = float(checked("data.stream_cache_gb", stream_cache_gb))
        self.shard_quality = int(checked("data.shard_quality", shard_quality))
        self.decode = checked("data.decode", decode)
        self.shard_index: ShardIndex | None = None  # the shard set's index, once loaded
        self.stream_cache_dir: Path | None = None  # where streamed chunks are cached (LitData's default when None)
        self._cache_bounds: dict[str, int | None] | None = None  # bytes of chunk cache per split (None: unbounded)
        self._splits: dict[str, Samples] | None = None
        self._classes: list[str] | None = None
        self.data_config: dict[str, Any] | None = None  # the model's timm data config (configure_preprocessing)
        self._transforms: dict[str, Callable] = {}  # per-image loader transforms, "train" and "eval"
        self._in_memory: dict[str, torch.Tensor] = {}  # uint8 (N, C, H, W) per split, when batched in memory
        self.batch_transforms: dict[str, nn.Module] = {}  # what the model does on the device, "train" and "eval"
        self.batched: dict[str, bool] = {}  # per stage: whole uint8 batches from memory, or one image per worker call
        # What decoding each file found (size, hash, or why it was rejected), when the source validates.
        self.image_checks: dict[str, ImageCheck] = {}
        self.checks_reused = False  # True when every check came from an earlier run's record
        self.cache_reused = False  # True when no pixels had to be decoded into the cache
        self.pixel_cache: Path | None = None  # the decode-once cache the splits read, if any

    def load_splits(self) -> tuple[dict[str, Samples], list[str]]:
        """Return {"train", "val"[, "test"]} samples and the class names, or raise ConfigError."""
        raise NotImplementedError

    def load(self) -> "ImageDataModule":
        """Find the samples (scanning, checking every file decodes, building the pixel cache); once per object.

        With shards, only the shard set's index is read (classes, split sizes and class counts): no image is listed,
        downloaded or decoded here.
        """
        if self._splits is None:
            self._splits, self._classes = self.load_shards() if self.shards else self.load_splits()
        return self

    def load_shards(self) -> tuple[dict[str, Any], list[str]]:
        self.shard_index = read_index(self.shards)
        cache_dir = str(self.stream_cache_dir) if self.stream_cache_dir else None
        return self.streaming().shard_splits(self.shard_index, cache_dir), list(self.shard_index.classes)

    def streaming(self) -> "ModuleType":
        """mlproj.data.streaming, which needs LitData (the `stream` extra): imported only when shards are read."""
        try:
            from mlproj.data import streaming
        except ModuleNotFoundError as error:
            if not (error.name or "").startswith("litdata"):
                raise
            raise ConfigError(
                f"data.shards={self.shards} needs LitData, which is not installed: pip install -e '.[stream]'"
            ) from error
        return streaming

    def _loaded(self) -> tuple[dict[str, Samples], list[str]]:
        if self._splits is None or self._classes is None:
            raise RuntimeError(f"{type(self).__name__}.load() must run before its splits and classes are read")
        return self._splits, self._classes

    @property
    def splits(self) -> dict[str, Samples]:
        return self._loaded()[0]

    @property
    def classes(self) -> list[str]:
        return self._loaded()[1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def test_split(self) -> str:
        return "test" if "test" in self.splits else "val"

    @property
    def rejected(self) -> list[ImageCheck]:
        self._loaded()
        return [check for check in self.image_checks.values() if check.error]

    def write_manifest(self, path: Path) -> None:
        """The split used (with image sizes when validated) and, beside it, rejected.csv when files were rejected.

        A shard set carries its own manifest: it is not downloaded (it lists every image), only named in the log.
        """
        if self.shards:
            log.info(
                "images listed in %s (the shard set's manifest), not copied to %s", join(self.shards, MANIFEST), path
            )
            return
        write_manifest(path, self.splits, self.classes, self.root, self.image_checks)
        if self.rejected:
            write_rejected(path.with_name("rejected.csv"), self.rejected, self.root)

    def fits_in_memory(self) -> bool:
        """Whether every split's pixels are at hand (array or cache), share one image size and fit `memory_mb`."""
        if self.shards:
            return False
        pixels = [samples.pixels for samples in self.splits.values()]
        shapes = {None if p is None or p.shape is None else tuple(p.shape[1:]) for p in pixels}
        return None not in shapes and len(shapes) == 1 and sum(p.nbytes for p in pixels) <= self.memory_mb * 2**20

    def configure_preprocessing(self, data_config: Mapping[str, Any]) -> None:
        """Split the model's preprocessing (timm data config) between the loader and the device.

        Data held in memory is sent as whole uint8 batches and the device crops, flips and normalises. Otherwise the
        loader workers crop each image (and apply the PIL-only augmentations, if any) and send uint8 crops; flips,
        normalisation and random erasing still happen on the device (`on_after_batch_transfer`).
        """
        self.data_config = dict(data_config)
        if self.shards:
            self.configure_streaming(data_config)
            return
        fits = self.fits_in_memory()
        self.batched = {"train": fits and not needs_pil(self.augment), "eval": fits}
        self._in_memory = {
            name: torch.from_numpy(np.asarray(samples.pixels).transpose(0, 3, 1, 2).copy())
            for name, samples in self.splits.items()
            if self.batched["train" if name == "train" else "eval"]
        }
        self._transforms = {"train": build_transform(data_config, self.augment), "eval": build_transform(data_config)}
        self.batch_transforms = {
            "train": build_batch_transform(data_config, self.augment, crop_here=self.batched["train"]),
            "eval": build_batch_transform(data_config, None, crop_here=self.batched["eval"]),
        }

    def configure_streaming(self, data_config: Mapping[str, Any]) -> None:
        """Shards: the workers decode (unless the device does) and crop each image; the device gets the batches."""
        from mlproj.data.batch_transforms import eval_scale_size

        size = int(data_config["input_size"][-1])
        needed = eval_scale_size(size, data_config.get("crop_pct"))
        short_side = self.shard_index.short_side if self.shard_index else None
        if short_side is not None and short_side < needed:
            log.warning(
                "data.shards=%s holds images at short side %d, below the model's eval resize (%d px for %d px input):"
                " images lose detail; write shards with a short side of at least %d",
                self.shards,
                short_side,
                needed,
                size,
                needed,
            )
        self.batched = {"train": False, "eval": False}
        self._in_memory = {}
        self._transforms = {"train": build_transform(data_config, self.augment), "eval": build_transform(data_config)}
        batch = {
            "train": build_batch_transform(data_config, self.augment, crop_here=False),
            "eval": build_batch_transform(data_config, None, crop_here=False),
        }
        ShardBatchTransform = self.streaming().ShardBatchTransform  # noqa: N806
        self.batch_transforms = {stage: ShardBatchTransform(self._transforms[stage], batch[stage]) for stage in batch}

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Loaders send uint8 (or, from shards, JPEG bytes); decoding, conversion, normalisation and the batch
        augmentations (crops, flips, erasing) run here, on the accelerator, and the model receives normalised float
        batches. From shards, a test pass records which images it saw, in order (for the evaluation outputs)."""
        images, labels = batch
        stage = "train" if self.trainer is not None and self.trainer.training else "eval"
        if self.shards and self.trainer is not None and self.trainer.testing:
            self.splits[self.test_split].record(images.indices, images.paths)
        return self.batch_transforms[stage].to(labels.device)(images), labels

    def _loader(self, split: str, train: bool) -> DataLoader:
        if not self._transforms:
            raise RuntimeError("call configure_preprocessing(data_config) before asking for loaders")
        if self.shards:
            return self._shard_loader(split, train)
        samples = self.splits[split]
        stage = "train" if train else "eval"
        options: dict[str, Any] = {
            "batch_size": self.batch_size,
            "sampler": EpochSampler(len(samples), shuffle=train),
            "drop_last": train and len(samples) > self.batch_size,
            "pin_memory": torch.cuda.is_available(),
            "generator": torch.Generator(),  # starting an epoch draws nothing from the global random state
        }
        if self.batched[stage]:
            labels = torch.from_numpy(np.asarray(samples.labels, dtype=np.int64))
            return DataLoader(TensorBatches(self._in_memory[split], labels), collate_fn=whole_batch, **options)
        return DataLoader(
            ImageDataset(samples, self._transforms[stage]),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **options,
        )

    def _shard_loader(self, split: str, train: bool) -> DataLoader:
        """One split streamed (mlproj.data.streaming): train shuffled from (seed, epoch), dropping the last partial
        global batch unless the split holds less than one; val and test in order, every image once."""
        streaming = self.streaming()
        samples = self.splits[split]
        world_size = self.trainer.world_size if self.trainer is not None else 1
        stage = "train" if train else "eval"
        on_device = streaming.device_decode(self.decode, self.accelerator())
        if on_device and train and needs_pil(self.augment):
            log.info(
                "data.decode=%s: training images are decoded in the workers (their augmentations need PIL)", self.decode
            )
            on_device = False
        if self._cache_bounds is None:
            self._cache_bounds = streaming.cache_bounds(self.splits, self.stream_cache_gb, self.num_workers)
        dataset = streaming.ShardDataset(
            samples.url,
            len(samples),
            self._transforms[stage],
            decode_here=not on_device,
            shuffle=train,
            drop_last=train and len(samples) >= self.batch_size * world_size,
            cache_dir=str(self.stream_cache_dir) if self.stream_cache_dir else None,
            max_cache_size=self._cache_bounds[split],
        )
        return streaming.ShardLoader(
            dataset,
            epoch_source=self.trainer_epoch,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator(),  # starting an epoch draws nothing from the global random state
        )

    def accelerator(self) -> str:
        """The device type batches are trained on: the trainer's, else CUDA when there is one."""
        if self.trainer is not None:
            return self.trainer.strategy.root_device.type
        return "cuda" if torch.cuda.is_available() else "cpu"

    def trainer_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        if self.shards:
            self.splits[self.test_split].tested = []
        return self._loader(self.test_split, train=False)

    def split_sizes(self) -> dict[str, int]:
        return {name: len(samples) for name, samples in self.splits.items()}

    def class_counts(self, split: str) -> np.ndarray:
        if self.shards:
            return self.splits[split].class_counts
        return np.bincount(self.splits[split].labels, minlength=self.num_classes)


def shard_url(shards: str) -> str:
    """A bucket URL as given, a local folder made absolute (loader workers and resumed runs resolve it alike)."""
    shards = str(shards).rstrip("/")
    return shards if is_remote(shards) else str(Path(shards).expanduser().absolute())
