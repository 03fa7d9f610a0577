"""The decode-once pixel cache: every image shrunk to a short side and stored as uint8 in one memory-mapped file.

Training then reads pixels instead of decoding JPEGs. Images keep their aspect ratio, so random resized crops see
the whole picture; when every image comes out the same size the cache is also one (N, H, W, 3) array, which small
data sets hold in memory and batch without loader workers.

On disk, `<cache_dir>/pixels/<key>/` holds `pixels.u8` (all images back to back), `index.npy` (offset, height,
width per image) and `labels.npy`. The key is a fingerprint of the file list (paths, sizes, modification times)
and of the cache parameters; a cache is built in a staging folder and renamed into place (mlproj.storage.atomic_dir),
so a half-written one is never read.
"""

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from mlproj.data.fingerprint import fingerprint
from mlproj.data.transforms import to_rgb
from mlproj.parallel import parallel_map
from mlproj.storage import atomic_dir

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the stored pixels change for the same files and parameters


def load_resized(path: str, short_side: int) -> np.ndarray:
    """HxWx3 uint8, upright, short side at most `short_side` (smaller images keep their size: upscaling adds bytes,
    not detail); JPEGs decode at a reduced scale when that is enough."""
    with Image.open(path) as image:
        width, height = image.size
        factor = min(1.0, short_side / min(width, height))
        image.draft("RGB", (max(1, int(width * factor)), max(1, int(height * factor))))
        image = to_rgb(ImageOps.exif_transpose(image))
        width, height = image.size
        factor = min(1.0, short_side / min(width, height))
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        if size != image.size:
            image = image.resize(size, Image.Resampling.BICUBIC)
        return np.asarray(image, dtype=np.uint8)


def _load_resized(job: tuple[str, int]) -> np.ndarray:
    return load_resized(*job)


class CachedPixels:
    """Images of varying sizes in one flat uint8 file, read as HxWx3 views; indexing with an array gives a subset.

    Pickles as its folder and index only (the memory map reopens in each loader worker), so workers share the
    page cache instead of copying pixels.
    """

    def __init__(self, folder: Path, index: np.ndarray | None = None) -> None:
        self.folder = Path(folder)
        self.index = np.load(self.folder / "index.npy") if index is None else index
        self._flat: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "index": self.index, "_flat": None}

    @property
    def flat(self) -> np.ndarray:
        if self._flat is None:
            # Copy-on-write: writable views (torch wants them), while the file itself is never changed.
            self._flat = np.memmap(self.folder / "pixels.u8", dtype=np.uint8, mode="c")
        return self._flat

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            offset, height, width = (int(v) for v in self.index[key])
            return self.flat[offset : offset + height * width * 3].reshape(height, width, 3)
        return CachedPixels(self.folder, self.index[key])

    @property
    def shape(self) -> tuple[int, ...] | None:
        """(N, H, W, 3) when every image has one size, else None."""
        sizes = np.unique(self.index[:, 1:], axis=0)
        return (len(self), int(sizes[0][0]), int(sizes[0][1]), 3) if len(sizes) == 1 else None

    @property
    def nbytes(self) -> int:
        return int((self.index[:, 1] * self.index[:, 2]).sum()) * 3

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """All images as one (N, H, W, 3) array read into memory; only for a cache of one image size."""
        shape = self.shape
        if shape is None:
            raise ValueError(f"{self.folder} holds images of several sizes")
        stride = int(np.prod(shape[1:]))
        starts = self.index[:, 0]
        if len(self.flat) % stride or np.any(starts % stride):
            return np.stack([self[i] for i in range(len(self))])
        return self.flat.reshape(-1, *shape[1:])[starts // stride]  # fancy indexing copies out of the map


def cache_key(paths: Sequence[str], short_side: int) -> str:
    params = hashlib.sha1(f"pixels-v{CACHE_VERSION}\nshort_side={short_side}\n".encode()).hexdigest()[:8]
    return f"{fingerprint(list(paths))}-{short_side}px-{params}"


def cached_pixels(
    paths: Sequence[str],
    short_side: int,
    cache_dir: Path,
    labels: Sequence[int] | None = None,
    workers: int | None = None,
) -> tuple[CachedPixels, bool]:
    """The pixels of `paths` (in that order), decoded and resized once; returns them and whether they were cached.

    `labels`, when given, are stored beside them (`labels.npy`), so the cache describes a data set on its own.
    """
    folder = cache_dir / "pixels" / cache_key(paths, short_side)
    if (folder / "index.npy").is_file():
        return CachedPixels(folder), True
    index = np.zeros((len(paths), 3), dtype=np.int64)
    with atomic_dir(folder) as staging:  # another process finishing the same cache first keeps theirs
        with (staging / "pixels.u8").open("wb") as out:
            offset = 0
            for i, pixels in enumerate(
                parallel_map(_load_resized, [(str(p), int(short_side)) for p in paths], workers)
            ):
                index[i] = (offset, pixels.shape[0], pixels.shape[1])
                out.write(pixels.tobytes())
                offset += pixels.nbytes
        if labels is not None:
            np.save(staging / "labels.npy", np.asarray(labels, dtype=np.int64))
        np.save(staging / "index.npy", index)  # last: its presence marks a complete cache
    pixels = CachedPixels(folder)
    log.info(
        "cached %d images at short side %d px in %s (%.1f MB)", len(paths), short_side, folder, pixels.nbytes / 1e6
    )
    return pixels, False
