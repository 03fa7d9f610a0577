"""Does every file decode? Checked up front, in parallel processes, so a bad file is rejected by path
instead of killing a run mid-epoch.
"""

import errno
import hashlib
import logging
import os
import warnings
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from mlproj.data.samples import Samples

log = logging.getLogger(__name__)

SERIAL_BELOW = 512  # files; under this a process pool costs more than it saves


@dataclass(frozen=True)
class ImageCheck:
    """What decoding one file found: its upright size and content hash, or why it is rejected."""

    path: str
    width: int = 0
    height: int = 0
    size: int = 0
    digest: str = ""
    error: str | None = None


def check_image(path: str) -> ImageCheck:
    """Decode the whole file (not just the header): truncation only shows when the pixels are read."""
    try:
        size = os.stat(path).st_size
    except OSError as error:
        reason = "symlink loop" if error.errno == errno.ELOOP else f"cannot stat: {error.strerror}"
        return ImageCheck(path, error=reason)
    if size == 0:
        return ImageCheck(path, error="empty file (0 bytes)")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                upright = ImageOps.exif_transpose(image)
                width, height = upright.size
    except PermissionError:
        return ImageCheck(path, size=size, error="unreadable: permission denied")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return ImageCheck(path, size=size, error=f"over the decompression-bomb limit ({error})")
    except UnidentifiedImageError:
        return ImageCheck(path, size=size, error="not an image Pillow can read")
    except (OSError, SyntaxError, ValueError) as error:
        return ImageCheck(path, size=size, error=f"truncated or corrupt ({error})")
    return ImageCheck(path, width, height, size, hashlib.sha1(data).hexdigest())


def check_images(
    paths: Iterable[str], workers: int | None = None, serial_below: int = SERIAL_BELOW
) -> list[ImageCheck]:
    """Checks in the order given, spread over `workers` processes (all cores by default)."""
    paths = list(paths)
    workers = workers or os.cpu_count() or 1
    if len(paths) < serial_below or workers == 1:
        return [check_image(p) for p in paths]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(check_image, paths, chunksize=max(1, len(paths) // (workers * 8))))


def drop_undecodable(per_class: dict[str, list[str]], workers: int | None = None) -> dict[str, ImageCheck]:
    """Remove files that do not decode from `per_class` (in place), one `rejected PATH: REASON` line each.

    Returns every file's check, rejected ones included, for the manifest, the report and duplicate search.
    """
    checks = {c.path: c for c in check_images([p for paths in per_class.values() for p in paths], workers)}
    for check in checks.values():
        if check.error:
            log.warning("rejected %s: %s", check.path, check.error)
    for name in list(per_class):
        per_class[name] = [p for p in per_class[name] if checks[p].error is None]
    return checks


def warn_cross_split_duplicates(splits: dict[str, Samples], classes: list[str], checks: dict[str, ImageCheck]) -> None:
    """The same bytes under two labels in two splits: a leak or a labelling mistake the user should see."""
    first_seen: dict[str, tuple[str, str, int]] = {}
    for name, samples in splits.items():
        if samples.paths is None:
            continue
        for path, label in zip(samples.paths, samples.labels, strict=True):
            check = checks.get(str(path))
            if check is None:
                continue
            digest = check.digest
            if digest not in first_seen:
                first_seen[digest] = (name, str(path), int(label))
                continue
            other_split, other_path, other_label = first_seen[digest]
            if other_split != name and other_label != label:
                log.warning(
                    "the same image is %s in %s (%s) and %s in %s (%s)",
                    classes[other_label],
                    other_split,
                    other_path,
                    classes[label],
                    name,
                    path,
                )
