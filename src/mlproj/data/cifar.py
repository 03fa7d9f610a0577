"""CIFAR-10 and CIFAR-100 read straight from torchvision's archive batches into uint8 arrays (no per-image files)."""

import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mlproj.data.datamodule import ImageDataModule
from mlproj.data.samples import Samples
from mlproj.data.splits import stratified_split
from mlproj.errors import ConfigError
from mlproj.knobs import checked


class CIFARDataModule(ImageDataModule):
    """The official test set is the test split; val is a stratified share of the training set.

    Subclasses name the archive and its layout; the reading is the same for both data sets.
    """

    url: ClassVar[str]
    md5: ClassVar[str]
    folder_name: ClassVar[str]
    train_batches: ClassVar[tuple[str, ...]]
    test_batch: ClassVar[str]
    meta_file: ClassVar[str]
    label_key: ClassVar[str]
    names_key: ClassVar[str]

    def __init__(
        self,
        root: str,
        download: bool = True,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        **shared: Any,
    ) -> None:
        """`shared`: the settings every ImageDataModule takes (num_workers, augment, split_seed, memory_mb, shards,
        stream_cache_gb, shard_quality, decode)."""
        super().__init__(root, batch_size, **shared)
        self.download = download
        self.val_fraction = float(checked("data.val_fraction", val_fraction))

    @property
    def folder(self) -> Path:
        return self.root / self.folder_name

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_batches, self.test_batch, self.meta_file)

    def prepare_data(self) -> None:
        if self.shards or all((self.folder / name).is_file() for name in self.files):
            return
        if not self.download:
            raise ConfigError(
                f"data.root={self.root} has no complete {self.folder_name}/: set data.download=true"
                f" or unpack {self.url.rsplit('/', 1)[-1]} there"
            )
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(self.url, str(self.root), md5=self.md5)
        except OSError as error:  # URLError, connection refused, no route: all OSError
            raise ConfigError(
                f"could not download {self.folder_name} into data.root={self.root} ({error}): check the network,"
                f" or put {self.folder_name}/ (from {self.url}) there"
            ) from error

    def read_batch(self, name: str) -> Samples:
        """HxWxC uint8 pixels and labels of one pickled batch file; ids say which file and row."""
        with (self.folder / name).open("rb") as handle:
            batch = pickle.load(handle, encoding="latin1")
        pixels = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(batch[self.label_key], dtype=np.int64)
        ids = np.char.add(f"{self.folder_name}/{name}/", np.arange(len(labels)).astype(np.str_))
        return Samples(labels=labels, pixels=np.ascontiguousarray(pixels), ids=ids)

    def load_splits(self) -> tuple[dict[str, Samples], list[str]]:
        for name in self.files:
            if not (self.folder / name).is_file():
                raise ConfigError(
                    f"data.root={self.root} lacks {self.folder_name}/{name}: set data.download=true"
                    " or unpack the archive there"
                )
        with (self.folder / self.meta_file).open("rb") as handle:
            classes = list(pickle.load(handle, encoding="latin1")[self.names_key])
        parts = [self.read_batch(name) for name in self.train_batches]
        train = Samples(
            labels=np.concatenate([p.labels for p in parts]),
            pixels=np.concatenate([p.pixels for p in parts]),
            ids=np.concatenate([p.ids for p in parts]),
        )
        index = stratified_split(train.labels, {"val": self.val_fraction}, self.split_seed)
        splits = {"train": train.subset(index["train"]), "val": train.subset(index["val"])}
        splits["test"] = self.read_batch(self.test_batch)
        return splits, classes


class CIFAR100DataModule(CIFARDataModule):
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    md5 = "eb9058c3a382ffc7106e4002c42a8d85"
    folder_name = "cifar-100-python"
    train_batches = ("train",)
    test_batch = "test"
    meta_file = "meta"
    label_key = "fine_labels"
    names_key = "fine_label_names"


class CIFAR10DataModule(CIFARDataModule):
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    md5 = "c58f30108f718f92721af3b95e74349a"
    folder_name = "cifar-10-batches-py"
    train_batches = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_batch = "test_batch"
    meta_file = "batches.meta"
    label_key = "labels"
    names_key = "label_names"
