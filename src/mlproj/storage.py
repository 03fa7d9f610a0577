"""The one write path: every file mlproj writes (CSV, JSON, text, caches, checkpoints) is written whole or not at all.

A kill at any moment leaves the old file or the new one, never half of either, and two processes writing the same
file or folder at once both succeed: each writes under its own temporary name (`.NAME.tmp-PID-TOKEN`, unique per
process and per call) and renames it into place. Local paths use the standard library only (this module is imported
by `mlproj runs`, which must start fast); remote URLs (gs://, any fsspec location) go through fsspec.
"""

import csv
import io
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any


def is_remote(url: str | Path) -> bool:
    url = str(url)
    return "://" in url and not url.startswith("file://")


def local_path(url: str | Path) -> Path:
    return Path(str(url).removeprefix("file://"))


def staging_name(name: str) -> str:
    """A hidden temporary name beside `name`, unique per process and per call: `.NAME.tmp-PID-TOKEN`."""
    return f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def atomic_write(url: str | Path, write: Callable[[IO[bytes]], Any], keep_previous_as: str | None = None) -> None:
    """Write `url` whole or not at all: `write(handle)` fills a temporary file, which then takes the name.

    Locally the temporary file is renamed into place. A bucket has no rename: the complete temporary object is
    written first and then copied to its name in one server-side operation, and since an object is visible only
    once whole, the name always points at a complete file. `keep_previous_as` keeps the file being replaced under
    that name in the same folder, as a second name for it (a hard link; a copy on a bucket or a file system without
    links), so `url` never goes missing: a kill between two renames would otherwise leave only the previous file.
    When `write` fails, the old file is untouched and the temporary ones removed.
    """
    if is_remote(url):
        _atomic_write_remote(str(url), write, keep_previous_as)
        return
    target = local_path(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(staging_name(target.name))
    kept = target.with_name(staging_name(keep_previous_as or target.name))
    try:
        with staging.open("wb") as handle:
            write(handle)
        if keep_previous_as and target.exists():
            try:
                os.link(target, kept)
            except OSError:  # no hard links here (some FUSE mounts)
                shutil.copyfile(target, kept)
            os.replace(kept, target.with_name(keep_previous_as))
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        kept.unlink(missing_ok=True)
        raise


def _atomic_write_remote(url: str, write: Callable[[IO[bytes]], Any], keep_previous_as: str | None) -> None:
    import fsspec

    fs, target = fsspec.core.url_to_fs(url)
    parent = fs._parent(target)
    fs.makedirs(parent, exist_ok=True)
    staging = f"{parent}/{staging_name(target.rsplit('/', 1)[-1])}"
    try:
        with fs.open(staging, "wb") as handle:
            write(handle)
        if keep_previous_as and fs.exists(target):
            fs.copy(target, f"{parent}/{keep_previous_as}")
        fs.mv(staging, target)
    except BaseException:
        with suppress(OSError):  # never written, or already moved
            fs.rm(staging)
        raise


def write_bytes(url: str | Path, data: bytes) -> None:
    atomic_write(url, lambda handle: handle.write(data))


def write_text(url: str | Path, text: str) -> None:
    write_bytes(url, text.encode())


def write_json(url: str | Path, value: Any) -> None:
    """Indented JSON with a final newline; values JSON has no type for (paths, dates) are written as strings."""
    write_text(url, json.dumps(value, indent=2, default=str) + "\n")


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A header line, then one line per row, streamed (rows may be a generator of millions)."""

    def write(handle: IO[bytes]) -> None:
        text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
        try:
            writer = csv.writer(text)
            writer.writerow(header)
            writer.writerows(rows)
        finally:
            text.detach()  # flushes, and leaves `handle` to atomic_write

    atomic_write(path, write)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A staging folder beside `path` to fill; renamed to `path` when the block ends without an exception.

    On an exception the staging folder is removed and the exception goes on. When `path` appeared meanwhile
    (another process built the same folder first), theirs is kept and this one removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(staging_name(path.name))
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        staging.rename(path)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not path.exists():
            raise


def read_text(url: str | Path) -> str | None:
    """The file's text, or None when it is missing or unreadable."""
    try:
        if not is_remote(url):
            return local_path(url).read_text(encoding="utf-8")
        import fsspec

        with fsspec.open(str(url), "rt") as handle:
            return handle.read()
    except (OSError, ValueError):
        return None
