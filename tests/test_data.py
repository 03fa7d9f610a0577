"""The data layer on real image files: scanning, splits, every image mode, manifests and each data source."""

import csv
import hashlib
import io
import logging
import pickle
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlproj.data.cifar import CIFAR100DataModule
from mlproj.data.digits import DigitsDataModule
from mlproj.data.imagefolder import ImageFolderDataModule
from mlproj.data.mushrooms import GENERA, MushroomsDataModule
from mlproj.data.samples import Samples
from mlproj.data.scan import IMAGE_EXTENSIONS
from mlproj.data.transforms import build_transform, to_rgb
from mlproj.errors import ConfigError

from conftest import (
    DATA_CONFIG,
    SHARED_DATA,
    compose,
    make_cifar100,
    make_image_folder,
    requires_shared_data,
    write_image,
)

AUGMENT = {
    "hflip": 0.5,
    "vflip": 0.0,
    "scale": [0.5, 1.0],
    "ratio": [0.75, 1.3333333],
    "color_jitter": None,
    "auto_augment": "rand-m9-mstd0.5-inc1",
    "re_prob": 0.25,
}
# (mode, suffix) of every kind of file a user's folder may hold; "P-transparent" is a palette PNG with tRNS.
FILE_KINDS = (
    ("RGB", ".jpg"),
    ("RGB", ".png"),
    ("RGB", ".JPEG"),
    ("L", ".jpg"),
    ("L", ".png"),
    ("P", ".png"),
    ("RGBA", ".png"),
    ("P-transparent", ".png"),
    ("CMYK", ".jpg"),
    ("I;16", ".png"),
)


def in_memory_image(mode: str, size: tuple[int, int]) -> np.ndarray:
    """A decoded PNG of random pixels stored in `mode`, as the HxWx3 RGB array loaders hand to transforms."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(buffer, "PNG")
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.array(to_rgb(image))


def folder_dm(root: Path, load: bool = True, **kwargs) -> ImageFolderDataModule:
    kwargs = {"batch_size": 4, "num_workers": 0, **kwargs}
    dm = ImageFolderDataModule(str(root), **kwargs)
    return dm.load() if load else dm


def write_mixed_folder(root: Path, classes=("cat", "dog", "fox")) -> Path:
    """Each class folder holds one file of every (mode, format) kind in FILE_KINDS."""
    seed = 0
    for name in classes:
        for i, (mode, suffix) in enumerate(FILE_KINDS):
            write_image(root / name / f"{name}_{i:02d}{suffix}", mode=mode, size=(24, 20), seed=seed)
            seed += 1
    return root


def collect(loader) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(labels)


def split_paths(dm: ImageFolderDataModule) -> dict[str, list[str]]:
    return {name: list(samples.paths) for name, samples in dm.splits.items()}


def read_manifest(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def file_digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def config_error(dm: ImageFolderDataModule) -> str:
    """The message of the ConfigError that preparing the data and loading the splits raises."""
    with pytest.raises(ConfigError) as info:
        dm.prepare_data()
        dm.load()
    return str(info.value)


# ---------------------------------------------------------------- class folders split here


def test_class_folders_are_split_stratified_by_val_and_test_fraction(image_folder):
    root = image_folder(per_class=10)
    dm = folder_dm(root, val_fraction=0.2, test_fraction=0.1)
    dm.prepare_data()

    assert dm.classes == ["cat", "dog", "fox"]
    assert dm.num_classes == 3
    assert dm.split_sizes() == {"train": 21, "val": 6, "test": 3}
    assert dm.class_counts("train").tolist() == [7, 7, 7]
    assert dm.class_counts("val").tolist() == [2, 2, 2]
    assert dm.class_counts("test").tolist() == [1, 1, 1]
    paths = split_paths(dm)
    everything = [p for split in paths.values() for p in split]
    assert len(set(everything)) == len(everything) == 30, "splits overlap or lose images"
    assert {Path(p).name for p in everything} == {p.name for p in root.rglob("*.*")}
    for samples in dm.splits.values():
        folders = [Path(p).parent.name for p in samples.paths]
        assert [dm.classes[label] for label in samples.labels] == folders, "label does not match the class folder"


def test_same_split_seed_gives_same_split_and_another_seed_a_different_one(image_folder):
    root = image_folder(per_class=8)
    first = split_paths(folder_dm(root, split_seed=1))
    again = split_paths(folder_dm(root, split_seed=1))
    other = split_paths(folder_dm(root, split_seed=2))

    assert first == again
    assert first != other
    assert {k: len(v) for k, v in first.items()} == {k: len(v) for k, v in other.items()}


def test_train_val_test_folders_are_used_as_given(tmp_path):
    root = make_image_folder(tmp_path / "presplit", splits=("train",), per_class=4)
    make_image_folder(root, splits=("val",), per_class=2)
    make_image_folder(root, classes=("cat", "dog"), splits=("test",), per_class=3)
    dm = folder_dm(root, val_fraction=0.5, test_fraction=0.4)  # fractions only apply to class folders

    assert dm.classes == ["cat", "dog", "fox"]
    assert dm.split_sizes() == {"train": 12, "val": 6, "test": 6}
    assert dm.test_split == "test"
    assert dm.class_counts("test").tolist() == [3, 3, 0]
    for split, samples in dm.splits.items():
        for path, label in zip(samples.paths, samples.labels, strict=True):
            relative = Path(path).relative_to(root)
            assert relative.parts[0] == split
            assert relative.parts[1] == dm.classes[label]


def test_train_and_test_folders_without_val_cut_val_from_train(tmp_path):
    root = make_image_folder(tmp_path / "presplit", splits=("train",), per_class=10)
    make_image_folder(root, splits=("test",), per_class=2)
    dm = folder_dm(root, val_fraction=0.2)

    assert dm.classes == ["cat", "dog", "fox"]
    assert dm.split_sizes() == {"train": 24, "val": 6, "test": 6}
    assert all(Path(p).relative_to(root).parts[0] == "train" for p in dm.splits["val"].paths)
    assert not set(dm.splits["val"].paths) & set(dm.splits["train"].paths)


@requires_shared_data
def test_cifar10_subset_train_and_test_folders_are_ten_classes(tmp_path):
    dm = folder_dm(SHARED_DATA / "cifar10-subset", val_fraction=0.1)
    assert dm.num_classes == 10 and "train" not in dm.classes
    assert dm.split_sizes() == {"train": 4500, "val": 500, "test": 1000}


def test_with_only_train_and_val_folders_the_test_loader_yields_val_images(tmp_path):
    root = make_image_folder(tmp_path / "presplit", splits=("train",), per_class=3)
    make_image_folder(root, splits=("val",), per_class=2)
    dm = folder_dm(root, batch_size=4)
    dm.prepare_data()
    dm.configure_preprocessing(DATA_CONFIG)

    assert dm.test_split == "val"
    assert set(dm.splits) == {"train", "val"}
    test_images, test_labels = collect(dm.test_dataloader())
    val_images, val_labels = collect(dm.val_dataloader())
    assert len(test_labels) == 6
    assert torch.equal(test_labels, val_labels)
    assert torch.equal(test_images, val_images)
    assert test_labels.tolist() == dm.splits["val"].labels.tolist()


def test_loaders_need_configure_preprocessing_first(image_folder):
    dm = folder_dm(image_folder(per_class=4))
    with pytest.raises(RuntimeError, match="configure_preprocessing"):
        dm.train_dataloader()


# ---------------------------------------------------------------- every image mode and format


def test_every_image_mode_and_format_loads_as_3_channel_batches(tmp_path):
    root = write_mixed_folder(tmp_path / "mixed")
    stored_modes = set()
    for path in root.rglob("*.*"):
        with Image.open(path) as image:
            stored_modes.add(image.mode)
    assert stored_modes == {"RGB", "L", "P", "RGBA", "CMYK", "I;16"}, "the fixture no longer writes every mode"

    dm = folder_dm(root, batch_size=4, val_fraction=0.2, test_fraction=0.2, augment=AUGMENT)
    dm.prepare_data()
    assert dm.classes == ["cat", "dog", "fox"]
    assert dm.split_sizes() == {"train": 18, "val": 6, "test": 6}
    dm.configure_preprocessing(DATA_CONFIG)

    seen = {}
    for split, loader in (
        ("train", dm.train_dataloader()),
        ("val", dm.val_dataloader()),
        ("test", dm.test_dataloader()),
    ):
        count = 0
        for images, labels in loader:
            assert images.dtype == torch.uint8  # the device converts and normalises
            assert images.shape == (len(labels), 3, 32, 32)
            ready = dm.batch_transforms["train" if split == "train" else "eval"](images)
            assert ready.dtype == torch.float32 and ready.shape == images.shape
            assert torch.isfinite(ready).all()
            assert labels.dtype == torch.int64
            assert int(labels.min()) >= 0 and int(labels.max()) < dm.num_classes
            count += len(labels)
        seen[split] = count
    assert seen == {"train": 16, "val": 6, "test": 6}  # train drops its last partial batch


@pytest.mark.parametrize(("orientation", "black_half"), [(6, "top"), (8, "bottom")])
def test_exif_rotated_jpeg_is_loaded_upright(tmp_path, orientation, black_half):
    pixels = np.full((20, 40), 255, dtype=np.uint8)
    pixels[:, :20] = 0  # stored 40 wide, 20 high: left half black
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).convert("RGB").save(path, exif=exif)
    with Image.open(path) as stored:
        assert stored.size == (40, 20)

    image = Samples(labels=np.array([0]), paths=np.array([str(path)])).image(0)

    assert image.size == (20, 40)
    gray = np.asarray(image.convert("L"), dtype=np.float64)
    top, bottom = gray[:20].mean(), gray[20:].mean()
    assert (top < 30 < 225 < bottom) if black_half == "top" else (bottom < 30 < 225 < top)


# ---------------------------------------------------------------- what is and is not an image


def test_hidden_files_and_non_image_files_are_ignored(image_folder):
    root = image_folder(classes=("cat", "dog"), per_class=3)
    junk = b"\x00\x05\x16\x07 not an image"
    (root / ".DS_Store").write_bytes(junk)
    (root / "cat" / ".DS_Store").write_bytes(junk)
    (root / "cat" / "._cat_000.jpg").write_bytes(junk)  # macOS resource fork
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / "labels.csv").write_text("a,b\n")
    (root / "dog" / "Thumbs.db").write_bytes(junk)
    write_image(root / ".ipynb_checkpoints" / "a.jpg")  # a hidden folder is not a class
    write_image(root / "dog" / ".thumbnails" / "b.jpg")  # nor part of one
    write_image(root / "dog" / "more" / "nested.png")  # a plain subfolder is

    dm = folder_dm(root, val_fraction=0.25, test_fraction=0.25)

    assert dm.classes == ["cat", "dog"]
    paths = [Path(p) for samples in dm.splits.values() for p in samples.paths]
    assert len(paths) == 7
    assert root / "dog" / "more" / "nested.png" in paths
    assert all(not p.name.startswith(".") and ".thumbnails" not in p.parts for p in paths)
    assert all(p.suffix.lower() in IMAGE_EXTENSIONS for p in paths)
    for samples in dm.splits.values():
        for i in range(len(samples)):
            samples.image(i)  # each one decodes


def test_empty_class_folder_is_skipped_with_a_warning(image_folder, caplog):
    root = image_folder(classes=("cat", "dog"), per_class=4)
    (root / "empty").mkdir()
    (root / "only_junk").mkdir()
    (root / "only_junk" / ".DS_Store").write_bytes(b"\x00")
    (root / "only_junk" / "readme.txt").write_text("no images here")

    with caplog.at_level(logging.WARNING, logger="mlproj.data"):
        dm = folder_dm(root)
        classes = dm.classes

    assert classes == ["cat", "dog"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(root / "empty") in message for message in warned), warned
    assert any(str(root / "only_junk") in message for message in warned), warned


# ---------------------------------------------------------------- bad input fails early, naming the key


def test_missing_root_fails_naming_data_root(tmp_path):
    missing = tmp_path / "no_such_folder"
    message = config_error(folder_dm(missing, load=False))
    assert f"data.root={missing}" in message


@pytest.mark.parametrize("layout", ["empty folder", "class folders without images"])
def test_root_without_images_fails_naming_data_root(tmp_path, layout):
    root = tmp_path / "images"
    root.mkdir()
    if layout == "class folders without images":
        for name in ("cat", "dog"):
            (root / name).mkdir()
            (root / name / "notes.txt").write_text("x")
            (root / name / "._x.jpg").write_bytes(b"\x00")
    message = config_error(folder_dm(root, load=False))
    assert f"data.root={root}" in message
    assert "0 class folder(s)" in message


def test_a_single_class_with_images_fails(image_folder):
    root = image_folder(classes=("cat",), per_class=4)
    (root / "dog").mkdir()
    message = config_error(folder_dm(root, load=False))
    assert f"data.root={root}" in message
    assert "1 class folder(s) with images (cat)" in message
    assert "at least 2" in message


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1])
@pytest.mark.parametrize("key", ["val_fraction", "test_fraction"])
def test_fraction_outside_zero_to_one_fails_naming_key_and_value(tmp_path, key, value):
    with pytest.raises(ConfigError) as info:
        folder_dm(tmp_path, **{key: value})
    assert f"data.{key}={value}" in str(info.value)


@pytest.mark.parametrize(("val", "test", "total"), [(0.5, 0.5, "1"), (0.7, 0.4, "1.1")])
def test_val_plus_test_fraction_of_one_or_more_fails(tmp_path, val, test, total):
    with pytest.raises(ConfigError) as info:
        folder_dm(tmp_path, val_fraction=val, test_fraction=test)
    message = str(info.value)
    assert f"data.val_fraction + data.test_fraction = {total}" in message


def test_fraction_too_small_for_the_data_fails_naming_it(image_folder):
    root = image_folder(per_class=2)
    message = config_error(folder_dm(root, load=False, val_fraction=0.1, test_fraction=0.5))
    assert "data.val_fraction=0.1" in message
    assert "val split empty" in message


@pytest.mark.parametrize("split", ["val", "test"])
def test_class_in_val_or_test_but_not_in_train_fails(tmp_path, split):
    root = make_image_folder(tmp_path / "presplit", classes=("cat", "dog"), splits=("train", "val"), per_class=2)
    make_image_folder(root, classes=("cat", "wolf"), splits=(split,), per_class=2)
    message = config_error(folder_dm(root, load=False))
    assert f"data.root ({split}/)={root / split}" in message
    assert "wolf" in message
    assert "cat" not in message.split("lacks:")[1]


# ---------------------------------------------------------------- manifest


@pytest.mark.parametrize("presplit", [False, True], ids=["class-folders", "presplit"])
def test_manifest_has_one_row_per_image_with_relative_path_label_and_split(tmp_path, presplit):
    root = tmp_path / "images"
    if presplit:
        make_image_folder(root, splits=("train", "val", "test"), per_class=3)
    else:
        make_image_folder(root, per_class=7)
    dm = folder_dm(root)
    manifest = tmp_path / "out" / "manifest.csv"

    dm.write_manifest(manifest)

    columns, rows = read_manifest(manifest)
    assert columns == ["path", "label", "split", "width", "height", "bytes"]
    assert all((int(row["width"]), int(row["height"])) == (40, 32) and int(row["bytes"]) > 0 for row in rows)
    assert len(rows) == sum(dm.split_sizes().values()) == len(list(root.rglob("*.*")))
    assert Counter(row["split"] for row in rows) == dm.split_sizes()
    assert len({row["path"] for row in rows}) == len(rows)
    for row in rows:
        path = Path(row["path"])
        assert not path.is_absolute()
        assert (root / path).is_file()
        assert row["label"] == path.parent.name
        if presplit:
            assert path.parts[0] == row["split"]
    expected = {(str(Path(p).relative_to(root)), s) for s, samples in dm.splits.items() for p in samples.paths}
    assert {(row["path"], row["split"]) for row in rows} == expected
    assert not list(manifest.parent.glob(".*.tmp-*"))


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits_a") / "digits"
    DigitsDataModule(str(root), num_workers=0).prepare_data()
    return root


def test_digits_prepare_data_writes_1797_pngs_in_10_class_folders(digits_root):
    from sklearn.datasets import load_digits

    digits = load_digits()
    assert sorted(p.name for p in digits_root.iterdir()) == [str(d) for d in range(10)]
    files = sorted(digits_root.rglob("*"))
    pngs = [p for p in files if p.is_file()]
    assert len(pngs) == 1797
    assert all(p.suffix == ".png" for p in pngs)
    counts = Counter(p.parent.name for p in pngs)
    assert [counts[str(d)] for d in range(10)] == np.bincount(digits.target).tolist()
    assert list(digits_root.parent.iterdir()) == [digits_root], "a staging folder was left behind"

    first = digits_root / str(digits.target[0]) / "0000.png"
    with Image.open(first) as image:
        assert image.size == (8, 8)
        assert image.mode == "L"
        assert np.array_equal(np.asarray(image), np.round(digits.images[0] * 255 / 16).astype(np.uint8))

    dm = DigitsDataModule(str(digits_root), num_workers=0).load()
    assert dm.classes == [str(d) for d in range(10)]
    assert sum(dm.split_sizes().values()) == 1797


def test_digits_second_prepare_data_leaves_files_untouched(digits_root):
    before = {p: p.stat().st_mtime_ns for p in digits_root.rglob("*")}
    DigitsDataModule(str(digits_root), num_workers=0).prepare_data()
    after = {p: p.stat().st_mtime_ns for p in digits_root.rglob("*")}
    assert after == before
    assert list(digits_root.parent.iterdir()) == [digits_root]


def test_digits_written_to_two_fresh_roots_are_byte_identical(digits_root, tmp_path):
    other = tmp_path / "elsewhere" / "digits"
    DigitsDataModule(str(other), num_workers=0).prepare_data()
    first, second = file_digests(digits_root), file_digests(other)
    assert len(first) == 1797
    assert first == second


# ---------------------------------------------------------------- mushrooms


def write_mushrooms(folder: Path, genera=GENERA, per_genus: int = 20) -> Path:
    for g, genus in enumerate(genera):
        for i in range(per_genus):
            write_image(folder / genus / f"{genus}_{i:03d}.jpg", size=(12, 10), seed=100 * g + i)
    return folder


@pytest.fixture
def mushrooms_from_config(tmp_path):
    """The data module `data=mushrooms data.root=...` builds."""
    from hydra.core.global_hydra import GlobalHydra

    from mlproj.build import build_datamodule

    def build(root: Path) -> MushroomsDataModule:
        cfg = compose("train", ["data=mushrooms", f"data.root={root}", "data.num_workers=0"], tmp_path / "run")
        return build_datamodule(cfg.data, preprocessing=None)

    yield build
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("point_at", ["archive folder", "Mushrooms folder"])
def test_mushrooms_genera_are_split_70_15_15(tmp_path, mushrooms_from_config, caplog, point_at):
    archive = tmp_path / "mushrooms"
    write_mushrooms(archive / "Mushrooms")
    root = archive if point_at == "archive folder" else archive / "Mushrooms"

    with caplog.at_level(logging.WARNING, logger="mlproj.data"):
        dm = mushrooms_from_config(root)
        assert isinstance(dm, MushroomsDataModule)
        classes = dm.classes

    assert classes == list(GENERA)
    assert dm.split_sizes() == {"train": 126, "val": 27, "test": 27}
    assert dm.class_counts("train").tolist() == [14] * 9
    assert dm.class_counts("val").tolist() == [3] * 9
    assert dm.class_counts("test").tolist() == [3] * 9
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    for samples in dm.splits.values():
        assert all(Path(p).parent.parent == archive / "Mushrooms" for p in samples.paths)


def test_mushrooms_missing_genera_give_a_warning(tmp_path, caplog):
    present = ("Amanita", "Boletus", "Russula")
    root = write_mushrooms(tmp_path / "mushrooms" / "Mushrooms", genera=present, per_genus=7)

    with caplog.at_level(logging.WARNING, logger="mlproj.data"):
        dm = MushroomsDataModule(str(tmp_path / "mushrooms"), num_workers=0).load()
        classes = dm.classes

    assert classes == list(present)
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(root) in warned
    for genus in set(GENERA) - set(present):
        assert genus in warned
    for genus in present:
        assert genus not in warned


# ---------------------------------------------------------------- CIFAR-100


@pytest.fixture
def cifar(tmp_path) -> tuple[Path, dict[str, dict]]:
    root = make_cifar100(tmp_path / "cifar100", n_train=600, n_test=200)
    batches = {name: pickle.loads((root / "cifar-100-python" / name).read_bytes()) for name in ("train", "test")}
    return root, batches


def test_cifar100_splits_classes_and_pixels_come_from_the_archive_batches(cifar):
    root, batches = cifar
    dm = CIFAR100DataModule(str(root), download=False, batch_size=64, num_workers=0, val_fraction=0.1)
    dm.prepare_data()
    dm.load()

    assert dm.classes == [f"class{i:02d}" for i in range(100)]
    assert dm.split_sizes() == {"train": 500, "val": 100, "test": 200}
    # 6 training images per class: val takes round(0.6) = 1 of each, stratified
    assert dm.class_counts("val").tolist() == [1] * 100
    assert dm.class_counts("train").tolist() == [5] * 100
    assert dm.class_counts("test").tolist() == [2] * 100
    ids = {split: [samples.describe(i) for i in range(len(samples))] for split, samples in dm.splits.items()}
    assert set(ids["train"]).isdisjoint(ids["val"])
    assert sorted(ids["train"] + ids["val"]) == sorted(f"cifar-100-python/train/{i}" for i in range(600))
    assert sorted(ids["test"]) == sorted(f"cifar-100-python/test/{i}" for i in range(200))

    for split, samples in dm.splits.items():
        batch = batches["test" if split == "test" else "train"]
        for i in (0, len(samples) // 2, len(samples) - 1):
            row = int(samples.describe(i).rsplit("/", 1)[1])
            image = samples.image(i)
            assert image.size == (32, 32)
            assert image.mode == "RGB"
            expected = batch["data"][row].reshape(3, 32, 32).transpose(1, 2, 0)
            assert np.array_equal(np.asarray(image), expected)
            assert samples.labels[i] == batch["fine_labels"][row]

    dm.configure_preprocessing(DATA_CONFIG)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        images, labels = next(iter(loader))
        assert images.shape == (64, 3, 32, 32)
        assert images.dtype == torch.uint8
        assert int(labels.min()) >= 0 and int(labels.max()) < 100


def test_cifar100_manifest_names_batch_and_row(cifar, tmp_path):
    root, batches = cifar
    dm = CIFAR100DataModule(str(root), download=False, num_workers=0).load()
    manifest = tmp_path / "manifest.csv"
    dm.write_manifest(manifest)

    columns, rows = read_manifest(manifest)
    assert columns == ["path", "label", "split", "width", "height", "bytes"]
    assert all((row["width"], row["height"], row["bytes"]) == ("32", "32", "") for row in rows)
    assert len(rows) == 800
    assert Counter(row["split"] for row in rows) == dm.split_sizes()
    assert {
        "path": "cifar-100-python/test/123",
        "label": dm.classes[batches["test"]["fine_labels"][123]],
        "split": "test",
        "width": "32",
        "height": "32",
        "bytes": "",
    } in rows
    for row in rows:
        _, batch, index = row["path"].split("/")
        assert batch == ("test" if row["split"] == "test" else "train")
        assert row["label"] == dm.classes[batches[batch]["fine_labels"][int(index)]]


def test_cifar100_without_files_and_download_off_fails_naming_data_root(tmp_path):
    root = tmp_path / "cifar100"
    dm = CIFAR100DataModule(str(root), download=False, num_workers=0)
    with pytest.raises(ConfigError) as info:
        dm.prepare_data()
    assert f"data.root={root}" in str(info.value)
    assert "data.download=true" in str(info.value)
    with pytest.raises(ConfigError, match=r"data\.root="):
        dm.load()


def test_cifar100_val_fraction_outside_zero_to_one_fails(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.val_fraction=1\.5"):
        CIFAR100DataModule(str(tmp_path), download=False, val_fraction=1.5)


# ---------------------------------------------------------------- transforms


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "P-transparent", "CMYK", "I;16", "LA"])
def test_to_rgb_turns_every_mode_into_rgb(tmp_path, mode):
    path = write_image(tmp_path / f"image{'.jpg' if mode == 'CMYK' else '.png'}", mode=mode, size=(16, 12))
    with Image.open(path) as image:
        image.load()
        assert image.mode == mode.split("-")[0]
        converted = to_rgb(image)
    assert converted.mode == "RGB"
    assert converted.size == (16, 12)


def test_to_rgb_keeps_the_contrast_of_16_bit_images():
    gradient = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    rgb = np.asarray(to_rgb(Image.fromarray(gradient)))
    assert rgb.shape == (64, 64, 3)
    assert rgb.min() == 0 and rgb.max() == 255
    assert 100 < rgb.mean() < 155, "16-bit values were clipped instead of scaled"


@pytest.mark.parametrize("size", [32, 24])
def test_build_transform_gives_uint8_crops_of_the_configured_size(size):
    config = {**DATA_CONFIG, "input_size": [3, size, size]}
    train = build_transform(config, AUGMENT)
    evaluate = build_transform(config)
    assert "RandAugment" in repr(train)
    assert "RandomErasing" not in repr(train) and "Flip" not in repr(train), "flips and erasing belong to the device"
    assert "RandAugment" not in repr(build_transform(config, {**AUGMENT, "auto_augment": None}))

    random.seed(0)  # timm's crops and RandAugment draw from `random`, random erasing from torch
    torch.manual_seed(0)
    for mode, image_size in (("RGB", (50, 40)), ("L", (20, 30)), ("RGBA", (size, size))):
        image = in_memory_image(mode, image_size)
        for transform in (train, evaluate):
            tensor = transform(image)
            assert tensor.dtype == torch.uint8
            assert tensor.shape == (3, size, size)
    image = in_memory_image("RGB", (50, 40))
    assert torch.equal(evaluate(image), evaluate(image))
    assert any(not torch.equal(train(image), train(image)) for _ in range(5)), "training transform does not augment"


@pytest.mark.parametrize("policy", ["rand-m9-mstd0.5-inc1", "rand-m10-n3-mstd0-inc1", "rand-m1-n3-mstd0", "v0"])
def test_auto_augment_at_extreme_magnitudes_does_not_crash(policy):
    """Posterize asks for 0 bits at the ends of the magnitude range; Pillow 13 raises for that."""
    random.seed(0)
    torch.manual_seed(0)
    transform = build_transform({**DATA_CONFIG, "input_size": [3, 16, 16]}, {**AUGMENT, "auto_augment": policy})
    image = in_memory_image("RGB", (16, 16))
    for _ in range(3000):  # with seed 0, the first magnitude of 10 in rand-m9-mstd0.5 comes at call 1680
        assert transform(image).shape == (3, 16, 16)


# ---------------------------------------------------------------- the real hymenoptera photos


@requires_shared_data
@pytest.mark.skipif(not (SHARED_DATA / "hymenoptera").is_dir(), reason="../shared/data/hymenoptera is absent")
def test_hymenoptera_presplit_folders_give_ants_and_bees_without_the_gif():
    root = SHARED_DATA / "hymenoptera"
    dm = folder_dm(root, batch_size=4)
    dm.prepare_data()

    assert dm.classes == ["ants", "bees"]
    assert dm.test_split == "val"
    assert set(dm.splits) == {"train", "val"}
    for split, samples in dm.splits.items():
        paths = [Path(p) for p in samples.paths]
        assert not [p for p in paths if p.suffix.lower() == ".gif"]
        photos = [p for p in (root / split).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg")]
        assert sorted(paths) == sorted(photos)

    dm.configure_preprocessing(DATA_CONFIG)
    images, labels = next(iter(dm.test_dataloader()))
    assert images.shape == (4, 3, 32, 32)
    assert set(labels.tolist()) <= {0, 1}


def test_cifar10_reads_its_five_training_batches_and_test_batch(tmp_path):
    from mlproj.data.cifar import CIFAR10DataModule

    from conftest import make_cifar10

    dm = CIFAR10DataModule(str(make_cifar10(tmp_path)), download=False, num_workers=0, val_fraction=0.2).load()
    assert dm.classes == [f"kind{i}" for i in range(10)]
    assert dm.split_sizes() == {"train": 200, "val": 50, "test": 100}
    assert dm.splits["train"].pixels.shape[1:] == (32, 32, 3)
    ids = {str(i).split("/")[1] for samples in dm.splits.values() for i in samples.ids}
    assert ids == {*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"}


def test_an_incomplete_cifar10_archive_is_named(tmp_path):
    from mlproj.data.cifar import CIFAR10DataModule

    from conftest import make_cifar10

    root = make_cifar10(tmp_path)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    dm = CIFAR10DataModule(str(root), download=False, num_workers=0)
    with pytest.raises(ConfigError, match=r"has no complete cifar-10-batches-py/: set data.download=true"):
        dm.prepare_data()
