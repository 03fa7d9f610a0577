"""Writing a shard set (the format is in mlproj.data.shard_format): `mlproj prepare data=NAME shards=URL`.

Each split goes through `litdata.optimize` in worker processes: every image is decoded once, upright and RGB, shrunk
to the short side and JPEG-encoded (PNG, lossless, when it was no larger than the short side, and for data with no
short side). Chunks hold `CHUNK_SIZE` images, packed as one worker would pack them (`align_chunking`), so which
images each chunk holds, in which order, and its bytes depend on the files and settings, not on how many processes
wrote them (only the chunk file names, `chunk-RANK-N.bin`, do).

A set is finished in this order, so that a half-written one is never read as complete:

1. `URL/.writing.json` records what is being written (fingerprint, splits, short side, quality);
2. each split is written to a staging folder (beside it for a local URL, under the temporary folder for gs://) and
   put in place: renamed, or uploaded with its LitData `index.json` last; a split with its `index.json` is done;
3. `manifest.csv`, then `mlproj-shards.json` (the index) last, and the marker is removed.

An interrupted prepare finds the marker of the same data and keeps the splits already in place; a marker of other
data starts over. A complete set is never overwritten: readers cache its chunks by URL, so new bytes under an old
URL could be mixed with old ones. Nothing is written to a URL holding other files.
"""

import io
import json
import logging
import os
import shutil
import signal
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mlproj.data.cache import load_resized
from mlproj.data.fingerprint import fingerprint
from mlproj.data.samples import Samples
from mlproj.data.shard_format import INDEX, MANIFEST, SPLITS, ShardIndex, join, read_index
from mlproj.data.splits import relative_to, write_manifest
from mlproj.errors import ConfigError
from mlproj.knobs import checked
from mlproj.storage import atomic_dir, is_remote, local_path, read_text, write_json, write_text

CHUNK_SIZE = 2048  # images per chunk: about 50 MB of JPEGs at short side 256, a few MB of 32 px PNGs
MARKER = ".writing.json"  # what an unfinished set is being written from; removed once its index is in place
PROBE = ".mlproj-write-probe"
UNBOUNDED = 1 << 30  # a short side no image reaches: decode at full size
ORIENTATION = 0x0112  # the EXIF tag that says how a photo is rotated

# One item per image: (a file path or HxWx3 uint8 pixels, label, the path a sample records).
Item = tuple[str | np.ndarray, int, str]


@dataclass(frozen=True)
class ShardsWritten:
    """What `write_shards` did: `written` is False when the set was already up to date (nothing was written)."""

    url: str
    index: ShardIndex
    written: bool
    kept: tuple[str, ...]  # splits an interrupted prepare had finished, kept as they were
    stored_bytes: int  # the size of every split (chunks and LitData indexes)
    source_bytes: int  # the size of the images they were made from (files, or raw pixels when in memory)

    @property
    def ratio(self) -> float:
        return self.stored_bytes / self.source_bytes if self.source_bytes else float("nan")


def encode_sample(item: Item, short_side: int | None, quality: int, failures: str | None = None) -> dict[str, Any]:
    """One sample of a shard set: the image resized and encoded, its label and recorded path.

    Runs in litdata's worker processes, so it lives at module level (spawned workers import it by name). With
    `failures` (a folder), an image that cannot be read is recorded there and an empty sample returned: a worker
    that raises leaves litdata's helper processes waiting forever, so the caller reports failures after the split.
    """
    source, label, path = item
    try:
        if isinstance(source, np.ndarray):  # in memory already (CIFAR): stored as it is
            pixels, lossless = source, True
        elif original_jpeg(source, short_side):  # small enough already, and read upright as it is: kept byte for byte
            return {"image": Path(source).read_bytes(), "label": int(label), "path": path}
        else:
            pixels = load_resized(source, short_side or UNBOUNDED)
            lossless = short_side is None or min(pixels.shape[:2]) < short_side or _short_side(source) <= short_side
        buffer = io.BytesIO()
        if lossless:
            Image.fromarray(pixels).save(buffer, format="PNG")
        else:
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    except Exception as error:
        if failures is None:
            error.add_note(f"while writing the shard sample of {path}")
            raise
        reason = " ".join(f"{type(error).__name__}: {error}".split())  # one line
        with (Path(failures) / f"{os.getpid()}.tsv").open("a") as record:
            record.write(f"{path}\t{reason}\n")
        return {"image": b"", "label": -1, "path": path}
    return {"image": buffer.getvalue(), "label": int(label), "path": path}


def original_jpeg(path: str, short_side: int | None) -> bool:
    """A JPEG no larger than the short side, in RGB or grayscale, with no EXIF rotation: its own bytes are the
    lossless sample (smaller than any re-encoding), decoded to the same upright RGB pixels the checks saw."""
    with Image.open(path) as image:  # the header only
        return (
            image.format == "JPEG"
            and image.mode in ("RGB", "L")
            and (short_side is None or min(image.size) <= short_side)
            and image.getexif().get(ORIENTATION, 1) == 1
        )


def _short_side(path: str) -> int:
    with Image.open(path) as image:  # the header only
        return min(image.size)


def shard_items(samples: Samples, root: Path) -> list[Item]:
    """The items of one split, in its order; recorded paths are the manifest's (relative to the data root)."""
    if samples.paths is None:
        return [
            (np.asarray(samples.pixels[i]), int(samples.labels[i]), samples.describe(i)) for i in range(len(samples))
        ]
    return [
        (str(path), int(label), relative_to(str(path), root))
        for path, label in zip(samples.paths, samples.labels, strict=True)
    ]


def source_fingerprint(splits: Mapping[str, Samples], root: Path) -> str:
    """mlproj.data.fingerprint of the checked files in split order; for images held in memory, of the files
    under the data root they were read from."""
    if all(samples.paths is not None for samples in splits.values()):
        return fingerprint([str(path) for samples in splits.values() for path in samples.paths])
    return fingerprint(sorted(str(path) for path in root.rglob("*") if path.is_file()))


def source_bytes(splits: Mapping[str, Samples], checks: Mapping[str, Any]) -> int:
    total = 0
    for samples in splits.values():
        if samples.paths is None:
            total += int(samples.pixels.nbytes)  # raw pixels: no files
            continue
        for path in samples.paths:
            check = checks.get(str(path))
            total += check.size if check is not None and check.size else os.stat(path).st_size
    return total


def content(index: ShardIndex) -> dict[str, Any]:
    """What makes two sets the same: the files they were written from, how, and what they hold."""
    keep = ("classes", "splits", "class_counts", "fingerprint", "short_side", "quality", "format", "version")
    return {key: value for key, value in asdict(index).items() if key in keep}


def check_writable(url: str) -> None:
    """Fail now, in one line naming the URL, when `url` cannot be written (no such bucket, a read-only folder)."""
    probe = join(url.rstrip("/"), PROBE)
    try:
        write_text(probe, "")
        _remove(probe)
    except Exception as error:  # whatever the file system or the bucket's client raises
        raise ConfigError(
            f"shards={url} cannot be written ({type(error).__name__}: {error}): give a folder or gs:// bucket path"
            " you can write to"
        ) from error


def write_shards(
    datamodule: Any,
    url: str,
    short_side: int | None,
    quality: int = 90,
    data_version: Callable[[], dict[str, Any]] = dict,
    workers: int | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> ShardsWritten:
    """Write the loaded DataModule's splits as a shard set at `url` (a folder or gs://), or find it up to date.

    `data_version` is asked only when a set is written (mlproj.data_version, from the caller's layer).
    """
    url = url.rstrip("/")
    checked("data.shard_quality", quality)
    if int(chunk_size) < 1:
        raise ConfigError(f"shards_chunk_size={chunk_size}: give a positive number of images per chunk")
    splits, classes, root = datamodule.splits, datamodule.classes, datamodule.root
    wanted = ShardIndex(
        classes=list(classes),
        splits={name: len(samples) for name, samples in splits.items()},
        class_counts={
            name: np.bincount(samples.labels, minlength=len(classes)).tolist() for name, samples in splits.items()
        },
        fingerprint=source_fingerprint(splits, root),
        data_version={},
        short_side=None if short_side is None else int(short_side),
        quality=int(quality),
        source=str(root),
    )
    original = source_bytes(splits, datamodule.image_checks)
    existing = read_text(join(url, INDEX))
    if existing is not None:
        index = read_index(url, key="shards")
        if content(index) != content(wanted):
            raise ConfigError(
                f"shards={url} holds a set written from other files or settings ({index.source}, fingerprint"
                f" {index.fingerprint}): write to a new URL (e.g. {url}-v2), or delete {url} first"
            )
        return ShardsWritten(url, index, False, (), set_bytes(url, list(index.splits)), original)

    marker = {**content(wanted), "chunk_size": int(chunk_size)}
    kept = start_or_resume(url, marker)
    with optimizer_folders() as scratch:
        for name, samples in splits.items():
            if name in kept:
                continue
            items = shard_items(samples, root)
            write_split(items, join(url, name), scratch, short_side, quality, workers, chunk_size)
    write_manifest(join(url, MANIFEST), splits, classes, root, datamodule.image_checks)
    index = replace(wanted, data_version=data_version())
    write_text(join(url, INDEX), index.to_json())  # last: its presence marks a complete set
    _remove(join(url, MARKER))
    done = tuple(name for name in splits if name in kept)
    return ShardsWritten(url, index, True, done, set_bytes(url, list(splits)), original)


def start_or_resume(url: str, marker: dict[str, Any]) -> set[str]:
    """The splits an interrupted prepare of the same data finished; otherwise clear what it left and start."""
    fs, path = _fs(url)
    fs.invalidate_cache()
    previous = read_text(join(url, MARKER))
    if previous is not None:
        for left in fs.ls(path, detail=False):
            name = left.rsplit("/", 1)[-1]
            if name.startswith(".") and ".tmp-" in name:  # staging a killed prepare left (storage.staging_name)
                fs.rm(left, recursive=True)
        with suppress(ValueError):
            if json.loads(previous) == marker:
                return {name for name in SPLITS if fs.exists(f"{path}/{name}/index.json")}
    elif fs.exists(path) and fs.ls(path, detail=False):
        raise ConfigError(
            f"shards={url} holds other files and no mlproj shard set: give an empty folder or a new bucket path"
        )
    for name in (*SPLITS, MANIFEST):
        _remove(join(url, name))
    write_json(join(url, MARKER), marker)
    return set()


def write_split(
    items: list[Item],
    url: str,
    scratch: Path,
    short_side: int | None,
    quality: int,
    workers: int | None,
    chunk_size: int,
) -> None:
    """One LitData optimized dataset at `url`, put in place whole: its `index.json` appears last."""
    _remove(url)  # what an interrupted prepare left
    if is_remote(url):
        staging = scratch / "out" / url.rsplit("/", 1)[-1]
        staging.mkdir(parents=True)
        optimize_split(items, staging, scratch, short_side, quality, workers, chunk_size)
        upload_split(staging, url)
        shutil.rmtree(staging)
        return
    with atomic_dir(local_path(url)) as staging:
        optimize_split(items, staging, scratch, short_side, quality, workers, chunk_size)


def optimize_split(
    items: list[Item],
    folder: Path,
    scratch: Path,
    short_side: int | None,
    quality: int,
    workers: int | None,
    chunk_size: int,
) -> None:
    """`items` as a LitData optimized dataset in the local `folder`, or an error naming the images that failed."""
    import litdata

    failures = Path(tempfile.mkdtemp(prefix="failures-", dir=scratch))
    full_chunks = len(items) // chunk_size
    workers = max(1, min(workers or os.cpu_count() or 1, full_chunks))  # align_chunking gives whole chunks only
    with litdata_tamed():
        litdata.optimize(
            fn=partial(encode_sample, short_side=short_side, quality=quality, failures=str(failures)),
            inputs=items,
            output_dir=str(folder),
            chunk_size=chunk_size,
            align_chunking=True,  # the chunk layout of one worker, whatever the number of workers
            keep_data_ordered=True,  # samples in split order
            reorder_files=False,
            num_workers=workers,
            verbose=False,
        )
    failed = sorted(line for record in failures.glob("*.tsv") for line in record.read_text().splitlines())
    if failed:
        listed = "; ".join(line.replace("\t", ": ", 1) for line in failed[:5]) + ("; ..." if len(failed) > 5 else "")
        raise RuntimeError(
            f"{len(failed)} of {len(items)} images could not be written (changed since they were checked? run"
            f" `mlproj prepare` again to check them): {listed}"
        )
    # A worker that dies before its first item (e.g. failing to start) is not reported by optimize: count.
    written = read_text(folder / "index.json")
    stored = sum(chunk["chunk_size"] for chunk in json.loads(written)["chunks"]) if written else 0
    if stored != len(items):
        raise RuntimeError(f"litdata.optimize wrote {stored} of {len(items)} samples into {folder}")


def upload_split(staging: Path, url: str) -> None:
    """Chunks first, LitData's index.json last: a split is complete on the bucket once its index is there."""
    fs, path = _fs(url)
    files = sorted(p for p in staging.rglob("*") if p.is_file() and p.name != "index.json")
    if files:
        fs.put([str(p) for p in files], [f"{path}/{p.relative_to(staging).as_posix()}" for p in files])
    fs.put_file(str(staging / "index.json"), f"{path}/index.json")


@contextmanager
def litdata_tamed() -> Iterator[None]:
    """Around `litdata.optimize`: Ctrl-C stops its workers and raises KeyboardInterrupt, so staging folders are
    removed and the command exits 130 (litdata's own handler ends the process with `os._exit(0)`: status 0,
    temporary folders left behind; and it stays installed after optimize returns). Its INFO lines (cache sizes of
    the staging folder) and its warning about splits smaller than a chunk per worker are not shown. It also sets the
    process's multiprocessing start method to spawn for good; the previous one is put back, or every DataLoader made
    afterwards in the process would start its workers by spawning (seconds per worker, every epoch)."""
    import multiprocessing

    from litdata.processing.data_processor import DataProcessor

    def stop_and_raise(processor: Any, signum: int, frame: Any) -> None:
        for worker in processor.workers:
            worker.terminate()
        raise KeyboardInterrupt

    handler, previous = DataProcessor._signal_handler, signal.getsignal(signal.SIGINT)
    start_method = multiprocessing.get_start_method(allow_none=True)
    litdata_log = logging.getLogger("litdata")
    level = litdata_log.level
    DataProcessor._signal_handler = stop_and_raise
    litdata_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"chunk_size \(\d+\) is too large", category=UserWarning)
            yield
    finally:
        DataProcessor._signal_handler = handler
        signal.signal(signal.SIGINT, previous)
        multiprocessing.set_start_method(start_method, force=True)
        litdata_log.setLevel(level)


@contextmanager
def optimizer_folders() -> Iterator[Path]:
    """A private scratch folder for litdata: `optimize()` deletes its cache folders (`$TMPDIR/chunks` and
    `$TMPDIR/data` by default) when it starts, which would break any other optimize running on the machine.
    litdata's DATA_OPTIMIZER_* variables are restored afterwards (it sets some in this process)."""
    before = {key: value for key, value in os.environ.items() if key.startswith("DATA_OPTIMIZER_")}
    with tempfile.TemporaryDirectory(prefix="mlproj-shards-") as scratch:
        os.environ["DATA_OPTIMIZER_CACHE_FOLDER"] = str(Path(scratch) / "chunks")
        os.environ["DATA_OPTIMIZER_DATA_CACHE_FOLDER"] = str(Path(scratch) / "data")
        try:
            yield Path(scratch)
        finally:
            for key in [key for key in os.environ if key.startswith("DATA_OPTIMIZER_")]:
                del os.environ[key]
            os.environ.update(before)


def set_bytes(url: str, splits: list[str]) -> int:
    fs, path = _fs(url)
    fs.invalidate_cache()
    return sum(int(fs.du(f"{path}/{name}")) for name in splits)


def _fs(url: str) -> tuple[Any, str]:
    import fsspec

    return fsspec.core.url_to_fs(url)


def _remove(url: str) -> None:
    fs, path = _fs(url)
    with suppress(FileNotFoundError):
        if fs.exists(path):
            fs.rm(path, recursive=True)
