"""Whole-or-nothing writes to any fsspec location: local folders and gs:// buckets take the same path."""

import os
from collections.abc import Callable
from typing import IO, Any


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def atomic_write(url: str, write: Callable[[IO[bytes]], Any], keep_previous_as: str | None = None) -> None:
    """Write `url` whole or not at all, so a kill at any moment leaves the old file or the new one.

    The bytes go to a temporary name first. Locally that file is then renamed into place. A bucket has no rename:
    the complete temporary object is written first and then copied to its name in one server-side operation, and
    since an object is visible only once whole, the name always points at a complete file. `keep_previous_as`
    keeps the file being replaced under that name in the same folder (copied on a bucket, so `url` never goes
    missing there).
    """
    import fsspec

    fs, target = fsspec.core.url_to_fs(url)
    parent = fs._parent(target)
    fs.makedirs(parent, exist_ok=True)
    staging = f"{target}.tmp-{os.getpid()}"
    with fs.open(staging, "wb") as handle:
        write(handle)
    if keep_previous_as and fs.exists(target):
        keep = fs.copy if is_remote(url) else fs.mv
        keep(target, f"{parent}/{keep_previous_as}")
    fs.mv(staging, target)


def write_text(url: str, text: str) -> None:
    atomic_write(url, lambda handle: handle.write(text.encode()))


def read_text(url: str) -> str | None:
    """The file's text, or None when it is missing or unreadable."""
    import fsspec

    try:
        with fsspec.open(url, "rt") as handle:
            return handle.read()
    except (OSError, ValueError):
        return None
