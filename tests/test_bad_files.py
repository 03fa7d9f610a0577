"""A real-world folder of messy files: every file is loaded correctly or rejected by path, never mid-epoch."""

import csv
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlproj.data.imagefolder import ImageFolderDataModule
from mlproj.data.validate import check_image

from conftest import DATA_CONFIG, make_image_folder, read_summary, write_image


def encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (40, 32), **options) -> bytes:
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: stored 40x20, shown 20x40
    return encoded("JPEG", size=(40, 20), exif=exif.tobytes())


def mpo_bytes() -> bytes:
    first = Image.new("RGB", (40, 32), "red")
    buffer = io.BytesIO()
    first.save(buffer, format="MPO", save_all=True, append_images=[Image.new("RGB", (40, 32), "blue")])
    return buffer.getvalue()


LOADED = {
    "webp_named.jpg": lambda: encoded("WEBP"),
    "png_named.jpg": lambda: encoded("PNG"),
    "gif_named.jpg": lambda: encoded("GIF", mode="P"),
    "mpo_named.jpg": mpo_bytes,
    "cmyk.jpg": lambda: encoded("JPEG", mode="CMYK"),
    "gray.png": lambda: encoded("PNG", mode="L"),
    "rotated.jpg": exif_rotated_jpeg,
}
REJECTED = {
    "truncated.jpg": (lambda: encoded("JPEG", size=(200, 150))[:900], "truncated or corrupt"),
    "empty.jpg": (lambda: b"", "empty file (0 bytes)"),
    "page.jpg": (lambda: b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "not an image Pillow can read"),
    "notes.jpg": (lambda: b"just some text\n", "not an image Pillow can read"),
}


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    root = make_image_folder(tmp_path / "messy", classes=("ant", "bee", "wasp"), per_class=6)
    for name, make in LOADED.items():
        (root / "ant" / name).write_bytes(make())
    for name, (make, _) in REJECTED.items():
        (root / "bee" / name).write_bytes(make())
    write_image(root / "ant" / "palette_alpha.png", mode="P-transparent")
    write_image(root / "ant" / "deep.png", mode="I;16")
    os.symlink("loop.jpg", root / "bee" / "loop.jpg")  # points at itself
    (root / "bee" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "bee" / "._bee_000.jpg").write_bytes(b"\x00\x05\x16\x07")
    broken_only = root / "hornet"
    broken_only.mkdir()
    (broken_only / "bad.jpg").write_bytes(b"not a jpeg")
    return root


def test_each_bad_file_is_rejected_by_path_with_its_reason(messy_folder: Path, caplog) -> None:
    dm = ImageFolderDataModule(str(messy_folder), num_workers=0, val_fraction=0.2, test_fraction=0.2).load()
    rejected = {Path(c.path).name: c.error for c in dm.rejected}
    for name, (_, reason) in REJECTED.items():
        assert rejected[name].startswith(reason), (name, rejected[name])
        assert f"rejected {messy_folder / 'bee' / name}: {reason}" in caplog.text
    assert rejected["loop.jpg"] == "symlink loop"
    assert rejected["bad.jpg"] == "not an image Pillow can read"
    assert dm.classes == ["ant", "bee", "wasp"]  # hornet held nothing decodable
    assert f"skipping class folder {messy_folder / 'hornet'}" in caplog.text
    kept = {Path(p).name for samples in dm.splits.values() for p in samples.paths}
    assert set(LOADED) | {"palette_alpha.png", "deep.png"} <= kept
    assert not kept & (set(REJECTED) | {"loop.jpg", ".DS_Store", "._bee_000.jpg"})


def test_every_kept_file_decodes_to_an_upright_rgb_tensor(messy_folder: Path) -> None:
    dm = ImageFolderDataModule(
        str(messy_folder), num_workers=0, batch_size=64, val_fraction=0.2, test_fraction=0.2
    ).load()
    dm.configure_preprocessing(DATA_CONFIG)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for images, labels in loader:
            assert images.shape[1:] == (3, 32, 32) and labels.max() < 3
    rotated = check_image(str(messy_folder / "ant" / "rotated.jpg"))
    assert (rotated.width, rotated.height) == (20, 40)


def test_images_over_the_decompression_bomb_limit_are_rejected(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "bomb.png"
    path.write_bytes(encoded("PNG", size=(100, 100)))
    assert check_image(str(path)).error.startswith("over the decompression-bomb limit")
    small = tmp_path / "small.png"
    small.write_bytes(encoded("PNG", size=(20, 20)))
    assert check_image(str(small)).error is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_files_are_rejected(tmp_path: Path) -> None:
    path = write_image(tmp_path / "locked.jpg")
    path.chmod(0)
    assert check_image(str(path)).error == "unreadable: permission denied"


def test_the_same_image_under_two_labels_in_two_splits_is_reported(tmp_path: Path, caplog) -> None:
    root = make_image_folder(tmp_path / "pre", per_class=4, splits=("train", "val"))
    shutil.copy(root / "train" / "cat" / "cat_000.jpg", root / "val" / "dog" / "copied.jpg")
    ImageFolderDataModule(str(root), num_workers=0).load()
    assert "the same image is cat in train" in caplog.text and str(root / "val" / "dog" / "copied.jpg") in caplog.text


def test_a_run_on_messy_files_finishes_and_lists_what_it_rejected(messy_folder: Path, train_in_process) -> None:
    overrides = ["data=imagefolder", f"data.root={messy_folder}", "model.backbone=resnet10t", "data.image_size=32"]
    _, run_dir = train_in_process(*overrides, "debug=limit", "data.num_workers=0", "data.batch_size=8")
    assert read_summary(run_dir)["status"] == "finished"
    rejected = list(csv.DictReader((run_dir / "rejected.csv").open()))
    assert {row["path"] for row in rejected} >= {f"bee/{name}" for name in REJECTED} | {"hornet/bad.jpg"}


def test_parallel_checks_agree_with_serial_ones(tmp_path: Path) -> None:
    from mlproj.data.validate import check_images

    paths = [str(write_image(tmp_path / f"{i}.png", seed=i)) for i in range(6)]
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    paths.append(str(tmp_path / "bad.jpg"))
    assert check_images(paths, workers=2, serial_below=0) == check_images(paths, workers=1)
