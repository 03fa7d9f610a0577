"""Any folder of images: class folders (split here) or train/, val/ and optional test/ folders."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlproj.data.datamodule import ImageDataModule
from mlproj.data.samples import Samples
from mlproj.data.scan import check_root, is_presplit, scan_class_folders
from mlproj.data.splits import check_fraction, stratified_split
from mlproj.data.validate import warn_cross_split_duplicates
from mlproj.errors import ConfigError


class ImageFolderDataModule(ImageDataModule):
    def __init__(
        self,
        root: str,
        batch_size: int = 64,
        num_workers: int = 2,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 42,
        image_size: int | None = None,
        crop_pct: float | None = None,
        augment: Mapping[str, Any] | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__(root, batch_size, num_workers, image_size, crop_pct, augment, split_seed)
        self.validate = validate
        self.fractions = {
            "val": check_fraction("data.val_fraction", val_fraction),
            "test": check_fraction("data.test_fraction", test_fraction),
        }
        if sum(self.fractions.values()) >= 1.0:
            raise ConfigError(
                f"data.val_fraction + data.test_fraction = {sum(self.fractions.values()):g} leaves no training images:"
                " keep their sum below 1"
            )

    def image_root(self) -> Path:
        """The folder the splits live in; subclasses point into a data set's own layout."""
        return self.root

    def load_splits(self) -> tuple[dict[str, Samples], list[str]]:
        """Pre-split folders are used as given; a missing val/ is cut from train/ by data.val_fraction."""
        root = self.image_root()
        check_root(root)
        if not is_presplit(root):
            everything, classes, self.image_checks = scan_class_folders(root, validate=self.validate)
            index = stratified_split(everything.labels, self.fractions, self.split_seed)
            splits = {name: everything.subset(idx) for name, idx in index.items()}
        else:
            train, classes, self.image_checks = scan_class_folders(root / "train", "data.root (train/)", self.validate)
            splits = {"train": train}
            if not (root / "val").is_dir():
                index = stratified_split(train.labels, {"val": self.fractions["val"]}, self.split_seed)
                splits = {name: train.subset(idx) for name, idx in index.items()}
            for name in ("val", "test"):
                if (root / name).is_dir():
                    splits[name], _, checks = scan_class_folders(
                        root / name, f"data.root ({name}/)", self.validate, classes
                    )
                    self.image_checks.update(checks)
        warn_cross_split_duplicates(splits, classes, self.image_checks)
        return splits, classes
