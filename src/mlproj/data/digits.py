"""scikit-learn's handwritten digits as PNG class folders: the default data, offline and real.

The 1,797 8x8 images ship inside scikit-learn; they are written once, byte-for-byte the same on
every machine, and then read like any user's folder of images.
"""

import logging
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from mlproj.data.imagefolder import ImageFolderDataModule

log = logging.getLogger(__name__)


def write_digits(root: Path) -> None:
    """Write `root/<digit>/<index>.png` unless it is already there; never leaves a half-written folder."""
    if root.is_dir() and any(root.iterdir()):
        return
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    staging = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    for index, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
        folder = staging / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        # Stored, not compressed: deflate's output differs between zlib builds (zlib, zlib-ng in newer Pillow
        # wheels), stored blocks do not, so `make data` gives the bytes data.dvc records on any machine.
        Image.fromarray(image, mode="L").save(folder / f"{index:04d}.png", compress_level=0)
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(root)
        log.info("wrote %d digit images to %s", len(pixels), root)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another process finished first
        if not root.is_dir():
            raise


class DigitsDataModule(ImageFolderDataModule):
    def prepare_data(self) -> None:
        write_digits(self.root)
