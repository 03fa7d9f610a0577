"""What a split holds: image sources and integer labels, as numpy arrays.

Numpy arrays rather than Python lists, so forked loader workers share the pages instead of
copying them on access (refcount writes touch every list element).
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps


@dataclass(frozen=True)
class Samples:
    """Either file paths or in-memory HxWxC uint8 pixels, one per label."""

    labels: np.ndarray
    paths: np.ndarray | None = None
    pixels: np.ndarray | None = None
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.paths is None) == (self.pixels is None):
            raise ValueError("Samples needs exactly one of paths or pixels")
        if len(self.source) != len(self.labels):
            raise ValueError(f"{len(self.source)} images but {len(self.labels)} labels")

    @property
    def source(self) -> np.ndarray:
        return self.paths if self.paths is not None else self.pixels

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "Samples":
        return Samples(
            labels=self.labels[index],
            paths=None if self.paths is None else self.paths[index],
            pixels=None if self.pixels is None else self.pixels[index],
            ids=None if self.ids is None else self.ids[index],
        )

    def describe(self, i: int) -> str:
        """A manifest entry: the file path, or the id of an in-memory image (e.g. `train/123`)."""
        if self.paths is not None:
            return str(self.paths[i])
        return str(self.ids[i]) if self.ids is not None else f"#{i}"

    def image(self, i: int) -> Image.Image:
        """The i-th image, upright (EXIF orientation applied), in its stored mode."""
        if self.pixels is not None:
            return Image.fromarray(self.pixels[i])
        with Image.open(self.paths[i]) as image:
            image.load()
            return ImageOps.exif_transpose(image)
