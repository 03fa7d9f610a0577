"""CIFAR-100 read straight from torchvision's archive batches into uint8 arrays (no per-image files)."""

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlproj.data.datamodule import ImageDataModule
from mlproj.data.samples import Samples
from mlproj.data.splits import check_fraction, stratified_split
from mlproj.errors import ConfigError

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
FOLDER = "cifar-100-python"


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """HxWxC uint8 pixels and fine labels of one pickled batch file."""
    with path.open("rb") as handle:
        batch = pickle.load(handle, encoding="latin1")
    pixels = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(pixels), np.asarray(batch["fine_labels"], dtype=np.int64)


def batch_ids(batch: str, count: int) -> np.ndarray:
    """`train/123`: the batch file and row an image came from, for the manifest."""
    return np.char.add(f"{FOLDER}/{batch}/", np.arange(count).astype(np.str_))


class CIFAR100DataModule(ImageDataModule):
    """The official test set is the test split; val is a stratified share of the training set."""

    def __init__(
        self,
        root: str,
        download: bool = True,
        batch_size: int = 128,
        num_workers: int = 2,
        val_fraction: float = 0.1,
        split_seed: int = 42,
        image_size: int | None = 32,
        crop_pct: float | None = None,
        augment: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(root, batch_size, num_workers, image_size, crop_pct, augment, split_seed)
        self.download = download
        self.val_fraction = check_fraction("data.val_fraction", val_fraction)

    @property
    def folder(self) -> Path:
        return self.root / FOLDER

    def prepare_data(self) -> None:
        if (self.folder / "train").is_file():
            return
        if not self.download:
            raise ConfigError(
                f"data.root={self.root} has no {FOLDER}/: set data.download=true"
                " or unpack cifar-100-python.tar.gz there"
            )
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(URL, str(self.root), md5=MD5)
        except OSError as error:  # URLError, connection refused, no route: all OSError
            raise ConfigError(
                f"could not download CIFAR-100 into data.root={self.root} ({error}): check the network,"
                f" or put {FOLDER}/ (from {URL}) there"
            ) from error

    def load_splits(self) -> tuple[dict[str, Samples], list[str]]:
        for name in ("train", "test", "meta"):
            if not (self.folder / name).is_file():
                raise ConfigError(
                    f"data.root={self.root} lacks {FOLDER}/{name}: set data.download=true or unpack the archive there"
                )
        with (self.folder / "meta").open("rb") as handle:
            classes = list(pickle.load(handle, encoding="latin1")["fine_label_names"])
        train_pixels, train_labels = read_batch(self.folder / "train")
        test_pixels, test_labels = read_batch(self.folder / "test")
        train = Samples(labels=train_labels, pixels=train_pixels, ids=batch_ids("train", len(train_labels)))
        index = stratified_split(train_labels, {"val": self.val_fraction}, self.split_seed)
        splits = {"train": train.subset(index["train"]), "val": train.subset(index["val"])}
        splits["test"] = Samples(labels=test_labels, pixels=test_pixels, ids=batch_ids("test", len(test_labels)))
        return splits, classes
