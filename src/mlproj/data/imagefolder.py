"""Any folder of images: class folders (split here) or train/, val/ and optional test/ folders."""

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlproj.data.datamodule import ImageDataModule
from mlproj.data.samples import Samples
from mlproj.data.scan import Validation, check_root, is_presplit, scan_class_folders
from mlproj.data.splits import stratified_split
from mlproj.data.validate import warn_cross_split_duplicates
from mlproj.errors import ConfigError
from mlproj.knobs import checked

log = logging.getLogger(__name__)


class ImageFolderDataModule(ImageDataModule):
    def __init__(
        self,
        root: str,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        validate: bool = True,
        cache_dir: str | None = None,
        cache_short_side: int | None = None,
        **shared: Any,
    ) -> None:
        """`shared`: the settings every ImageDataModule takes (num_workers, augment, split_seed, memory_mb, shards,
        stream_cache_gb, shard_quality, decode)."""
        super().__init__(root, batch_size, **shared)
        self.cache_dir = Path(cache_dir).expanduser().absolute() if cache_dir else None
        self.stream_cache_dir = self.cache_dir / "shards" if self.cache_dir else None
        self.validation = Validation(validate, self.cache_dir)
        checked("data.cache_short_side", cache_short_side)
        if cache_short_side is not None and self.cache_dir is None:
            raise ConfigError("data.cache_short_side is set but data.cache_dir is null: set data.cache_dir=DIR")
        self.cache_short_side = int(cache_short_side) if cache_short_side is not None else None
        self.cache_reused = self.cache_short_side is None  # no cache: nothing to build
        self.fractions = {
            "val": float(checked("data.val_fraction", val_fraction)),
            "test": float(checked("data.test_fraction", test_fraction)),
        }
        if sum(self.fractions.values()) >= 1.0:
            raise ConfigError(
                f"data.val_fraction + data.test_fraction = {sum(self.fractions.values()):g} leaves no training images:"
                " keep their sum below 1"
            )

    def configure_preprocessing(self, data_config: Mapping[str, Any]) -> None:
        from mlproj.data.batch_transforms import eval_scale_size

        size = int(data_config["input_size"][-1])
        needed = eval_scale_size(size, data_config.get("crop_pct"))
        if self.cache_short_side is not None and self.cache_short_side < needed and not self.shards:
            log.warning(
                "data.cache_short_side=%d is below the model's eval resize (%d px for %d px input): images lose"
                " detail; set data.cache_short_side=%d",
                self.cache_short_side,
                needed,
                size,
                needed,
            )
        super().configure_preprocessing(data_config)

    def image_root(self) -> Path:
        """The folder the splits live in; subclasses point into a data set's own layout."""
        return self.root

    def load_splits(self) -> tuple[dict[str, Samples], list[str]]:
        """Pre-split folders are used as given; a missing val/ is cut from train/ by data.val_fraction."""
        root = self.image_root()
        check_root(root)
        if not is_presplit(root):
            scans = [scan_class_folders(root, validation=self.validation)]
            index = stratified_split(scans[0].samples.labels, self.fractions, self.split_seed)
            splits = {name: scans[0].samples.subset(idx) for name, idx in index.items()}
        else:
            scans = [scan_class_folders(root / "train", "data.root (train/)", self.validation)]
            splits = {"train": scans[0].samples}
            if not (root / "val").is_dir():
                index = stratified_split(splits["train"].labels, {"val": self.fractions["val"]}, self.split_seed)
                splits = {name: splits["train"].subset(idx) for name, idx in index.items()}
            for name in ("val", "test"):
                if (root / name).is_dir():
                    scans.append(
                        scan_class_folders(root / name, f"data.root ({name}/)", self.validation, scans[0].classes)
                    )
                    splits[name] = scans[-1].samples
        classes = scans[0].classes
        self.image_checks = {path: check for scan in scans for path, check in scan.checks.items()}
        self.checks_reused = all(scan.checks_reused for scan in scans)
        warn_cross_split_duplicates(splits, classes, self.image_checks)
        return self.decode_once(splits), classes

    def decode_once(self, splits: dict[str, Samples]) -> dict[str, Samples]:
        """The splits reading from the pixel cache (built now unless the file list and short side are unchanged)."""
        if self.cache_short_side is None:
            return splits
        from mlproj.data.cache import cached_pixels

        paths = np.concatenate([samples.paths for samples in splits.values()])
        labels = np.concatenate([samples.labels for samples in splits.values()])
        pixels, self.cache_reused = cached_pixels(list(paths), self.cache_short_side, self.cache_dir, labels)
        self.pixel_cache = pixels.folder
        ends = np.cumsum([len(samples) for samples in splits.values()])
        return {
            name: samples.with_pixels(pixels[np.arange(end - len(samples), end)])
            for (name, samples), end in zip(splits.items(), ends, strict=True)
        }
