"""Exact resume under two-process CPU DDP (gloo): a run stopped mid-epoch by SIGTERM or SIGKILL and resumed ends with
the weights and metrics of the same run left alone, on each data path: whole uint8 batches from memory (the pixel
cache fits data.memory_mb), one image per loader-worker call (images of two shapes), and a shard set streamed with
LitData (`data.shards`, each rank reading its own chunks).

`trainer=ddp_cpu` runs `train.py` as a subprocess: inside pytest, Lightning's ddp launcher would re-run pytest.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
import torch

from mlproj.checkpoints import LAST
from mlproj.data.imagefolder import ImageFolderDataModule
from mlproj.data.order import EpochSampler
from mlproj.data.shard_writer import write_shards

from conftest import ROOT, make_image_folder, write_image

TOLERANCE = 1e-6
EPOCHS = 2


def mixed_shapes_folder(root: Path, per_class: int = 40) -> Path:
    """Class folders of JPEG and PNG photos in two shapes: the pixel cache cannot batch them, loader workers crop."""
    for label, name in enumerate(("cat", "dog", "fox")):
        for i in range(per_class):
            size = (40, 32) if i % 2 else (32, 44)
            write_image(root / name / f"{name}_{i:03d}{'.jpg' if i % 3 else '.png'}", size=size, seed=100 * label + i)
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("ddp-data")
    two_shapes = mixed_shapes_folder(base / "two-shapes")
    return {
        "memory": make_image_folder(base / "same-shape", per_class=40),  # 84 training images: 10 batches per rank
        "workers": two_shapes,
        "shards": shard_set(two_shapes, base / "shards"),
    }


def shard_set(images: Path, out: Path) -> Path:
    """The images written as `mlproj prepare shards=` writes them, 8 to a chunk: each rank streams its own chunks."""
    datamodule = ImageFolderDataModule(str(images), num_workers=0, cache_dir=str(out.parent / "write-cache")).load()
    write_shards(datamodule, str(out), short_side=32, workers=1, chunk_size=8)
    return out


def shard_options(shards: Path) -> list[str]:
    """Stream the set (data.root is not read then). LitData gives the last rank the validation images left over
    from whole batches (18 here: 2 batches on rank 0, 3 on rank 1): uneven validation must not hang the ranks."""
    return [f"data.shards={shards}"]


def command(data: Path, work: Path, run_dir: Path, path: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "trainer=ddp_cpu",
        "data=imagefolder",
        f"data.root={data}",
        *(shard_options(data) if path == "shards" else []),
        "data.image_size=16",
        "data.batch_size=4",
        f"data.num_workers={0 if path == 'memory' else 1}",
        "model.backbone=test_resnet",
        f"trainer.max_epochs={EPOCHS}",
        "test=false",
        "callbacks.preemption.every_n_steps=1",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"paths.log_dir={work / 'logs'}",
        f"paths.cache_dir={work / 'cache'}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def train(args: list[str], cwd: Path, timeout: float = 240) -> None:
    """Run to the end; on a timeout (ranks out of step can wait on each other) every process of the run prints where
    it waits (faulthandler's dump on SIGABRT, loader workers included) and the whole process group is killed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    process = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output = process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        for pid in group_members(process.pid):  # one at a time, so that their dumps do not interleave
            os.kill(pid, signal.SIGABRT)
            time.sleep(0.5)
        output = process.communicate(timeout=60)[0]
        pytest.fail(f"no end after {timeout:.0f} s; where each process waited:\n{output[-20000:]}")
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, output[-4000:]


def load(run_dir: Path) -> tuple[dict, dict]:
    checkpoint = torch.load(run_dir / "checkpoints" / LAST, map_location="cpu", weights_only=True)
    return checkpoint, json.loads((run_dir / "summary.json").read_text())


def batches_into_epoch(checkpoint: dict) -> int:
    return checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"]


@pytest.fixture(scope="module")
def references(
    folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], tuple[dict, dict]]:
    """A data path's run left alone, trained once per module, when a test first asks for it."""
    work = tmp_path_factory.mktemp("ddp-reference")
    runs: dict[str, tuple[dict, dict]] = {}

    def reference(path: str) -> tuple[dict, dict]:
        if path not in runs:
            train(command(folders[path], work, work / path, path), work)
            runs[path] = load(work / path)
        return runs[path]

    return reference


def group_members(pgid: int) -> list[int]:
    """The processes of a process group, the last started first (loader workers and rank 1 before the launcher)."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getpgid(int(entry.name)) == pgid:
                members.append(int(entry.name))
        except ProcessLookupError:
            continue
    return sorted(members, reverse=True)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_mid_epoch(args: list[str], cwd: Path, run_dir: Path, kind: signal.Signals) -> str:
    """Start a run and stop it in its first epoch (SIGTERM: the launcher, rank 0, only; SIGKILL: the whole process
    group) once it has written a checkpoint; return what it printed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = run_dir.parent / f"{run_dir.name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        checkpoint = run_dir / "checkpoints" / LAST
        while not checkpoint.exists() and process.poll() is None:
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be stopped:\n" + log.read_text()[-3000:]
        if kind == signal.SIGTERM:
            process.send_signal(signal.SIGTERM)
        else:
            time.sleep(0.3)  # a few steps on: the kill may land while a checkpoint is being written
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=120)
        deadline = time.monotonic() + 30
        while group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_alive(process.pid), "a DDP rank outlived the stop"
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
    output = log.read_text()
    if kind == signal.SIGTERM:
        assert process.returncode == 0, output[-3000:]
    return output


def test_each_rank_draws_its_own_part_of_one_permutation_and_a_resumed_epoch_skips_its_share() -> None:
    """Two ranks split each epoch's permutation of 13 images (one padded draw, as DistributedSampler pads), and
    the skip resume_at sets (batches done x batch size x world size) leaves each rank its own next draw."""
    sampler = EpochSampler(13, shuffle=True)
    sampler.set_epoch(3)
    alone = list(sampler)
    parts = {}
    for rank in (0, 1):
        with mock.patch.object(EpochSampler, "ranks", staticmethod(lambda rank=rank: (rank, 2))):
            assert len(sampler) == 7
            parts[rank] = list(sampler)
            sampler.skip = 2 * 3 * 2  # two batches of three on each of two ranks
            assert list(sampler) == parts[rank][6:]
            assert list(sampler) == parts[rank], "a skip applies to one epoch only"
    assert set(parts[0]) | set(parts[1]) == set(alone) and len(parts[0] + parts[1]) == 14
    assert all(3 * 13 <= draw < 4 * 13 for draw in alone), "draw numbers carry the epoch (augmentation seeds)"


CASES = [
    pytest.param("memory", signal.SIGTERM, "ckpt_path=last", id="memory-SIGTERM-last"),
    pytest.param("workers", signal.SIGKILL, "ckpt_path=last", id="workers-SIGKILL-last"),
    # The same command: global rank 0 decides to resume and the rank it starts follows (mlproj.resume.DECISION_VAR).
    pytest.param("workers", signal.SIGTERM, None, id="workers-SIGTERM-same-command"),
    pytest.param("shards", signal.SIGTERM, None, id="shards-SIGTERM-same-command"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("path", "kind", "resume"), CASES)
def test_a_ddp_run_stopped_mid_epoch_resumes_to_the_uninterrupted_weights(
    path: str,
    kind: signal.Signals,
    resume: str | None,
    folders: dict[str, Path],
    references: Callable[[str], tuple[dict, dict]],
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    args = command(folders[path], tmp_path, run_dir, path)
    output = stop_mid_epoch(args, tmp_path, run_dir, kind)

    stopped, summary = load(run_dir)
    expected_status = "interrupted" if kind == signal.SIGTERM else "running"
    assert summary["status"] == expected_status, output[-3000:]
    reference, reference_summary = references(path)
    per_epoch = reference["global_step"] // EPOCHS
    assert 0 < batches_into_epoch(stopped) < per_epoch, "the stop did not leave a mid-epoch checkpoint"
    assert stopped["global_step"] < reference["global_step"]

    train([*args, resume] if resume else args, tmp_path)  # None: the same command, as a restarted container runs it
    resumed, resumed_summary = load(run_dir)
    assert resumed_summary["resumed_from"] == str(run_dir / "checkpoints" / LAST)
    assert resumed["global_step"] == reference["global_step"] and resumed["epoch"] == reference["epoch"]
    weights, expected = resumed["state_dict"], reference["state_dict"]
    assert weights.keys() == expected.keys()
    worst = max(
        float((weights[k].double() - expected[k].double()).abs().max()) for k in expected if expected[k].numel()
    )
    assert worst <= TOLERANCE, f"resumed weights differ from the uninterrupted run's by {worst:.3g}"
    assert resumed_summary["status"] == "finished"
    assert resumed_summary["epochs_completed"] == reference_summary["epochs_completed"] == EPOCHS
    assert resumed_summary["metrics"] == reference_summary["metrics"]
