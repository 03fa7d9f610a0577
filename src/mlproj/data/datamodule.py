"""The DataModule all data sources share: loaders, transforms, manifest; subclasses only find samples."""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mlproj.data.samples import Samples
from mlproj.data.splits import write_manifest, write_rejected
from mlproj.data.transforms import build_transform
from mlproj.data.validate import ImageCheck


class ImageDataset(Dataset):
    def __init__(self, samples: Samples, transform: Callable) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.samples.image(i)), int(self.samples.labels[i])


class ImageDataModule(L.LightningDataModule):
    """Splits come from `load_splits()`; a missing test split falls back to val (see `test_split`)."""

    def __init__(
        self,
        root: str,
        batch_size: int = 64,
        num_workers: int = 2,
        image_size: int | None = None,
        crop_pct: float | None = None,
        augment: Mapping[str, Any] | None = None,
        split_seed: int = 42,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser().absolute()
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.image_size = image_size
        self.crop_pct = crop_pct
        self.augment = dict(augment or {})
        self.split_seed = int(split_seed)
        self._splits: dict[str, Samples] | None = None
        self._classes: list[str] | None = None
        self._transforms: dict[str, Callable] = {}
        # What decoding each file found (size, hash, or why it was rejected), when the source validates.
        self.image_checks: dict[str, ImageCheck] = {}
        self.checks_reused = False  # True when every check came from an earlier run's record

    def load_splits(self) -> tuple[dict[str, Samples], list[str]]:
        """Return {"train", "val"[, "test"]} samples and the class names, or raise ConfigError."""
        raise NotImplementedError

    def _load(self) -> None:
        if self._splits is None:
            self._splits, self._classes = self.load_splits()

    @property
    def splits(self) -> dict[str, Samples]:
        self._load()
        return self._splits

    @property
    def classes(self) -> list[str]:
        self._load()
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def test_split(self) -> str:
        return "test" if "test" in self.splits else "val"

    @property
    def rejected(self) -> list[ImageCheck]:
        self._load()
        return [check for check in self.image_checks.values() if check.error]

    def write_manifest(self, path: Path) -> None:
        """The split used (with image sizes when validated) and, beside it, rejected.csv when files were rejected."""
        write_manifest(path, self.splits, self.classes, self.root, self.image_checks)
        if self.rejected:
            write_rejected(path.with_name("rejected.csv"), self.rejected, self.root)

    def configure_preprocessing(self, data_config: Mapping[str, Any]) -> None:
        """Use the model's input size, interpolation and normalisation (timm data config)."""
        self._transforms = {"train": build_transform(data_config, self.augment), "eval": build_transform(data_config)}

    def _loader(self, split: str, train: bool) -> DataLoader:
        if not self._transforms:
            raise RuntimeError("call configure_preprocessing(model.data_config) before asking for loaders")
        samples = self.splits[split]
        dataset = ImageDataset(samples, self._transforms["train" if train else "eval"])
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train and len(samples) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_split, train=False)

    def split_sizes(self) -> dict[str, int]:
        return {name: len(samples) for name, samples in self.splits.items()}

    def class_counts(self, split: str) -> np.ndarray:
        return np.bincount(self.splits[split].labels, minlength=self.num_classes)
