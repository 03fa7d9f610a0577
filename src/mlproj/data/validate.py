"""Does every file decode? Checked up front, in parallel processes, so a bad file is rejected by path
instead of killing a run mid-epoch.
"""

import csv
import errno
import hashlib
import io
import logging
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from mlproj.data.fingerprint import fingerprint
from mlproj.data.samples import Samples
from mlproj.parallel import SERIAL_BELOW, parallel_map
from mlproj.storage import write_csv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageCheck:
    """What decoding one file found: its upright size and content hash, or why it is rejected."""

    path: str
    width: int = 0
    height: int = 0
    size: int = 0
    digest: str = ""
    error: str | None = None


def decode_whole(data: bytes) -> tuple[Image.Image | None, str | None]:
    """The image fully decoded (not just the header: truncation only shows when the pixels are read) and upright, or
    why it is refused. One decode serves both the check and the pixels: `mlproj serve` answers from this image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                return ImageOps.exif_transpose(image), None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return None, f"over the decompression-bomb limit ({error})"
    except UnidentifiedImageError:
        return None, "not an image Pillow can read"
    except (OSError, SyntaxError, ValueError) as error:
        return None, f"truncated or corrupt ({error})"


def check_image(path: str) -> ImageCheck:
    """The file decoded whole; its verdicts are recorded per file list (`checked_images`): a change to them bumps
    mlproj.data.fingerprint.CHECKS_VERSION, so recorded checks are redone.
    """
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
    except PermissionError:
        return ImageCheck(path, size=size, error="unreadable: permission denied")
    except OSError as error:
        return ImageCheck(path, size=size, error=f"truncated or corrupt ({error})")
    upright, error = decode_whole(data)
    if upright is None:
        return ImageCheck(path, size=size, error=error)
    width, height = upright.size
    return ImageCheck(path, width, height, size, hashlib.sha1(data).hexdigest())


def check_images(
    paths: Iterable[str], workers: int | None = None, serial_below: int = SERIAL_BELOW
) -> list[ImageCheck]:
    """Checks in the order given, spread over `workers` processes (all cores by default)."""
    return list(parallel_map(check_image, paths, workers, serial_below))


def read_checks(record: Path) -> list[ImageCheck]:
    with record.open(newline="", encoding="utf-8") as handle:
        return [
            ImageCheck(
                row["path"],
                int(row["width"] or 0),
                int(row["height"] or 0),
                int(row["size"] or 0),
                row["digest"],
                row["error"] or None,
            )
            for row in csv.DictReader(handle)
        ]


def checked_images(
    paths: list[str], cache_dir: Path | None, workers: int | None = None
) -> tuple[list[ImageCheck], bool]:
    """Every file's check, decoded once per version of the file list: unchanged files are not decoded again.

    Returns the checks and whether they came from `cache_dir` (the record of an earlier run or `mlproj prepare`).
    """
    if cache_dir is None:
        return check_images(paths, workers), False
    record = cache_dir / "checks" / f"{fingerprint(paths)}.csv"
    if record.is_file():
        return read_checks(record), True
    checks = check_images(paths, workers)
    fields = ("path", "width", "height", "size", "digest", "error")
    write_csv(record, fields, ([getattr(c, f) or "" for f in fields] for c in checks))
    return checks, False


def drop_undecodable(
    per_class: dict[str, list[str]], cache_dir: Path | None = None
) -> tuple[dict[str, ImageCheck], bool]:
    """Remove files that do not decode from `per_class` (in place), one `rejected PATH: REASON` line each.

    Returns every file's check, rejected ones included (for the manifest, the report and duplicate search),
    and whether the checks were already recorded in `cache_dir`.
    """
    found, reused = checked_images([p for paths in per_class.values() for p in paths], cache_dir)
    checks = {c.path: c for c in found}
    for check in checks.values():
        if check.error:
            log.warning("rejected %s: %s", check.path, check.error)
    for name in list(per_class):
        per_class[name] = [p for p in per_class[name] if checks[p].error is None]
    return checks, reused


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
