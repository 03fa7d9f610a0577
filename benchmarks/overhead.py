"""Steady-state training step time of train.py's Lightning stack against a plain PyTorch loop.

Why: the template must cost next to nothing over the loop a user would write by hand. Both sides train timm
`resnet18` at 32 px, batch 256, with AdamW, on cifar10-subset read through our `ImageFolderDataModule` loader,
so only the training loop differs. Our side is built from the composed config exactly as `mlproj.train.train`
builds it (default callbacks and CSV logger on); the plain side is `zero_grad / forward / backward / step`.

Timing: the time between successive batch starts (data wait, step, logging, callbacks, progress bar), skipping the
first `--warmup` steps of every epoch. Blocks alternate (ours, plain, ours, plain, ...) so drift in machine load
hits both sides alike; the result is the median over blocks of (median step of ours / median step of plain).

    .venv/bin/python benchmarks/overhead.py [--blocks 5] [--steps 10] [--warmup 2] [--threads N]
"""

import argparse
import gc
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
DATA_ROOT = SHARED_DATA / "cifar10-subset" / "train"
GOAL = 1.05
BACKBONE = "resnet18"
OVERRIDES = (
    "data=imagefolder",
    f"data.root={DATA_ROOT}",
    f"model.backbone={BACKBONE}",
    "data.image_size=32",
    "data.batch_size=256",
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # resnet18 from scratch: never wait on the hub


class StepClock:
    """Batch-start timestamps per (epoch, batch); steady-state steps are the gaps between consecutive starts.

    Wall time (perf_counter) is the measure. The process's CPU time (all its threads, not the loader workers) is
    kept beside it as a second view: extra Python work on our side shows in both, while other jobs on a shared
    machine distort the two differently (waiting threads spin), so a gap between the two ratios flags noise.
    """

    def __init__(self) -> None:
        self.ticks: list[tuple[int, int, float, float]] = []

    def tick(self, epoch: int, batch_idx: int) -> None:
        self.ticks.append((epoch, batch_idx, time.perf_counter(), time.process_time()))

    def steps(self, warmup: int, limit: int) -> tuple[list[float], list[float]]:
        """(wall, cpu) seconds of the first `limit` steps, leaving out the first `warmup` gaps of each epoch."""
        wall: list[float] = []
        cpu: list[float] = []
        seen_in_epoch: dict[int, int] = {}
        for (epoch, idx, start, cpu_start), (next_epoch, next_idx, next_start, next_cpu) in zip(
            self.ticks, self.ticks[1:], strict=False
        ):
            if next_epoch != epoch or next_idx != idx + 1:
                continue  # an epoch boundary: validation and checkpointing are not training steps
            seen_in_epoch[epoch] = seen_in_epoch.get(epoch, 0) + 1
            if seen_in_epoch[epoch] > warmup and len(wall) < limit:
                wall.append(next_start - start)
                cpu.append(next_cpu - cpu_start)
        return wall, cpu


def compose(overrides: Sequence[str], output_dir: Path) -> Any:
    """The config `python train.py OVERRIDES` builds, with Hydra's runtime set so `${hydra:...}` resolves."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from mlproj.entry import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        overrides = [f"paths.cache_dir={output_dir.parent / 'cache'}", *overrides]  # not the repository's .cache
        cfg = hydra_compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


def run_ours(cfg: Any, warmup: int, steps: int) -> tuple[list[float], list[float]]:
    """One `trainer.fit` of the objects `mlproj.train.train` builds, plus a timing callback."""
    import lightning as L

    from mlproj.console import tidy_lightning_logging
    from mlproj.train import build_run

    clock = StepClock()

    class StepTimer(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
            clock.tick(trainer.current_epoch, idx)

    tidy_lightning_logging()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, model, trainer = build_run(cfg, extra_callbacks=[StepTimer()])
    trainer.fit(model, datamodule=datamodule)
    return clock.steps(warmup, steps)


def run_plain(
    cfg: Any, data_config: dict[str, Any], epochs: int, warmup: int, steps: int
) -> tuple[list[float], list[float]]:
    """The loop a user writes by hand, on the same loader and device transform, and the same optimizer settings."""
    import timm
    import torch
    import torch.nn.functional as F

    from mlproj.build import build_datamodule

    torch.manual_seed(cfg.seed)
    datamodule = build_datamodule(cfg.data, data_config)
    loader = datamodule.train_dataloader()
    to_training_batch = datamodule.batch_transforms["train"]  # uint8 -> augmented, normalised float (on the device)
    model = timm.create_model(cfg.model.backbone, num_classes=datamodule.num_classes, pretrained=False)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(cfg.model.optimizer.lr), weight_decay=float(cfg.model.optimizer.weight_decay)
    )
    clock = StepClock()
    model.train()
    for epoch in range(epochs):
        for batch_idx, (images, labels) in enumerate(loader):
            clock.tick(epoch, batch_idx)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(to_training_batch(images)), labels)
            loss.backward()
            optimizer.step()
    return clock.steps(warmup, steps)


def setup_summary(cfg: Any) -> tuple[dict[str, Any], int, str]:
    """The run's data config, batches per epoch and optimizer class of our side, to mirror on the plain side."""
    from mlproj.models.optim import build_optimizer
    from mlproj.train import build_run

    datamodule, model, _ = build_run(cfg)
    optimizer = build_optimizer(model.backbone, model.lr, model.optimizer_settings)  # what configure_optimizers uses
    return (
        datamodule.data_config,
        len(datamodule.train_dataloader()),
        f"{type(optimizer).__module__}.{type(optimizer).__name__}",
    )


def warm_page_cache(root: Path) -> int:
    """Read every image once, so the first block does not pay for cold disk reads the later ones skip."""
    return sum(len(path.read_bytes()) for path in root.rglob("*") if path.is_file())


def noise_note(ratios: Sequence[float], margin: float) -> str:
    """A warning when the blocks disagree by more than the margin the goal allows: the median is then luck."""
    if len(ratios) < 4:
        return ""
    low, _, high = statistics.quantiles(ratios, n=4)
    if high - low <= margin:
        return ""
    return (
        f"noisy: the middle half of the per-block ratios spans {low:.3f}..{high:.3f}, wider than the "
        f"{margin:.2f} margin; other jobs shared the cores. Rerun on an idle machine or with more --blocks."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per side, alternated (default 5)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per block (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each epoch (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads for both sides")
    args = parser.parse_args(argv)
    if not DATA_ROOT.is_dir():
        print(f"skipped: {DATA_ROOT} is absent (the shared real-image data lives next to the project)")
        return 0
    if args.blocks < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--blocks and --steps must be >= 1, --warmup >= 0")

    import torch

    threads = args.threads or torch.get_num_threads()
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    with tempfile.TemporaryDirectory(prefix="mlproj-overhead-") as tmp:
        probe = compose(OVERRIDES, Path(tmp) / "probe")
        data_config, per_epoch, optimizer_class = setup_summary(probe)
        usable = per_epoch - 1 - args.warmup
        if usable < 1:
            parser.error(f"--warmup {args.warmup} leaves no timed step in an epoch of {per_epoch} batches")
        epochs = math.ceil(args.steps / usable)
        overrides = [*OVERRIDES, f"trainer.max_epochs={epochs}"]
        warm_page_cache(DATA_ROOT)

        # Per block and side: (median wall step, median CPU step); ratios are taken within a block pair.
        ours: list[tuple[float, float]] = []
        plain: list[tuple[float, float]] = []
        for block in range(args.blocks):
            torch.set_num_threads(threads)
            wall, cpu = run_ours(compose(overrides, Path(tmp) / f"ours{block}"), args.warmup, args.steps)
            ours.append((statistics.median(wall), statistics.median(cpu)))
            gc.collect()  # the next block should not pay for freeing this one's trainer, loader and model
            torch.set_num_threads(threads)
            wall, cpu = run_plain(
                compose(overrides, Path(tmp) / f"plain{block}"), data_config, epochs, args.warmup, args.steps
            )
            plain.append((statistics.median(wall), statistics.median(cpu)))
            gc.collect()
            print(
                f"block {block + 1}/{args.blocks}: ours {ours[-1][0] * 1e3:.1f} ms/step, "
                f"plain {plain[-1][0] * 1e3:.1f} ms/step ({len(wall)} steps each), "
                f"ratio {ours[-1][0] / plain[-1][0]:.3f} (CPU time {ours[-1][1] / plain[-1][1]:.3f})",
                flush=True,
            )

    ratios = [a[0] / b[0] for a, b in zip(ours, plain, strict=True)]
    cpu_ratios = [a[1] / b[1] for a, b in zip(ours, plain, strict=True)]
    ratio = statistics.median(ratios)
    batch = int(probe.data.batch_size)
    print(
        f"setup: {BACKBONE} 32 px, batch {batch}, {optimizer_class} lr {probe.model.optimizer.lr}, "
        f"uint8 batches from memory, torch threads {threads}, {per_epoch} batches/epoch, "
        f"{epochs} epoch(s)/block, {args.steps} timed steps/block, {args.warmup} warm-up steps/epoch untimed"
    )
    for name, side in (("ours ", ours), ("plain", plain)):
        step = statistics.median(wall for wall, _ in side)
        print(
            f"{name} median step {step * 1e3:.1f} ms ({batch / step:.0f} img/s), fastest block "
            f"{min(wall for wall, _ in side) * 1e3:.1f} ms, CPU {statistics.median(c for _, c in side) * 1e3:.1f} ms"
            f" over {len(side)} blocks"
        )
    print(f"per-block ratios ours/plain: {' '.join(f'{r:.3f}' for r in ratios)}")
    print(f"median of per-block CPU-time ratios (second view): {statistics.median(cpu_ratios):.3f}")
    note = noise_note(ratios, GOAL - 1.0)
    if note:
        print(note)
    print(f"ratio overhead {ratio:.3f} (goal <= {GOAL:g}){'' if ratio <= GOAL else ' MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
