"""`mlproj prepare data=NAME shards=URL`: the checked data written once as shards, read back as a reader would."""

import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mlproj.data.imagefolder import ImageFolderDataModule
from mlproj.data.shard_format import INDEX, MANIFEST, is_png, join, read_index
from mlproj.data.shard_writer import MARKER, check_writable, encode_sample, start_or_resume, write_shards
from mlproj.errors import ConfigError
from mlproj.prepare import prepare

from conftest import ROOT, SHARED_DATA, compose, make_image_folder, write_image

SHORT_SIDE = 32
# torchvision 0.29 deprecates its decoders for TorchCodec's; they are still what a reader of these bytes uses.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def photo_folder(root: Path) -> Path:
    """train/ and val/ class folders: small images (no larger than the short side, any mode) and larger photos,
    one of them stored sideways with an EXIF rotation."""
    make_image_folder(root, per_class=3, splits=("train", "val"), modes=("RGB", "L", "P"))
    for split, count in (("train", 3), ("val", 2)):
        for label, name in enumerate(("cat", "dog", "fox")):
            for i in range(count):
                gradient = np.linspace(0, 255, 120 * 90 * 3).reshape(90, 120, 3).astype(np.uint8)
                tinted = np.clip(gradient // 2 + 50 * label + 10 * i, 0, 255).astype(np.uint8)
                Image.fromarray(tinted).save(root / split / name / f"{name}_photo_{i}.jpg", quality=95)
    sideways = Image.fromarray(np.full((40, 60, 3), 120, dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to view
    sideways.save(root / "train" / "cat" / "cat_sideways.jpg", exif=exif)
    return root


def checked(root: Path, cache: Path) -> ImageFolderDataModule:
    return ImageFolderDataModule(str(root), cache_dir=str(cache), validate=True).load()


def read_back(url: str, split: str, cache: Path) -> list[dict[str, Any]]:
    """Every sample of a split, in stored order, through LitData's reader."""
    import litdata

    dataset = litdata.StreamingDataset(join(url, split), cache_dir=str(cache))
    return [dataset[i] for i in range(len(dataset))]


def decode(image: Any) -> np.ndarray:
    """HxWx3 uint8, decoded as a reader decodes (torchvision, bytes only, to RGB)."""
    from torchvision.io import ImageReadMode, decode_image

    data = torch.frombuffer(bytearray(bytes(image)), dtype=torch.uint8)
    return decode_image(data, mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()


def manifest_rows(url: str) -> list[dict[str, str]]:
    from mlproj.storage import read_text

    return list(csv.DictReader(io.StringIO(read_text(join(url, MANIFEST)))))


def upright_rgb(path: Path) -> np.ndarray:
    from PIL import ImageOps

    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def assert_round_trips(url: str, root: Path, cache: Path) -> None:
    """Every split holds the manifest's images in its order, with their labels, at the short side."""
    index = read_index(url)
    rows = manifest_rows(url)
    assert sum(index.splits.values()) == len(rows)
    for split, count in index.splits.items():
        samples = read_back(url, split, cache / split)
        expected = [row for row in rows if row["split"] == split]
        assert len(samples) == count == len(expected)
        assert [s["path"] for s in samples] == [row["path"] for row in expected]
        assert [index.classes[s["label"]] for s in samples] == [row["label"] for row in expected]
        for sample, row in zip(samples, expected, strict=True):
            pixels = decode(sample["image"])
            original = upright_rgb(root / row["path"])
            assert pixels.shape[2] == 3
            if min(original.shape[:2]) <= SHORT_SIDE:  # small images are kept losslessly: a JPEG's own bytes, or PNG
                kept = bytes(sample["image"]) == (root / row["path"]).read_bytes()
                assert (is_png(sample["image"]) or kept) and np.array_equal(pixels, original), row["path"]
            else:
                assert not is_png(sample["image"]) and min(pixels.shape[:2]) == SHORT_SIDE, row["path"]
                ratio = original.shape[0] / original.shape[1]
                assert abs(pixels.shape[0] / pixels.shape[1] - ratio) < 0.05, row["path"]  # upright, same shape


def run_prepare(root: Path, url: str, out: Path, *overrides: str) -> str:
    cfg = compose(
        "prepare",
        ["data=imagefolder", f"data.root={root}", f"data.cache_short_side={SHORT_SIDE}", f"shards={url}", *overrides],
        out,
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        prepare(cfg)
    return printed.getvalue()


def stored_files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def stored_objects(url: str) -> dict[str, Any]:
    """Every object under a bucket path, with its generation (a new one on every write)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return {name: info.get("generation") or info.get("updated") for name, info in fs.find(path, detail=True).items()}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, gcs_emulator) -> tuple[Path, str, str]:
    """`mlproj prepare ... shards=gs://...` run as a user runs it, once: (images, shards URL, what it printed)."""
    tmp = tmp_path_factory.mktemp("prepared")
    root = photo_folder(tmp / "pics")
    url = f"{gcs_emulator.bucket('shards')}/photos-32"
    command = [sys.executable, "-m", "mlproj.cli", "prepare", "data=imagefolder", f"data.root={root}"]
    overrides = [f"data.cache_short_side={SHORT_SIDE}", f"shards={url}", "shards_chunk_size=10"]
    where = [f"hydra.run.dir={tmp / 'run'}", f"paths.cache_dir={tmp / 'cache'}"]
    env = {**os.environ, **gcs_emulator.env, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([*command, *overrides, *where], env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, url, done.stdout


def test_mlproj_prepare_writes_shards_to_a_bucket_that_read_back_as_checked(prepared, tmp_path, monkeypatch) -> None:
    root, url, printed = prepared
    assert f"shards: {url}: train 19, val 15; " in printed and "x the original" in printed
    monkeypatch.setenv("LITDATA_ASYNC_CHUNK_PREFETCH", "0")  # litdata's obstore prefetch cannot reach the emulator
    assert_round_trips(url, root, tmp_path)
    index = read_index(url)
    assert index.short_side == SHORT_SIDE and index.quality == 90 and index.data_version["md5"]
    names = {name.split("/", 2)[-1] for name in stored_objects(url)}
    assert {INDEX, MANIFEST, "train/index.json", "val/index.json"} <= names and MARKER not in names
    assert len([name for name in names if name.startswith("train/chunk-")]) == 2  # 19 images, 10 per chunk


def test_a_second_prepare_says_up_to_date_and_writes_nothing(prepared, tmp_path: Path) -> None:
    root, url, _ = prepared
    before = stored_objects(url)
    printed = run_prepare(root, url, tmp_path / "runs" / "b", "shards_chunk_size=10")
    assert f"shards: {url} up to date" in printed
    assert stored_objects(url) == before


def test_an_interrupted_prepare_shows_no_index_and_continues_with_the_splits_left(tmp_path: Path) -> None:
    root = photo_folder(tmp_path / "pics")
    datamodule = checked(root, tmp_path / "cache")
    url = str(tmp_path / "shards")
    broken = root / "val" / "dog" / "dog_photo_1.jpg"
    original, stat = broken.read_bytes(), broken.stat()
    broken.write_bytes(bytes(len(original)))  # damaged after the checks: the val split fails midway
    os.utime(broken, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # unseen by the fingerprint (size, time)

    with pytest.raises(RuntimeError, match=r"dog_photo_1\.jpg"):
        write_shards(datamodule, url, SHORT_SIDE, chunk_size=10)
    assert not (tmp_path / "shards" / INDEX).exists() and not (tmp_path / "shards" / MANIFEST).exists()
    assert (tmp_path / "shards" / "train" / "index.json").is_file()
    assert not (tmp_path / "shards" / "val").exists()
    train = stored_files(tmp_path / "shards" / "train")

    broken.write_bytes(original)
    os.utime(broken, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (tmp_path / "shards" / "val").mkdir()
    (tmp_path / "shards" / "val" / "chunk-0-0.bin").write_bytes(b"left by a kill")  # no index.json: unfinished
    (tmp_path / "shards" / ".val.tmp-123-abcd").mkdir()  # a staging folder a kill left
    done = write_shards(datamodule, url, SHORT_SIDE, chunk_size=10)
    assert done.written and done.kept == ("train",)
    assert stored_files(tmp_path / "shards" / "train") == train
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == sorted([INDEX, MANIFEST, "train", "val"])
    assert_round_trips(url, root, tmp_path / "read")

    write_image(root / "train" / "cat" / "new.png", seed=99)  # other files: the finished set is never overwritten
    with pytest.raises(ConfigError, match=re.escape(f"shards={url} holds a set written from other files")):
        write_shards(checked(root, tmp_path / "cache"), url, SHORT_SIDE, chunk_size=10)
    assert stored_files(tmp_path / "shards" / "train") == train


def test_an_unfinished_set_of_other_data_is_cleared_before_writing(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    (shards / "train").mkdir(parents=True)
    (shards / MARKER).write_text(json.dumps({"fingerprint": "other files"}))
    (shards / "train" / "index.json").write_text("{}")  # finished, but from other files
    (shards / MANIFEST).write_text("path,label\n")
    assert start_or_resume(str(shards), {"fingerprint": "these files"}) == set()
    assert sorted(p.name for p in shards.iterdir()) == [MARKER]
    assert json.loads((shards / MARKER).read_text()) == {"fingerprint": "these files"}


def test_a_url_or_quality_that_cannot_be_used_is_one_line_naming_it(tmp_path: Path, gcs_emulator) -> None:
    (tmp_path / "a-file").write_text("")
    for url in (str(tmp_path / "a-file" / "shards"), "gs://no-such-bucket-here/shards"):
        with pytest.raises(ConfigError, match="^" + re.escape(f"shards={url} cannot be written")) as error:
            check_writable(url)
        assert "\n" not in str(error.value)
    root = make_image_folder(tmp_path / "pics", per_class=2, splits=("train", "val"))
    with pytest.raises(ConfigError, match=r"^shards=gs://no-such-bucket-here/shards cannot be written"):
        run_prepare(root, "gs://no-such-bucket-here/shards", tmp_path / "runs" / "a")
    assert not (tmp_path / "runs" / "a" / "manifest.csv").exists()  # refused before hours of checks

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "notes.txt").write_text("mine")
    datamodule = checked(root, tmp_path / "cache")
    with pytest.raises(ConfigError, match="holds other files and no mlproj shard set"):
        write_shards(datamodule, str(tmp_path / "elsewhere"), SHORT_SIDE)
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["notes.txt"]
    with pytest.raises(ConfigError, match=r"^data\.shard_quality=0 is not an integer from 1 to 100: the JPEG quality"):
        write_shards(datamodule, str(tmp_path / "new"), SHORT_SIDE, quality=0)


def test_images_held_in_memory_are_stored_losslessly() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    sample = encode_sample((pixels, 7, "cifar-10-batches-py/test_batch/3"), None, 90)
    assert sample["label"] == 7 and sample["path"] == "cifar-10-batches-py/test_batch/3"
    assert is_png(sample["image"]) and np.array_equal(decode(sample["image"]), pixels)


@pytest.mark.skipif(not (SHARED_DATA / "hymenoptera").is_dir(), reason="../shared/data/hymenoptera is absent")
def test_photos_at_short_side_256_take_well_under_a_third_of_their_jpeg_bytes(tmp_path: Path) -> None:
    datamodule = checked(SHARED_DATA / "hymenoptera", tmp_path / "cache")
    done = write_shards(datamodule, str(tmp_path / "shards"), 256, quality=90)
    print(
        f"hymenoptera at short side 256, quality 90: {done.stored_bytes} / {done.source_bytes} bytes = {done.ratio:.3f}"
    )
    assert done.index.splits == datamodule.split_sizes()
    assert done.ratio < 0.3
