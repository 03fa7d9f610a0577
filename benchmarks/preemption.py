"""Stop a short CPU training run at random moments with SIGTERM or SIGKILL, resume it, and check that it ends
exactly as the same run left alone: the same final weights in `checkpoints/last.ckpt` and the same metrics.

Why: spot VMs and Vertex AI restarts stop training at any moment; a resumed run must neither replay nor skip
samples. Each trial runs `python train.py` (a resnet10t on generated photos of two sizes, 6 epochs, a checkpoint
every 2 steps, one loader worker) in its own run dir, sends the signal at a random moment after the first
checkpoint, then runs the same command again with `ckpt_path=last`. SIGTERM goes to the training process (with
`--ddp`: the launcher, rank 0), SIGKILL to its whole process group, as a preempted machine ends them.

`--ddp` trains with two CPU processes (`trainer=ddp_cpu`, gloo): each rank reads its part of every epoch, and all
must stop after the same batch and resume at their own next image.

`--shards` streams the same photos from a shard set (`data.shards`, LitData), written once at the start into a local
folder by `mlproj prepare`'s own writer, 8 images to a chunk: the resumed loader must continue at the next unseen
image of its rank's shuffled chunks.

    .venv/bin/python benchmarks/preemption.py [--trials 20] [--seed 0] [--ddp] [--shards]
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-6


def make_photos(root: Path, classes: int = 3, per_class: int = 24) -> Path:
    """Class folders of JPEG and PNG files in two shapes, each class with its own tint."""
    rng = np.random.default_rng(0)
    for label in range(classes):
        for i in range(per_class):
            width, height = (40, 32) if i % 2 else (32, 44)
            pixels = rng.integers(0, 160, (height, width, 3), dtype=np.uint8) + np.uint8(40 * label)
            folder = root / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{i:03d}{'.jpg' if i % 3 else '.png'}")
    return root


def write_shard_set(photos: Path, out: Path) -> Path:
    """The photos as a shard set (mlproj prepare's writer). A quarter of them validate: LitData gives the last rank
    the validation images left over from whole batches, so a smaller split would leave a DDP rank none."""
    from mlproj.data.imagefolder import ImageFolderDataModule
    from mlproj.data.shard_writer import write_shards

    datamodule = ImageFolderDataModule(str(photos), num_workers=0, val_fraction=0.25, test_fraction=0.1).load()
    write_shards(datamodule, str(out), short_side=32, workers=1, chunk_size=8)
    return out


def command(data: Path, work: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "data=imagefolder",
        f"data.root={data}",
        "data.image_size=32",
        "data.batch_size=8",
        "data.num_workers=1",
        "model.backbone=resnet10t",
        "trainer.max_epochs=6",
        "test=false",
        "callbacks.preemption.every_n_steps=2",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"paths.log_dir={work / 'logs'}",
        f"paths.cache_dir={work / 'cache'}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def final_state(run_dir: Path) -> tuple[dict, dict]:
    """The weights in last.ckpt and the summary's metrics."""
    import torch

    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    return checkpoint["state_dict"], summary


def compare(reference: tuple[dict, dict], resumed: tuple[dict, dict]) -> tuple[float, list[str]]:
    """Largest absolute weight difference, and the summary fields that differ."""
    ref_weights, ref_summary = reference
    weights, summary = resumed
    worst = max(
        float((weights[k].double() - ref_weights[k].double()).abs().max()) if weights[k].numel() else 0.0
        for k in ref_weights
    )
    fields = [name for name in ("status", "epochs_completed", "metrics") if summary.get(name) != ref_summary.get(name)]
    return worst, fields


def trial(
    index: int, trials: int, data: Path, work: Path, reference: tuple[dict, dict], rng: random.Random, *extra: str
) -> bool:
    run_dir = work / f"trial{index}"
    kind = signal.SIGTERM if index % 2 == 0 else signal.SIGKILL
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        command(data, work, run_dir, *extra),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.02)
    delay = rng.uniform(0.0, 1.5)
    time.sleep(delay)
    stopped = process.poll() is None
    if stopped and kind == signal.SIGKILL:
        os.killpg(process.pid, kind)
    elif stopped:
        process.send_signal(kind)
    try:
        output, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate()[0] + "\n(killed: still running 300 s after the signal)"
    ended = all_exited(process.pid)
    status = json.loads((run_dir / "summary.json").read_text())["status"]
    expected_status = {signal.SIGTERM: "interrupted", signal.SIGKILL: "running"}[kind] if stopped else "finished"
    problems = [] if ended else ["a process of the run outlived it (a DDP rank or a loader worker)"]
    if stopped and kind == signal.SIGTERM and process.returncode != 0:
        problems.append(f"exit status {process.returncode} after SIGTERM")
    if status != expected_status:
        problems.append(f"summary says {status}, expected {expected_status}")
    resumed = run(command(data, work, run_dir, *extra, "ckpt_path=last"))
    if resumed.returncode != 0:
        problems.append(f"resume failed:\n{resumed.stdout[-1500:]}{resumed.stderr[-1500:]}")
        worst, fields = float("nan"), []
    else:
        worst, fields = compare(reference, final_state(run_dir))
        if not worst <= TOLERANCE:
            problems.append(f"weights differ by {worst:.3g}")
        if fields:
            problems.append(f"summary differs in {', '.join(fields)}")
    what = f"{signal.Signals(kind).name} {delay:.2f} s after the first checkpoint" if stopped else "finished first"
    verdict = "exact" if not problems else "FAILED: " + "; ".join(problems)
    print(f"trial {index + 1}/{trials}: {what}; resumed; max |weight diff| {worst:.1e}: {verdict}", flush=True)
    if problems and stopped:
        print(output[-3000:], flush=True)
    return not problems


def all_exited(pgid: int, timeout: float = 60) -> bool:
    """Whether every process of a run's group (DDP ranks, loader workers) exits within `timeout`; SIGKILL if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(pgid, signal.SIGKILL)
    return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="interrupted runs, alternating SIGTERM and SIGKILL")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random moments")
    parser.add_argument("--ddp", action="store_true", help="two-process CPU DDP (trainer=ddp_cpu) instead of one")
    parser.add_argument("--shards", action="store_true", help="stream the photos from a shard set (data.shards)")
    args = parser.parse_args(argv)
    extra = ["trainer=ddp_cpu"] if args.ddp else []
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="mlproj-preemption-") as tmp:
        work = Path(tmp)
        data = make_photos(work / "photos")
        if args.shards:
            started = time.perf_counter()
            extra.append(f"data.shards={write_shard_set(data, work / 'shards')}")
            print(f"shard set written: {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        left_alone = run(command(data, work, work / "reference", *extra))
        if left_alone.returncode != 0:
            print(left_alone.stdout[-3000:], left_alone.stderr[-3000:])
            return 1
        print(f"reference run: {time.perf_counter() - started:.1f} s", flush=True)
        reference = final_state(work / "reference")
        exact = sum(trial(i, args.trials, data, work, reference, rng, *extra) for i in range(args.trials))
    print(f"{exact} of {args.trials} interrupted runs resumed exactly")
    print(f"preemption: {exact} passed, {args.trials - exact} failed")
    return 0 if exact == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
