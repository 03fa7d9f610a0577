"""scikit-learn's handwritten digits as PNG class folders: the default data, offline and real.

The 1,797 8x8 images ship inside scikit-learn; they are written once, byte-for-byte the same on
every machine, and then read like any user's folder of images.
"""

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from mlproj.data.imagefolder import ImageFolderDataModule
from mlproj.storage import atomic_dir

log = logging.getLogger(__name__)


def write_digits(root: Path) -> None:
    """Write `root/<digit>/<index>.png` unless it is already there; never leaves a half-written folder."""
    if root.is_dir() and any(root.iterdir()):
        return
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    with atomic_dir(root) as staging:  # another process finishing first keeps theirs
        for index, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
            folder = staging / str(label)
            folder.mkdir(exist_ok=True)
            # Stored, not compressed: deflate's output differs between zlib builds (zlib, zlib-ng in newer Pillow
            # wheels), stored blocks do not, so `make data` gives the bytes data.dvc records on any machine.
            Image.fromarray(image, mode="L").save(folder / f"{index:04d}.png", compress_level=0)
    log.info("wrote %d digit images to %s", len(pixels), root)


class DigitsDataModule(ImageFolderDataModule):
    def prepare_data(self) -> None:
        write_digits(self.root)
