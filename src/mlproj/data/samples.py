"""What a split holds: image sources and integer labels, as numpy arrays.

Numpy arrays rather than Python lists, so forked loader workers share the pages instead of
copying them on access (refcount writes touch every list element).
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from mlproj.data.transforms import to_rgb

if TYPE_CHECKING:
    from mlproj.data.cache import CachedPixels


@dataclass(frozen=True)
class Samples:
    """File paths, HxWx3 uint8 pixels (an array, or the decode-once cache), or both, one per label.

    Pixels, when present, are what is read; paths say where each image came from.
    """

    labels: np.ndarray
    paths: np.ndarray | None = None
    pixels: "np.ndarray | CachedPixels | None" = None
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        for source in (self.paths, self.pixels):
            if source is not None and len(source) != len(self.labels):
                raise ValueError(f"{len(source)} images but {len(self.labels)} labels")
        if self.paths is None and self.pixels is None:
            raise ValueError("Samples needs paths or pixels")

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

    def with_pixels(self, pixels: "np.ndarray | CachedPixels") -> "Samples":
        return Samples(labels=self.labels, paths=self.paths, pixels=pixels, ids=self.ids)

    def array(self, i: int) -> np.ndarray:
        """The i-th image as HxWx3 uint8 RGB: a view of the cache or array when there is one, else decoded."""
        if self.pixels is not None:
            return np.asarray(self.pixels[i])
        return np.array(to_rgb(self.image(i)))

    def image(self, i: int) -> Image.Image:
        """The i-th image, upright (EXIF orientation applied), in its stored mode."""
        if self.pixels is not None:
            return Image.fromarray(np.asarray(self.pixels[i]))
        with Image.open(self.paths[i]) as image:
            image.load()
            return ImageOps.exif_transpose(image)
