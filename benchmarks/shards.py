"""Shards streamed from a bucket against the files on local disk, side by side in one run.

Why: data larger than one disk is read as JPEG shards from the bucket (`mlproj prepare shards=URL`,
`data.shards=URL`); that must cost less disk than the files, feed training faster than the loader every tutorial
uses on local files, and start as fast whatever the size of the set.

Targets (the last line of each is `ratio NAME VALUE (goal OP X)`):
  shard_bytes  ../shared/data/hymenoptera at short side 256, quality 90: shard bytes / original JPEG bytes
               (goal <= 0.3); the decode-once uint8 cache's ratio is printed beside it
  shards_224px images/s into 224 px training batches (random resized crop, flip, normalised), streamed from the GCS
               emulator's bucket with 2 loader workers, over torchvision ImageFolder + PIL on the original files from
               local disk with 2 workers (goal >= 2); medians of alternating blocks; one torch thread in the
               measuring process (the cores are the workers'). The photos are hymenoptera's train split linked 8
               times over (1,952 files), so that an epoch is longer than a block
  first_step   seconds from `python train.py ... data.shards=URL` to its first training step, with 8x the images
               over 1x (generated 640x480 JPEGs, shards written beforehand) (goal <= 1.2); alternating runs

    .venv/bin/python benchmarks/shards.py [--blocks 5] [--only NAME ...]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from data_pipeline import SHARED_DATA, alternate, baseline, data_config
from gcs_emulator import running_emulator

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = SHARED_DATA / "hymenoptera"
GOALS = {"shard_bytes": ("<=", 0.3), "shards_224px": (">=", 2.0), "first_step": ("<=", 1.2)}
FIRST_STEP = "first training step at"  # printed by the probe callback of the first_step runs


def ratio_line(name: str, value: float) -> str:
    op, goal = GOALS[name]
    met = value <= goal if op == "<=" else value >= goal
    return f"ratio {name} {value:.3f} (goal {op} {goal:g})" + ("" if met else " MISSED")


def prepared(root: Path, url: str, short_side: int | None = 256, chunk_size: int | None = None) -> Any:
    """The checked folder, written as shards at `url` (mlproj prepare's own code)."""
    from mlproj.data.imagefolder import ImageFolderDataModule
    from mlproj.data.shard_writer import write_shards

    datamodule = ImageFolderDataModule(str(root), num_workers=0, val_fraction=0.1, test_fraction=0.1).load()
    sizing = {} if chunk_size is None else {"chunk_size": chunk_size}  # default: mlproj prepare's
    return write_shards(datamodule, url, short_side=short_side, quality=90, **sizing)


def shard_bytes(tmp: Path) -> float:
    from mlproj.data.cache import cached_pixels
    from mlproj.data.scan import list_images

    written = prepared(PHOTOS, str(tmp / "hymenoptera-shards"))
    paths = [str(p) for p in list_images(PHOTOS)]
    pixels, _ = cached_pixels(paths, 256, tmp / "cache", workers=2)
    print(
        f"hymenoptera, {len(paths)} JPEGs, {written.source_bytes / 1e6:.1f} MB: shards {written.stored_bytes / 1e6:.1f}"
        f" MB ({written.ratio:.3f}x), uint8 cache at short side 256 {pixels.nbytes / 1e6:.1f} MB"
        f" ({pixels.nbytes / written.source_bytes:.3f}x)"
    )
    return written.ratio


def streamed(url: str, size: int, batch: int, workers: int) -> tuple[Any, Any]:
    """Our DataModule streaming the shard set; its device transform makes each batch training-ready."""
    from mlproj.data.imagefolder import ImageFolderDataModule

    datamodule = ImageFolderDataModule(
        str(PHOTOS),
        batch_size=batch,
        num_workers=workers,
        augment={"crop": "random_resized", "hflip": 0.5},
        shards=url,
        decode="workers",
    ).load()
    datamodule.configure_preprocessing(data_config(size, 0.875))
    return datamodule.train_dataloader(), datamodule.batch_transforms["train"]


def linked_photos(root: Path, copies: int) -> Path:
    """hymenoptera's train photos, each linked `copies` times under its class: real JPEGs, longer epochs."""
    for source in sorted((PHOTOS / "train").glob("*/*")):
        for copy in range(copies):
            link = root / source.parent.name / f"{copy}-{source.name}"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)
    return root


def shards_224px(tmp: Path, blocks: int) -> float:
    import timm  # noqa: F401 - a training process has the model's timm imported; its loader workers fork from it
    import torch

    photos = linked_photos(tmp / "photos", copies=8)
    with running_emulator(tmp) as emulator:
        import gcsfs

        bucket = emulator.bucket("bench")
        local = tmp / "photos-shards"
        prepared(photos, str(local), chunk_size=128)  # chunks per loader worker, as a large set has
        gcsfs.GCSFileSystem().put(str(local), f"{bucket}/photos", recursive=True)
        os.environ.setdefault("LITDATA_ASYNC_CHUNK_PREFETCH", "0")  # obstore's prefetch cannot reach the emulator
        # One torch thread in this process for both sides: the two cores belong to the two loader workers, and an
        # intra-op pool here would spin on them between our batch transforms (on a GPU that transform runs there).
        torch.set_num_threads(1)
        sides = {
            "ours": streamed(f"{bucket}/photos", 224, 32, 2),
            "baseline": baseline(photos, 224, 32, 2),
        }
        return alternate("shards_224px", sides, blocks, count=4, warmup=2)


def photo_folder(root: Path, count: int, seed: int = 0) -> Path:
    """`count` photo-sized (640x480) JPEGs in two class folders: smooth gradients plus noise, as cameras give."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640]
    for i in range(count):
        base = (x * rng.uniform(0.1, 0.4) + y * rng.uniform(0.1, 0.4) + rng.uniform(0, 255, 3)[:, None, None]) % 256
        pixels = np.clip(base.transpose(1, 2, 0) + rng.normal(0, 8, (480, 640, 3)), 0, 255).astype(np.uint8)
        path = root / ("a" if i % 2 else "b") / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)
    return root


def seconds_to_first_step(url: str, root: Path, tmp: Path, env: dict[str, str]) -> float:
    """Wall seconds from starting `python train.py` to its first training batch (printed by a probe callback)."""
    command = [
        sys.executable,
        "-c",
        "import sys, time, lightning as L; import mlproj.train as t; start = float(sys.argv.pop(1))\n"
        "class Probe(L.Callback):\n"
        "    def on_train_batch_start(self, *a):\n"
        f"        print('{FIRST_STEP}', time.time() - start, flush=True); raise SystemExit(0)\n"
        "real = t.build_run; t.build_run = lambda cfg, extra=(): real(cfg, [*extra, Probe()]); t.main()",
        str(time.time()),
        "data=imagefolder",
        f"data.root={root}",
        f"data.shards={url}",
        "model.backbone=resnet10t",
        "data.image_size=64",
        "data.num_workers=2",
        "data.batch_size=16",
        "logger=csv",
        f"hydra.run.dir={tmp / 'runs' / str(time.time_ns())}",
        f"paths.log_dir={tmp / 'logs'}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    found = [line for line in result.stdout.splitlines() if line.startswith(FIRST_STEP)]
    if not found:
        raise RuntimeError(f"the training run never reached its first step:\n{result.stderr[-3000:]}")
    return float(found[-1].split()[-1])


def first_step(tmp: Path, blocks: int, images: int = 200) -> float:
    with running_emulator(tmp) as emulator:
        import gcsfs

        bucket, fs = emulator.bucket("first-step"), gcsfs.GCSFileSystem()
        sets = {}
        for scale in (1, 8):
            root = photo_folder(tmp / f"photos{scale}", images * scale, seed=scale)
            prepared(root, str(tmp / f"shards{scale}"))
            fs.put(str(tmp / f"shards{scale}"), f"{bucket}/photos{scale}", recursive=True)
            sets[scale] = (f"{bucket}/photos{scale}", root)
        env = {**emulator.env, "LITDATA_ASYNC_CHUNK_PREFETCH": "0"}
        ratios = []
        for block in range(blocks):
            seconds = {scale: seconds_to_first_step(*sets[scale], tmp, env) for scale in (1, 8)}
            ratios.append(seconds[8] / seconds[1])
            print(
                f"first_step block {block + 1}/{blocks}: {images} images {seconds[1]:.2f} s, {images * 8} images"
                f" {seconds[8]:.2f} s, ratio {ratios[-1]:.3f}",
                flush=True,
            )
        return statistics.median(ratios)


MEASURES = {"shards_224px": shards_224px, "first_step": first_step}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=5, help="alternating blocks per ratio (default 5)")
    parser.add_argument("--only", nargs="+", choices=list(GOALS), help="measure only these")
    args = parser.parse_args(argv)
    if not PHOTOS.is_dir():
        print(f"skipped: {PHOTOS} is absent (the shared real-image data lives next to the project)")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    wanted = args.only or list(GOALS)
    lines = []
    with tempfile.TemporaryDirectory(prefix="mlproj-shards-bench-") as tmp:
        for name in wanted:
            folder = Path(tmp) / name
            folder.mkdir()
            value = shard_bytes(folder) if name == "shard_bytes" else MEASURES[name](folder, args.blocks)
            lines.append(ratio_line(name, value))
            print(lines[-1], flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
