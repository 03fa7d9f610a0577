"""Our data pipeline against torchvision's ImageFolder + PIL + standard transforms, side by side in one run.

Why: images must reach the model faster than the loader every tutorial uses, without changing what the model sees.
Both sides read the same files and draw the same augmentations per image (random crop and flip), and both end in
normalised float32 batches ready for the model. Ours decodes once into the pixel cache (`mlproj prepare`) and sends
uint8; the baseline decodes JPEGs in 2 loader workers every epoch.

Targets, in this order (the last line of each is `ratio NAME VALUE (goal OP X)`):
  data_32px      ../shared/data/cifar10-subset/train, 32 px, batch 256, RandomCrop(32, padding=4) + flip:
                 training-ready images per second, ours over the baseline (goal >= 20)
  data_224px     ../shared/data/hymenoptera/train photos, RandomResizedCrop(224) + flip, batch 32 (goal >= 2)
  train_cpu_e2e  timm resnet18 at 32 px on the cifar10 subset, one plain training loop fed by each loader:
                 training images per second (goal >= 1.10)
  rss_workers    peak memory (PSS of the process and its workers) of a short training run at 224 px with 4 loader
                 workers over the same with 0 workers, ours (memory-mapped cache) divided by the baseline's (goal <= 1)

Each ratio alternates timed blocks (ours, baseline, ours, ...) and reports the median of per-block ratios.

    .venv/bin/python benchmarks/data_pipeline.py [--blocks 5] [--only NAME ...]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAR = SHARED_DATA / "cifar10-subset" / "train"
PHOTOS = SHARED_DATA / "hymenoptera" / "train"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SETTLE_S = 0.5
GOALS = {
    "data_32px": (">=", 20.0),
    "data_224px": (">=", 2.0),
    "train_cpu_e2e": (">=", 1.10),
    "rss_workers": ("<=", 1.0),
}

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def data_config(size: int, crop_pct: float) -> dict[str, Any]:
    return {
        "input_size": [3, size, size],
        "interpolation": "bilinear",
        "mean": list(MEAN),
        "std": list(STD),
        "crop_pct": crop_pct,
        "crop_mode": "center",
    }


def baseline(root: Path, size: int, batch: int, workers: int) -> tuple[Any, Callable]:
    """torchvision's ImageFolder with the standard per-image transforms; batches leave the loader ready."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    crop = transforms.RandomCrop(size, padding=4) if size <= 64 else transforms.RandomResizedCrop(size, antialias=True)
    transform = transforms.Compose(
        [crop, transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    )
    dataset = datasets.ImageFolder(str(root), transform=transform)
    loader = DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0, drop_last=True
    )
    return loader, lambda images: images


def ours(root: Path, size: int, batch: int, workers: int, cache: Path) -> tuple[Any, Callable]:
    """Our DataModule over the pixel cache; its device transform makes the batch training-ready."""
    from mlproj.data.imagefolder import ImageFolderDataModule

    small = size <= 64
    augment = {"crop": "pad", "padding": 4, "hflip": 0.5} if small else {"crop": "random_resized", "hflip": 0.5}
    datamodule = ImageFolderDataModule(
        str(root),
        batch_size=batch,
        num_workers=workers,
        val_fraction=0.01,  # a class-folder root is split; keep nearly every file in train
        test_fraction=0.01,
        augment=augment,
        cache_dir=str(cache),
        cache_short_side=size if small else 256,
    )
    datamodule.prepare_data()
    datamodule.load()
    datamodule.configure_preprocessing(data_config(size, 1.0 if small else 0.875))
    return datamodule.train_dataloader(), datamodule.batch_transforms["train"]


def endless(loader: Any) -> Iterator[Any]:
    while True:
        yield from loader


def images_per_second(
    batches: Iterator[Any], to_ready: Callable, count: int, step: Callable | None = None, seconds: float = 0.0
) -> float:
    """Training-ready images per second over at least `count` batches and `seconds` (each batch through `step` too,
    when given). It first waits a moment: the other side's loader workers keep prefetching after its block ends,
    and must not share the cores with this one."""
    time.sleep(SETTLE_S)
    seen = batches_done = 0
    start = time.perf_counter()
    while batches_done < count or time.perf_counter() - start < seconds:
        images, labels = next(batches)
        ready = to_ready(images)
        if step is not None:
            step(ready, labels)
        seen += len(labels)
        batches_done += 1
    return seen / (time.perf_counter() - start)


def alternate(
    name: str,
    sides: dict[str, tuple[Any, Callable]],
    blocks: int,
    count: int,
    warmup: int,
    step: Callable | None = None,
    seconds: float = 2.0,
) -> float:
    """Blocks alternate between the sides; returns the median over blocks of ours/baseline."""
    streams = {side: endless(loader) for side, (loader, _) in sides.items()}
    for side, (_, to_ready) in sides.items():
        images_per_second(streams[side], to_ready, warmup, step)
    ratios = []
    for block in range(blocks):
        rates = {side: images_per_second(streams[side], sides[side][1], count, step, seconds) for side in sides}
        ratios.append(rates["ours"] / rates["baseline"])
        print(
            f"{name} block {block + 1}/{blocks}: ours {rates['ours']:.0f} img/s,"
            f" baseline {rates['baseline']:.0f} img/s, ratio {ratios[-1]:.2f}",
            flush=True,
        )
    return statistics.median(ratios)


def training_step(backbone: str, num_classes: int) -> Callable:
    """One plain PyTorch training step of a timm model, the same for both loaders."""
    import timm
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = timm.create_model(backbone, num_classes=num_classes, pretrained=False)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(images: Any, labels: Any) -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


# ---------------------------------------------------------------- peak memory of a training run, per process tree


def tree_memory(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in bytes of a process and its children; PSS shares each shared page among its users."""
    import psutil

    pss = rss = 0
    try:
        parent = psutil.Process(pid)
        for process in [parent, *parent.children(recursive=True)]:
            try:
                info = process.memory_full_info()
                pss, rss = pss + info.pss, rss + info.rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
    except psutil.NoSuchProcess:
        pass
    return pss, rss


def peak_memory(side: str, workers: int, cache: Path, steps: int) -> tuple[int, int]:
    """Run a short training run in a fresh process and sample its tree's memory every 50 ms."""
    command = [sys.executable, __file__, "--memory-run", side, str(workers), str(cache), str(steps)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0, 0]

    def sample() -> None:
        while process.poll() is None:
            pss, rss = tree_memory(process.pid)
            peak[0], peak[1] = max(peak[0], pss), max(peak[1], rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, err = process.communicate(timeout=600)
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"memory run {side} {workers} failed:\n{err[-2000:]}")
    return peak[0], peak[1]


def memory_run(side: str, workers: int, cache: Path, steps: int) -> None:
    """The child: a few training steps of timm resnet10t at 224 px on the photos, batch 16."""
    import torch

    torch.set_num_threads(2)
    loader, to_ready = (
        ours(PHOTOS.parent, 224, 16, workers, cache) if side == "ours" else baseline(PHOTOS, 224, 16, workers)
    )
    step = training_step("resnet10t", 2)
    batches = endless(loader)
    for _ in range(steps):
        images, labels = next(batches)
        step(to_ready(images), labels)
    print(json.dumps({"steps": steps}))


def rss_ratio(blocks: int, cache: Path, steps: int) -> float:
    ratios = []
    for block in range(blocks):
        runs = {(side, w): peak_memory(side, w, cache, steps) for side in ("ours", "baseline") for w in (4, 0)}
        ours_ratio = runs["ours", 4][0] / runs["ours", 0][0]
        base_ratio = runs["baseline", 4][0] / runs["baseline", 0][0]
        ratios.append(ours_ratio / base_ratio)
        mb = {key: f"{pss / 2**20:.0f}/{rss / 2**20:.0f}" for key, (pss, rss) in runs.items()}
        print(
            f"rss_workers block {block + 1}/{blocks}: peak PSS/RSS MB ours 4w {mb['ours', 4]}, 0w {mb['ours', 0]};"
            f" baseline 4w {mb['baseline', 4]}, 0w {mb['baseline', 0]}; 4w/0w ours {ours_ratio:.3f},"
            f" baseline {base_ratio:.3f}, ratio {ratios[-1]:.3f}",
            flush=True,
        )
    return statistics.median(ratios)


def report(name: str, value: float) -> None:
    op, goal = GOALS[name]
    met = value >= goal if op == ">=" else value <= goal
    print(f"ratio {name} {value:.3f} (goal {op} {goal:g}){'' if met else ' MISSED'}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per side, alternated (default 5)")
    parser.add_argument("--only", nargs="*", choices=list(GOALS), help="measure only these targets")
    parser.add_argument("--memory-run", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_run:
        side, workers, cache, steps = args.memory_run
        memory_run(side, int(workers), Path(cache), int(steps))
        return 0
    if not (CIFAR.is_dir() and PHOTOS.is_dir()):
        print(f"skipped: {CIFAR} or {PHOTOS} is absent (the shared real-image data lives next to the project)")
        return 0
    if args.blocks < 5:
        parser.error("--blocks must be at least 5: single blocks on these machines scatter by 10% or more")
    wanted = args.only or list(GOALS)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="mlproj-data-bench-") as tmp:
        cache = Path(tmp) / "cache"
        started = time.perf_counter()
        ours(CIFAR, 32, 256, 0, cache)
        ours(PHOTOS.parent, 224, 32, 0, cache)
        print(f"prepare (decode once into the pixel cache, both data sets): {time.perf_counter() - started:.1f} s")
        if "data_32px" in wanted:
            sides = {"ours": ours(CIFAR, 32, 256, 2, cache), "baseline": baseline(CIFAR, 32, 256, 2)}
            report("data_32px", alternate("data_32px", sides, args.blocks, 20, 3))
        if "data_224px" in wanted:
            sides = {"ours": ours(PHOTOS.parent, 224, 32, 2, cache), "baseline": baseline(PHOTOS, 224, 32, 2)}
            report("data_224px", alternate("data_224px", sides, args.blocks, 8, 2))
        if "train_cpu_e2e" in wanted:
            sides = {"ours": ours(CIFAR, 32, 256, 2, cache), "baseline": baseline(CIFAR, 32, 256, 2)}
            report(
                "train_cpu_e2e",
                alternate("train_cpu_e2e", sides, args.blocks, 5, 2, training_step("resnet18", 10), seconds=0),
            )
        if "rss_workers" in wanted:
            report("rss_workers", rss_ratio(args.blocks, cache, steps=12))
    return 0


if __name__ == "__main__":
    sys.exit(main())
