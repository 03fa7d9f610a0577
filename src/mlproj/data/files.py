"""Images given by path, unlabelled: what `predict.py` answers and `mlproj export input=` checks on."""

import logging
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from mlproj.data.datamodule import ImageDataModule
from mlproj.data.samples import Samples
from mlproj.data.scan import IMAGE_EXTENSIONS, list_images
from mlproj.data.validate import check_images
from mlproj.errors import ConfigError

log = logging.getLogger(__name__)

SPLIT = "predict"


def input_images(path: Path, key: str = "input") -> list[Path]:
    """An image file, or the images in a folder (recursively); one line when there are none."""
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ConfigError(f"{key}={path} is not an image file ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return [path]
    if not path.is_dir():
        raise ConfigError(f"{key}={path} does not exist: give an image file or a folder of images")
    images = list_images(path)
    if not images:
        raise ConfigError(f"{key}={path} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return images


class ImageFilesDataModule(ImageDataModule):
    """One split, `predict`, of the files at `input` that decode (the others are rejected by path, as in training);
    batches carry label 0. Evaluation preprocessing, in workers and on the device, as for any DataModule."""

    def __init__(self, input: str, key: str = "input", batch_size: int = 64, num_workers: int = 2) -> None:
        super().__init__(input, batch_size, num_workers)
        self.input = Path(input).expanduser()  # as given: predictions name the files the way the user did
        self.key = key

    def load_splits(self) -> tuple[dict[str, Samples], list[str]]:
        checks = check_images([str(path) for path in input_images(self.input, self.key)])
        self.image_checks = {check.path: check for check in checks}
        for check in checks:
            if check.error:
                log.warning("rejected %s: %s", check.path, check.error)
        paths = [check.path for check in checks if check.error is None]
        if not paths:
            raise ConfigError(f"{self.key}={self.input} holds no image that decodes")
        return {SPLIT: Samples(labels=np.zeros(len(paths), dtype=np.int64), paths=np.asarray(paths))}, []

    @property
    def paths(self) -> list[str]:
        return [str(path) for path in self.splits[SPLIT].paths]

    def predict_dataloader(self) -> DataLoader:
        return self._loader(SPLIT, train=False)
