"""Training from a shard set streamed from a bucket: each rank's part, decoded in workers or on the device, resumed
exactly."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm.data.transforms  # noqa: F401 - see EMULATOR_READS
import torch
from litdata import StreamingDataset
from PIL import Image

from mlproj.data.cache import load_resized
from mlproj.data.datamodule import ImageDataset
from mlproj.data.imagefolder import ImageFolderDataModule
from mlproj.data.shard_format import INDEX, MANIFEST, ShardIndex, ShardReadError
from mlproj.data.splits import relative_to, write_manifest
from mlproj.errors import ConfigError
from mlproj.storage import write_text

from conftest import DATA_CONFIG, ROOT, make_image_folder, run_cli

SHORT_SIDE = 32
AUGMENT = {"crop": "random_resized", "hflip": 0.5, "scale": [0.5, 1.0], "ratio": [0.75, 1.3333333]}
EMULATOR_READS = {"LITDATA_ASYNC_CHUNK_PREFETCH": "0"}  # LitData's async prefetch (obstore) cannot reach the emulator
# timm is imported above, before any loader worker forks: a worker importing it while LitData's download thread
# starts could have pytest rewrite timm's `test_time_pool.py` during a concurrent compile, which CPython 3.11 fails
# ("AST constructor recursion depth mismatch"). Training processes import timm with the model, before their workers.


# ---------------------------------------------------------------- shard sets, written as `mlproj prepare` does


def encode(path: str, short_side: int) -> bytes:
    """The stored image: resized to the short side as the pixel cache does, JPEG at quality 90, or PNG when it was
    no larger than the short side."""
    pixels = load_resized(path, short_side)
    with Image.open(path) as image:
        lossless = min(image.size) <= short_side
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG" if lossless else "JPEG", quality=90)
    return buffer.getvalue()


def write_shards(root: Path, out: Path, chunk_size: int = 4, **options: Any) -> Path:
    """The checked splits of `root` as a shard set in the folder `out` (format: mlproj.data.shard_format).

    Each split is written with LitData's BinaryWriter in this process: the writer `litdata.optimize` runs in its
    workers, without the seconds it takes to start them.
    """
    from litdata.streaming.writer import BinaryWriter

    dm = ImageFolderDataModule(str(root), validate=False, cache_dir=str(out.parent / ".cache-write"), **options).load()
    for name, samples in dm.splits.items():
        writer = BinaryWriter(str(out / name), chunk_size=chunk_size)
        for i, (path, label) in enumerate(zip(samples.paths, samples.labels, strict=True)):
            image = encode(str(path), SHORT_SIDE)
            writer[i] = {"image": image, "label": int(label), "path": relative_to(str(path), dm.root)}
        writer.done()
        writer.merge()
    write_manifest(out / MANIFEST, dm.splits, dm.classes, dm.root)
    index = ShardIndex(
        classes=dm.classes,
        splits=dm.split_sizes(),
        class_counts={name: dm.class_counts(name).tolist() for name in dm.splits},
        fingerprint="test",
        data_version={},
        short_side=SHORT_SIDE,
        quality=90,
        source=str(dm.root),
    )
    write_text(out / INDEX, index.to_json())  # last, as the writer does
    return out


def upload(local: Path, bucket: str, name: str) -> str:
    import gcsfs

    gcsfs.GCSFileSystem.clear_instance_cache()
    gcsfs.GCSFileSystem().put(str(local), f"{bucket.removeprefix('gs://')}/{name}", recursive=True)
    return f"{bucket}/{name}"


def photo_folder(root: Path, per_class: int, classes=("cat", "dog", "fox")) -> Path:
    """Class folders of JPEG photos larger than the short side (stored as JPEG), each class its own tint."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(0, 120, (40 + i % 3 * 4, 52, 3))
            pixels = np.clip(noise + 60 * label, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}_{i:03d}.jpg", quality=95)
    return root


@pytest.fixture(scope="module")
def png_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(images, shards): 40x32 images, no larger than the short side, so stored losslessly (PNG)."""
    base = tmp_path_factory.mktemp("png")
    images = make_image_folder(base / "pics", per_class=10, suffixes=(".png",))
    return images, write_shards(images, base / "shards")


@pytest.fixture(scope="module")
def jpeg_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(images, shards): photos shrunk to the short side and stored as JPEG."""
    base = tmp_path_factory.mktemp("jpeg")
    images = photo_folder(base / "pics", per_class=14)
    return images, write_shards(images, base / "shards")


def streamed(images: Path, shards: str | Path, tmp_path: Path, **options: Any) -> ImageFolderDataModule:
    settings = {"batch_size": 4, "num_workers": 2, "augment": AUGMENT, "cache_dir": str(tmp_path / "cache"), **options}
    dm = ImageFolderDataModule(str(images), shards=str(shards), **settings).load()
    dm.configure_preprocessing(DATA_CONFIG)
    return dm


def epoch_of(loader: Any, epoch: int, batches: int | None = None) -> list[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """(indices, uint8 images, labels) of every batch of one epoch, or of its first `batches` (the iterator is then
    left unfinished, as Lightning leaves it when it has had the loader's length)."""
    loader.epoch_source = lambda: epoch
    return [(images.indices.tolist(), images.crops, labels) for images, labels in islice(loader, batches)]


# ---------------------------------------------------------------- settings and the index


def test_load_reads_only_the_index(png_set: tuple[Path, Path], tmp_path: Path) -> None:
    """Classes, split sizes and class counts come from mlproj-shards.json: no chunk is listed or read."""
    _, shards = png_set
    index_only = tmp_path / "index-only"
    index_only.mkdir()
    (index_only / INDEX).write_text((shards / INDEX).read_text())
    dm = ImageFolderDataModule(str(tmp_path / "no-such-root"), shards=str(index_only)).load()
    index = json.loads((shards / INDEX).read_text())
    assert dm.classes == index["classes"] == ["cat", "dog", "fox"]
    assert dm.split_sizes() == index["splits"] and sum(dm.split_sizes().values()) == 30
    assert dm.class_counts("train").tolist() == index["class_counts"]["train"]
    assert {name: len(split) for name, split in dm.splits.items()} == index["splits"]
    assert dm.test_split == "test"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"decode": "gpu"}, "data.decode=gpu is not one of auto, workers, device: where shard JPEGs are decoded"),
        ({"stream_cache_gb": 0}, "data.stream_cache_gb=0 is not a number > 0: local disk for streamed chunks, in GB"),
        ({"shard_quality": 101}, "data.shard_quality=101 is not an integer from 1 to 100: the JPEG quality"),
    ],
)
def test_shard_settings_are_checked_in_one_line(tmp_path: Path, option: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        ImageFolderDataModule(str(tmp_path), shards=str(tmp_path), **option)


def test_a_cache_too_small_for_the_loader_workers_is_refused(
    jpeg_set: tuple[Path, Path], tmp_path: Path, gcs_emulator
) -> None:
    images, shards = jpeg_set
    url = upload(shards, gcs_emulator.bucket("small-cache"), "set")
    dm = streamed(images, url, tmp_path, stream_cache_gb=1e-6)
    with pytest.raises(ConfigError, match=r"^data.stream_cache_gb=1e-06 leaves .* for the train split .* raise"):
        dm.train_dataloader()


# ---------------------------------------------------------------- what the loaders send


def test_train_crops_from_shards_equal_the_cache_paths_for_the_same_images(
    png_set: tuple[Path, Path], tmp_path: Path
) -> None:
    """Images stored losslessly decode to the cache's pixels; each gets the crop the cache path gives it in that
    epoch, whichever worker and batch read it."""
    images, shards = png_set
    options = {"cache_short_side": SHORT_SIDE, "validate": False, "memory_mb": 0, "augment": AUGMENT}
    cache = ImageFolderDataModule(str(images), cache_dir=str(tmp_path / "cache"), **options).load()
    cache.configure_preprocessing(DATA_CONFIG)
    assert not cache.batched["train"], "the cache path crops per image in its workers here, as streaming does"
    expected = ImageDataset(cache.splits["train"], cache._transforms["train"])
    dm = streamed(images, shards, tmp_path)
    loader, size = dm.train_dataloader(), len(dm.splits["train"])
    for epoch in (0, 1):
        for indices, crops, labels in epoch_of(loader, epoch):
            for i, crop, label in zip(indices, crops, labels, strict=True):
                want, want_label = expected[epoch * size + i]
                assert torch.equal(crop, want), f"image {i}, epoch {epoch}"
                assert label == want_label


def test_each_epoch_sees_every_training_image_once_but_the_last_partial_batch(
    png_set: tuple[Path, Path], tmp_path: Path
) -> None:
    images, shards = png_set
    dm = streamed(images, shards, tmp_path)
    loader, size = dm.train_dataloader(), len(dm.splits["train"])
    orders, workers = [], []
    for epoch in (0, 1):
        seen = [i for indices, _, _ in epoch_of(loader, epoch) for i in indices]
        assert len(seen) == len(set(seen)) == size - size % 4 == 4 * len(loader)
        orders.append(seen)
        workers.append([worker.pid for worker in loader._iterator._workers])
    assert orders[0] != orders[1], "each epoch has its own order"
    assert workers[0] == workers[1], "the loader workers persist across epochs"
    assert orders[1] == [i for indices, _, _ in epoch_of(loader, 1) for i in indices], "the order is the epoch's"
    for split in ("val", "test"):
        seen = [i for images, _ in getattr(dm, f"{split}_dataloader")() for i in images.indices.tolist()]
        assert sorted(seen) == list(range(len(dm.splits[split]))), f"{split}: every image once"


def test_two_ranks_read_disjoint_parts_whose_union_is_the_epoch(
    png_set: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LitData reads the ranks from the process group, or from WORLD_SIZE / GLOBAL_RANK as here."""
    images, shards = png_set
    parts: dict[str, list[list[int]]] = {"train": [], "val": []}
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (0, 1):
        monkeypatch.setenv("GLOBAL_RANK", str(rank))
        dm = streamed(images, shards, tmp_path)
        parts["train"].append([i for indices, _, _ in epoch_of(dm.train_dataloader(), 0) for i in indices])
        parts["val"].append([i for images_, _ in dm.val_dataloader() for i in images_.indices.tolist()])
    size = len(dm.splits["train"])
    train = parts["train"]
    assert len(train[0]) == len(train[1]) and not set(train[0]) & set(train[1])
    assert len(set(train[0]) | set(train[1])) == size - size % (4 * 2)
    assert sorted(parts["val"][0] + parts["val"][1]) == list(range(len(dm.splits["val"])))


def test_device_decode_gives_the_batches_worker_decode_gives(
    jpeg_set: tuple[Path, Path], png_set: tuple[Path, Path], tmp_path: Path
) -> None:
    """JPEGs left to the device (decode_jpeg on a list, here on the CPU) are cropped there with the draws the
    workers would have used: the model gets the same batches. PNGs are decoded in the workers either way, and
    `auto` decodes on the device only when training on CUDA."""
    for mode in ("device", "auto"):
        sent = next(iter(streamed(*png_set, tmp_path, decode=mode).train_dataloader()))[0]
        assert sent.crops is not None, f"decode={mode}: PNGs come decoded and cropped"
    sent = next(iter(streamed(*jpeg_set, tmp_path, decode="auto").train_dataloader()))[0]
    assert sent.crops is not None, "auto on a CPU: the workers decode"
    images, shards = jpeg_set
    batches = {}
    for mode in ("workers", "device"):
        dm = streamed(images, shards, tmp_path, decode=mode)
        transform = dm.batch_transforms["train"]
        torch.manual_seed(0)  # the device's own draws (flips)
        batches[mode] = [(transform(images_), labels) for images_, labels in dm.train_dataloader()]
        sent = next(iter(dm.train_dataloader()))[0]
        assert (sent.crops is None) == (mode == "device"), "the device gets the bytes, the workers send crops"
    assert len(batches["workers"]) == len(batches["device"]) > 1
    for (a, labels_a), (b, labels_b) in zip(batches["workers"], batches["device"], strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b) and torch.equal(labels_a, labels_b)


def test_a_loader_resumed_mid_epoch_continues_with_the_very_next_batch(
    jpeg_set: tuple[Path, Path], tmp_path: Path
) -> None:
    images, shards = jpeg_set
    dm = streamed(images, shards, tmp_path)
    uninterrupted = {epoch: epoch_of(dm.train_dataloader(), epoch) for epoch in (0, 1)}
    batches = len(uninterrupted[0])
    assert batches >= 5
    for epoch, done in ((0, 1), (0, 2), (1, batches - 1), (1, 0)):
        loader = dm.train_dataloader()
        loader.resume(epoch, done)
        resumed = epoch_of(loader, epoch, batches - done)
        assert [b[0] for b in resumed] == [b[0] for b in uninterrupted[epoch][done:]], (epoch, done)
        assert all(torch.equal(a[1], b[1]) for a, b in zip(resumed, uninterrupted[epoch][done:], strict=True))
        if epoch == 0:
            following = [b[0] for b in epoch_of(loader, 1)]
            assert following == [b[0] for b in uninterrupted[1]], "the next epoch is whole"


def test_a_chunk_that_cannot_be_downloaded_stops_the_loader_with_one_line_naming_it(
    jpeg_set: tuple[Path, Path], tmp_path: Path, gcs_emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gcsfs

    for name, value in EMULATOR_READS.items():
        monkeypatch.setenv(name, value)
    images, shards = jpeg_set
    url = upload(shards, gcs_emulator.bucket("lost-chunk"), "set")
    gcsfs.GCSFileSystem().rm(f"{url.removeprefix('gs://')}/train/chunk-0-3.bin")
    dm = streamed(images, url, tmp_path)
    with pytest.raises(ShardReadError) as raised:
        for _ in dm.train_dataloader():
            pass
    message = str(raised.value)
    assert message.startswith(f"data.shards: chunk chunk-0-3.bin of {url}/train could not be read (NotFound: 404")
    assert message.endswith("resume with the same command and ckpt_path=last (the checkpoints are kept)")
    assert "\n" not in message


# ---------------------------------------------------------------- train.py on shards in a bucket

QUICK = (
    "data=imagefolder",
    "model.backbone=resnet10t",
    "data.image_size=32",
    "data.batch_size=4",
    "data.num_workers=2",
    "callbacks.preemption.every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def bucket_set(jpeg_set: tuple[Path, Path], gcs_emulator) -> tuple[Path, str]:
    images, shards = jpeg_set
    return images, upload(shards, gcs_emulator.bucket("streamed"), "digits-like")


def two_epochs_from(images: Path, url: str) -> list[str]:
    return [*QUICK, f"data.root={images}", f"data.shards={url}", "trainer.max_epochs=2", "test=false"]


@pytest.fixture(scope="module")
def reference_run(bucket_set: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory, gcs_emulator) -> Path:
    """Two uninterrupted epochs streamed from the bucket: the weights every stopped and resumed run must end with."""
    images, url = bucket_set
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    args = [*two_epochs_from(images, url), f"hydra.run.dir={run_dir}"]
    reference = run_cli("train", args, run_dir.parent, env={**gcs_emulator.env, **EMULATOR_READS})
    assert reference.returncode == 0, reference.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_completed"] == 2
    assert not (run_dir / "manifest.csv").exists(), "the set's manifest is not downloaded"
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"], "the loader's state is in checkpoints"
    return run_dir


def assert_same_weights(run_dir: Path, reference: Path) -> None:
    expected, got = final_weights(reference), final_weights(run_dir)
    assert max(float((got[k].double() - expected[k].double()).abs().max()) for k in expected) <= 1e-6


@pytest.mark.slow
def test_training_streamed_from_a_bucket_resumes_exactly_after_sigterm(
    bucket_set: tuple[Path, str], reference_run: Path, tmp_path: Path, gcs_emulator
) -> None:
    """SIGTERM mid-epoch, then the same command: the run ends with the uninterrupted run's weights."""
    images, url = bucket_set
    env = {**gcs_emulator.env, **EMULATOR_READS}
    args = [*two_epochs_from(images, url), "callbacks.preemption.every_n_steps=3"]  # its first save: stop it then

    run_dir = tmp_path / "stopped"
    command = [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={run_dir}"]
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, cwd=tmp_path, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while not (run_dir / "checkpoints" / "last.ckpt").exists() and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be stopped"
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=180)[0].decode()
    assert process.returncode == 0, output[-3000:]
    stopped = json.loads((run_dir / "summary.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["epochs_completed"] == 0, "stopped in the first epoch"

    resumed = subprocess.run(command, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    assert_same_weights(run_dir, reference_run)


@pytest.mark.slow
def test_an_image_that_fails_mid_epoch_stops_the_run_in_one_line_and_it_resumes_exactly_once_fixed(
    bucket_set: tuple[Path, str],
    jpeg_set: tuple[Path, Path],
    reference_run: Path,
    tmp_path: Path,
    gcs_emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stored image broken in the bucket, read in the first epoch's fifth batch: the run stops there with one line
    naming it and a checkpoint of the four batches done (none is written periodically here); the shard fixed, the
    same command with ckpt_path=last ends with the uninterrupted run's weights."""
    import gcsfs

    images, shards = jpeg_set
    env = {**gcs_emulator.env, **EMULATOR_READS}
    with monkeypatch.context() as seeded:
        seeded.setenv("PL_GLOBAL_SEED", "42")  # train.yaml's seed: the order the run will read
        order = [b[0] for b in epoch_of(streamed(images, shards, tmp_path).train_dataloader(), 0)]
    broken = tmp_path / "broken"
    shutil.copytree(shards, broken)
    victim = StreamingDataset(str(shards / "train"))[order[4][0]]  # the first image of the fifth batch
    stored = bytes(victim["image"])
    chunk = next(p for p in sorted((broken / "train").glob("chunk-*.bin")) if stored in p.read_bytes())
    chunk.write_bytes(chunk.read_bytes().replace(stored, b"\0\0" + stored[2:]))  # no JPEG or PNG signature left
    url = upload(broken, gcs_emulator.bucket("broken"), "set")

    run_dir = tmp_path / "run"
    args = [*two_epochs_from(images, url), "callbacks.preemption.every_n_steps=0", f"hydra.run.dir={run_dir}"]
    failed = run_cli("train", args, tmp_path, env=env)
    assert failed.returncode == 2
    last_line = failed.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: data.shards: {victim['path']} in chunk {chunk.name} of {url}/train")
    assert last_line.endswith("resume with the same command and ckpt_path=last (the checkpoints are kept)")
    assert "Traceback" not in failed.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 4, "the checkpoint holds the batches done before the broken image"

    gcsfs.GCSFileSystem().put(str(shards / "train" / chunk.name), f"{url.removeprefix('gs://')}/train/{chunk.name}")
    resumed = run_cli("train", [*args, "ckpt_path=last"], tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    assert_same_weights(run_dir, reference_run)


@pytest.mark.slow
def test_training_from_local_shards_writes_evaluation_outputs_naming_each_image(
    jpeg_set: tuple[Path, Path], tmp_path: Path, train_in_process
) -> None:
    images, shards = jpeg_set
    metrics, run_dir = train_in_process(
        *QUICK, f"data.root={images}", f"data.shards={shards}", "data.num_workers=0", "trainer.max_epochs=1"
    )
    assert "test/acc" in metrics
    lines = (run_dir / "predictions.csv").read_text().splitlines()
    tested = {line.split(",")[0]: line.split(",")[1] for line in lines[1:]}
    manifest = [line.split(",") for line in (shards / MANIFEST).read_text().splitlines()[1:]]
    header = (shards / MANIFEST).read_text().splitlines()[0].split(",")
    rows = [dict(zip(header, row, strict=True)) for row in manifest]
    expected = {row["path"]: row["label"] for row in rows if row["split"] == "test"}
    assert tested == expected, "every test image, named by its path, with its class"
    assert (run_dir / "figures" / "misclassified.png").is_file()


@pytest.mark.slow
def test_a_set_written_by_mlproj_prepare_streams_every_image_with_its_label(tmp_path: Path) -> None:
    """The writer (mlproj.data.shard_writer) and this reader agree on the format."""
    from mlproj.data.shard_writer import write_shards as prepare_shards

    images = photo_folder(tmp_path / "pics", per_class=6)
    source = ImageFolderDataModule(str(images), cache_dir=str(tmp_path / "cache"), validate=True).load()
    prepare_shards(source, str(tmp_path / "shards"), short_side=SHORT_SIDE, workers=1, chunk_size=4)
    dm = streamed(images, tmp_path / "shards", tmp_path)
    for split in dm.splits:
        loader = dm.val_dataloader() if split == "val" else dm._loader(split, train=False)
        seen = {path: int(label) for batch, labels in loader for path, label in zip(batch.paths, labels, strict=True)}
        expected = {
            relative_to(str(path), source.root): int(label)
            for path, label in zip(source.splits[split].paths, source.splits[split].labels, strict=True)
        }
        assert seen == expected, split


# ---------------------------------------------------------------- bad URLs


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_a_url_without_a_shard_set_fails_in_one_line_with_nothing_written(
    where: str, png_set: tuple[Path, Path], tmp_path: Path, gcs_emulator
) -> None:
    images, _ = png_set
    url = str(tmp_path / "nowhere") if where == "folder" else f"{gcs_emulator.bucket('empty')}/nothing"
    run_dir = tmp_path / "run"
    args = [*QUICK, f"data.root={images}", f"data.shards={url}", f"hydra.run.dir={run_dir}"]
    result = run_cli("train", args, tmp_path, env={**gcs_emulator.env, **EMULATOR_READS}, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"error: data.shards={url} holds no {INDEX} (no such {'folder' if where == 'folder' else 'bucket path'}, or"
        f" an unfinished set): write the shards with `mlproj prepare data=NAME shards={url}`"
    ]
    assert not run_dir.exists(), "nothing written"


def test_a_set_of_another_format_version_is_refused_in_one_line(png_set: tuple[Path, Path], tmp_path: Path) -> None:
    _, shards = png_set
    old = tmp_path / "old"
    old.mkdir()
    (old / INDEX).write_text(json.dumps({**json.loads((shards / INDEX).read_text()), "version": 0}))
    with pytest.raises(ConfigError, match=r"shard format version 0, this mlproj reads version 1: write them again"):
        ImageFolderDataModule(str(tmp_path), shards=str(old)).load()
