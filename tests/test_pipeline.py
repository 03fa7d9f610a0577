"""Decode once, feed the device: the pixel cache, in-memory batches, and device transforms that match the CPU ones."""

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlproj.data.batch_transforms import BatchTransform, padded_random_crop, random_resized_crop
from mlproj.data.cache import CachedPixels, cached_pixels, load_resized
from mlproj.data.imagefolder import ImageFolderDataModule
from mlproj.data.transforms import build_batch_transform, build_transform

from conftest import DATA_CONFIG, SHARED_DATA, make_image_folder, write_image

AUGMENT = {"crop": "random_resized", "hflip": 0.5, "scale": [0.5, 1.0], "ratio": [0.75, 1.3333333]}


def write_sized_folder(root: Path, sizes: list[tuple[int, int]], classes=("cat", "dog")) -> Path:
    """One JPEG and one PNG of each size per class: real files, several shapes."""
    seed = 0
    for name in classes:
        for i, size in enumerate(sizes):
            for suffix in (".jpg", ".png"):
                write_image(root / name / f"{name}_{i}{suffix}", size=size, seed=seed)
                seed += 1
    return root


def cached_dm(root: Path, cache: Path, **kwargs) -> ImageFolderDataModule:
    options = {"batch_size": 4, "num_workers": 0, "cache_dir": str(cache), "cache_short_side": 16, **kwargs}
    dm = ImageFolderDataModule(str(root), **options)
    dm.prepare_data()
    return dm.load()


def smooth_image(width: int, height: int) -> Image.Image:
    """Gradients, so resampling differences stay small and measurable."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, (x + y) / 2], axis=-1).astype(np.uint8))


# ---------------------------------------------------------------- the pixel cache


def test_cache_holds_every_image_upright_at_the_short_side_keeping_its_shape(tmp_path):
    paths = [
        write_image(tmp_path / "small.png", size=(12, 10)),  # smaller than the short side: kept as it is
        write_image(tmp_path / "wide.jpg", size=(64, 32)),
        write_image(tmp_path / "tall.png", mode="L", size=(20, 40)),
        write_image(tmp_path / "cmyk.jpg", mode="CMYK", size=(30, 30)),
        write_image(tmp_path / "deep.png", mode="I;16", size=(48, 24)),
    ]
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x20, shown rotated 90 degrees: 20 wide, 40 high
    Image.new("RGB", (40, 20), "white").save(tmp_path / "rotated.jpg", exif=exif)
    paths.append(tmp_path / "rotated.jpg")

    pixels, reused = cached_pixels([str(p) for p in paths], 16, tmp_path / "cache")

    assert not reused
    assert [pixels[i].shape for i in range(len(paths))] == [
        (10, 12, 3),
        (16, 32, 3),
        (32, 16, 3),
        (16, 16, 3),
        (16, 32, 3),
        (32, 16, 3),
    ]
    for i, path in enumerate(paths):
        assert np.array_equal(pixels[i], load_resized(str(path), 16))
        assert pixels[i].dtype == np.uint8
    with Image.open(paths[0]) as small:
        assert np.array_equal(pixels[0], np.asarray(small.convert("RGB")))
    assert pixels.shape is None, "images of several sizes are not one array"
    assert pixels.nbytes == sum(pixels[i].nbytes for i in range(len(paths)))


def test_cache_is_reused_while_files_and_short_side_are_unchanged(tmp_path):
    paths = [str(write_image(tmp_path / f"img{i}.jpg", size=(40, 30), seed=i)) for i in range(6)]
    cache = tmp_path / "cache"
    first, reused = cached_pixels(paths, 16, cache)
    assert not reused
    built = (first.folder / "pixels.u8").stat().st_mtime_ns

    again, reused = cached_pixels(paths, 16, cache)
    assert reused and again.folder == first.folder
    assert (again.folder / "pixels.u8").stat().st_mtime_ns == built, "an unchanged cache was written again"

    bigger, reused = cached_pixels(paths, 24, cache)
    assert not reused and bigger.folder != first.folder and bigger[0].shape == (24, 32, 3)

    write_image(Path(paths[3]), size=(40, 30), seed=99)  # new content, new size in bytes or mtime
    os.utime(paths[3], ns=(0, Path(paths[3]).stat().st_mtime_ns + 10**9))
    changed, reused = cached_pixels(paths, 16, cache)
    assert not reused and changed.folder != first.folder
    assert np.array_equal(changed[3], load_resized(paths[3], 16))


def test_a_failed_build_leaves_no_cache_behind(tmp_path):
    good = [str(write_image(tmp_path / f"img{i}.png", seed=i)) for i in range(3)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"<html>not an image</html>")
    cache = tmp_path / "cache"
    with pytest.raises(OSError):
        cached_pixels([*good, str(broken)], 16, cache)
    assert list((cache / "pixels").iterdir()) == [], "a half-written cache (or its staging folder) was left"

    leftover = cache / "pixels" / ".stale.tmp-1"  # as a killed process would leave it
    leftover.mkdir()
    pixels, reused = cached_pixels(good, 16, cache)
    assert not reused and len(pixels) == 3


def test_cached_pixels_pickle_as_a_path_not_as_pixels(tmp_path):
    import pickle

    paths = [str(write_image(tmp_path / f"img{i}.png", size=(64, 64), seed=i)) for i in range(4)]
    pixels, _ = cached_pixels(paths, 64, tmp_path / "cache")
    subset = pixels[np.array([3, 1])]
    _ = subset[0]  # opens the memory map
    blob = pickle.dumps(subset)
    assert len(blob) < 2000, "loader workers would receive copies of the pixels"
    restored = pickle.loads(blob)
    assert np.array_equal(restored[0], pixels[3]) and np.array_equal(restored[1], pixels[1])
    assert np.array_equal(np.asarray(subset), np.stack([pixels[3], pixels[1]]))


# ---------------------------------------------------------------- where batches come from


def test_small_data_of_one_size_is_batched_from_memory_without_workers(tmp_path):
    root = make_image_folder(tmp_path / "pics", per_class=8)  # every image 40x32
    dm = cached_dm(root, tmp_path / "cache", num_workers=2, augment=AUGMENT)
    dm.configure_preprocessing(DATA_CONFIG)

    assert dm.batched == {"train": True, "eval": True}
    assert dm.pixel_cache is not None and dm.pixel_cache.parent == tmp_path / "cache" / "pixels"
    stored = np.load(dm.pixel_cache / "labels.npy")
    assert stored.tolist() == [label for samples in dm.splits.values() for label in samples.labels.tolist()]
    loader = dm.train_dataloader()
    assert loader.num_workers == 0
    images, _ = next(iter(loader))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 16, 20), "whole cached images, cropped later"
    ready = dm.batch_transforms["train"](images)
    assert ready.dtype == torch.float32 and ready.shape == (4, 3, 32, 32)
    val_images, _ = next(iter(dm.val_dataloader()))
    assert dm.batch_transforms["eval"](val_images).shape[1:] == (3, 32, 32)


def test_images_of_several_sizes_are_cropped_by_workers_from_the_memory_map(tmp_path):
    root = write_sized_folder(tmp_path / "pics", [(40, 30), (30, 50), (64, 48), (36, 36)])
    dm = cached_dm(root, tmp_path / "cache", num_workers=2, augment=AUGMENT, val_fraction=0.25, test_fraction=0.25)
    dm.configure_preprocessing(DATA_CONFIG)

    assert dm.batched == {"train": False, "eval": False}
    assert isinstance(dm.splits["train"].pixels, CachedPixels)
    loader = dm.train_dataloader()
    assert loader.num_workers == 2
    for images, _ in loader:
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)


def test_a_memory_budget_too_small_sends_uniform_data_to_workers(tmp_path):
    root = make_image_folder(tmp_path / "pics", per_class=8)
    dm = cached_dm(root, tmp_path / "cache", memory_mb=0.001)
    dm.configure_preprocessing(DATA_CONFIG)
    assert dm.batched == {"train": False, "eval": False}


def test_pil_only_augmentations_crop_per_image_even_in_memory(tmp_path):
    root = make_image_folder(tmp_path / "pics", per_class=8)
    dm = cached_dm(root, tmp_path / "cache", augment={**AUGMENT, "auto_augment": "rand-m9-mstd0.5-inc1"})
    dm.configure_preprocessing(DATA_CONFIG)
    assert dm.batched == {"train": False, "eval": True}
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32)


def test_memory_and_worker_paths_give_identical_evaluation_batches(tmp_path):
    root = write_sized_folder(tmp_path / "pics", [(32, 32)] * 3)
    config = {**DATA_CONFIG, "crop_pct": 1.0}
    batches = []
    for memory_mb in (100, 0):
        dm = cached_dm(root, tmp_path / "cache", cache_short_side=32, memory_mb=memory_mb)
        dm.configure_preprocessing(config)
        images, labels = next(iter(dm.val_dataloader()))
        batches.append((dm.batch_transforms["eval"](images), labels))
    assert torch.equal(batches[0][1], batches[1][1])
    torch.testing.assert_close(batches[0][0], batches[1][0])


def test_a_digits_run_trains_from_memory(train_in_process, digits_root):
    metrics, run_dir = train_in_process(f"data.root={digits_root}", "debug=fdr")
    assert (run_dir / "manifest.csv").is_file() and "test/acc" in metrics
    assert list((run_dir.parent / ".cache" / "pixels").iterdir()), "the digits were not cached"


# ---------------------------------------------------------------- device transforms match the CPU ones


def test_device_normalisation_equals_torchvision_on_floats():
    from torchvision.transforms.functional import normalize, to_tensor

    image = smooth_image(24, 16)
    transform = BatchTransform(DATA_CONFIG["mean"], DATA_CONFIG["std"])
    ours = transform(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None])[0]
    reference = normalize(to_tensor(image), DATA_CONFIG["mean"], DATA_CONFIG["std"])
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_random_resized_crop_draws_timms_box_and_resamples_like_pil(dtype):
    """Same random state, same box as timm's PIL transform; antialiased bilinear resampling agrees within a few
    levels, in uint8 (loader workers) and float (the device)."""
    from timm.data.transforms import RandomResizedCropAndInterpolation

    image = smooth_image(96, 64)
    timm_crop = RandomResizedCropAndInterpolation(32, AUGMENT["scale"], AUGMENT["ratio"], interpolation="bilinear")
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].to(dtype)
    differences = []
    for seed in range(20):
        random.seed(seed)
        expected = torch.from_numpy(np.array(timm_crop(image))).permute(2, 0, 1).float()
        random.seed(seed)
        got = random_resized_crop(tensor, 32, AUGMENT["scale"], AUGMENT["ratio"], "bilinear")[0]
        assert got.dtype == dtype
        differences.append((got.float() - expected).abs().mean().item())
    assert max(differences) < 2.0, differences


def test_loader_and_device_crops_are_the_same_code():
    """A worker crops one uint8 image at a time; the device crops float batches: same boxes, same pixels."""
    image = np.array(smooth_image(60, 40))
    transform = build_transform(DATA_CONFIG, AUGMENT)
    device_crop = build_batch_transform(DATA_CONFIG, AUGMENT, crop_here=True).crop
    random.seed(3)
    in_worker = transform(image)
    random.seed(3)
    on_device = device_crop(torch.from_numpy(image).permute(2, 0, 1)[None].float())[0]
    assert in_worker.dtype == torch.uint8 and in_worker.shape == (3, 32, 32)
    assert (in_worker.float() - on_device).abs().max() <= 1.0  # uint8 rounding


def test_device_padded_crop_offsets_are_uniform_like_torchvisions_random_crop():
    from torchvision.transforms import RandomCrop

    image = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    image[0, 0, 4, 4] = 255  # a single bright pixel: where it lands tells the offset
    torch.manual_seed(0)
    draws = 4000
    ours = padded_random_crop(image.expand(draws, 1, 8, 8).contiguous(), padding=2)
    theirs = torch.stack([RandomCrop(8, padding=2)(image[0]) for _ in range(draws)])

    def positions(crops: torch.Tensor) -> np.ndarray:
        flat = crops.reshape(len(crops), -1).argmax(dim=1)
        return np.bincount(flat.numpy(), minlength=64).reshape(8, 8)[2:7, 2:7]

    ours_counts, theirs_counts = positions(ours), positions(theirs)
    assert (ours_counts > 0).all() and (theirs_counts > 0).all(), "some offsets are never drawn"
    expected = draws / 25
    assert np.abs(ours_counts - expected).max() < 0.35 * expected
    assert np.abs(theirs_counts - expected).max() < 0.35 * expected
    assert torch.equal(ours.sum(dim=(1, 2, 3)), torch.full((draws,), 255)), "a crop lost or doubled the pixel"


def test_the_batch_transform_leaves_its_input_alone():
    batch = torch.rand(4, 3, 8, 8) * 255
    before = batch.clone()
    BatchTransform([0.5] * 3, [0.25] * 3, hflip=1.0)(batch)
    assert torch.equal(batch, before)


def test_device_flips_each_image_on_its_own():
    image = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(1, 3, 1, 1)
    transform = BatchTransform([0.0] * 3, [1 / 255] * 3, hflip=0.5)
    torch.manual_seed(0)
    out = transform(image.repeat(2000, 1, 1, 1))
    flipped = (out[:, 0, 0, 0] == 3).float()
    assert 0.45 < flipped.mean().item() < 0.55
    assert set(out[:, 0, 0, 0].tolist()) == {0.0, 3.0}


def test_training_batch_transform_crops_on_the_device_only_when_the_loader_did_not():
    whole = build_batch_transform(DATA_CONFIG, AUGMENT, crop_here=True)
    after_loader = build_batch_transform(DATA_CONFIG, AUGMENT, crop_here=False)
    assert whole.crop.kind == "random_resized" and after_loader.crop is None
    assert whole.hflip == after_loader.hflip == 0.5
    assert build_batch_transform(DATA_CONFIG, None, crop_here=True).crop.kind == "center"
    batch = torch.randint(0, 256, (3, 3, 20, 28), dtype=torch.uint8)
    ready = whole(batch)
    assert ready.shape == (3, 3, 32, 32)
    assert ready.is_contiguous(memory_format=torch.channels_last), "convolutions run faster channels-last"


@pytest.mark.skipif(not (SHARED_DATA / "hymenoptera").is_dir(), reason="../shared/data/hymenoptera is absent")
def test_real_photos_go_through_the_cache_at_224(tmp_path):
    root = SHARED_DATA / "hymenoptera"
    dm = cached_dm(root, tmp_path / "cache", cache_short_side=256, augment=AUGMENT, validate=True)
    dm.configure_preprocessing({**DATA_CONFIG, "input_size": [3, 224, 224], "crop_pct": 0.875})
    assert dm.batched == {"train": False, "eval": False}
    shapes = {dm.splits["train"].pixels[i].shape for i in range(len(dm.splits["train"]))}
    short_sides = [min(shape[:2]) for shape in shapes]
    assert max(short_sides) == 256 and len(shapes) > 1, "photos keep their aspect ratio, at most 256 px short side"
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 224, 224) and images.dtype == torch.uint8


def test_a_cache_smaller_than_the_models_eval_resize_is_named(tmp_path, caplog):
    root = make_image_folder(tmp_path / "pics", per_class=4)
    dm = cached_dm(root, tmp_path / "cache", cache_short_side=16)
    dm.configure_preprocessing({**DATA_CONFIG, "input_size": [3, 224, 224], "crop_pct": 0.875})
    assert "data.cache_short_side=16 is below the model's eval resize (256 px for 224 px input)" in caplog.text
    assert "set data.cache_short_side=256" in caplog.text


def test_an_unknown_crop_is_named_in_one_line():
    from mlproj.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"data\.augment\.crop=zoom is not one of random_resized, pad or null: the training crop"
    ):
        build_transform(DATA_CONFIG, {**AUGMENT, "crop": "zoom"})
