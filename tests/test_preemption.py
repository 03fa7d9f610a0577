"""Training that survives being stopped: signals, atomic checkpoints, exact resume, automatic resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mlproj import __version__
from mlproj.checkpoints import LAST, PREVIOUS
from mlproj.resume import resolve_resume

from conftest import ROOT, make_image_folder, run_cli

QUICK = (
    "data=imagefolder",
    "data.image_size=16",
    "data.batch_size=4",
    "data.num_workers=0",
    "model.backbone=test_resnet",
    "test=false",
    "callbacks.preemption.every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
)


@pytest.fixture
def pics(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "pics", per_class=6)


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


@pytest.mark.slow
def test_runs_stopped_at_random_moments_by_sigterm_or_sigkill_resume_exactly() -> None:
    """Four trials of benchmarks/preemption.py (the benchmark runs 20): the same code it reports, run here."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "preemption.py"), "--trials", "4", "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    trials = [line for line in result.stdout.splitlines() if line.startswith("trial ")]
    assert len(trials) == 4, result.stdout[-3000:] + result.stderr[-3000:]
    assert sum("SIGTERM" in line for line in trials) == 2 and sum("SIGKILL" in line for line in trials) == 2
    assert "4 of 4 interrupted runs resumed exactly" in result.stdout, "\n".join(trials)
    assert result.returncode == 0


def test_each_checkpoint_keeps_its_predecessor_and_holds_the_random_states(pics: Path, train_in_process) -> None:
    _, run_dir = train_in_process(f"data.root={pics}", *QUICK, "trainer.max_epochs=1")
    last, previous = run_dir / "checkpoints" / LAST, run_dir / "checkpoints" / PREVIOUS
    assert last.is_file() and previous.is_file()
    assert not list((run_dir / "checkpoints").glob("*.tmp-*")), "a temporary checkpoint was left behind"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert set(checkpoint["mlproj_rng"]) >= {"python", "numpy", "torch"}
    assert checkpoint["mlproj"]["version"]
    assert checkpoint_step(previous) <= checkpoint_step(last)


def test_a_resumed_run_ends_with_the_same_last_checkpoint(pics: Path, train_in_process) -> None:
    """Lightning's ModelCheckpoint writes last.ckpt at the end of training only in a process that saved none, so a
    resumed run used to end with another file (epoch counter and metric states past the epoch's end)."""
    _, run_dir = train_in_process(f"data.root={pics}", *QUICK, "trainer.max_epochs=2")
    finished = torch.load(run_dir / "checkpoints" / LAST, map_location="cpu", weights_only=True)
    _, resumed_dir = train_in_process(f"data.root={pics}", *QUICK, "trainer.max_epochs=2", "ckpt_path=last")
    assert resumed_dir == run_dir
    resumed = torch.load(run_dir / "checkpoints" / LAST, map_location="cpu", weights_only=True)
    assert finished["epoch"] == resumed["epoch"] == 2 and finished["global_step"] == resumed["global_step"]
    assert finished["state_dict"].keys() == resumed["state_dict"].keys()
    assert all(torch.equal(finished["state_dict"][k], resumed["state_dict"][k]) for k in finished["state_dict"])


def test_a_truncated_last_checkpoint_falls_back_to_the_one_before(
    pics: Path, train_in_process, tmp_path: Path, caplog
) -> None:
    _, run_dir = train_in_process(f"data.root={pics}", *QUICK, "trainer.max_epochs=2")
    last = run_dir / "checkpoints" / LAST
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])  # as a kill in mid-write would leave it

    point = resolve_resume(
        "last", run_dir, str(run_dir / "checkpoints"), tmp_path / "logs" / "train" / "runs", "digits"
    )
    assert point.ckpt_path == str(run_dir / "checkpoints" / PREVIOUS)
    assert f"ckpt_path={last} is not a readable checkpoint" in caplog.text

    _, resumed = train_in_process(f"data.root={pics}", *QUICK, "trainer.max_epochs=3", "ckpt_path=last")
    assert resumed == run_dir
    assert json.loads((run_dir / "summary.json").read_text())["epochs_completed"] == 3


def test_an_interrupted_run_dir_resumes_on_its_own_and_a_finished_one_does_not(pics: Path, train_in_process) -> None:
    _, run_dir = train_in_process(f"data.root={pics}", *QUICK, "trainer.max_epochs=1")
    summary_path = run_dir / "summary.json"
    finished_step = checkpoint_step(run_dir / "checkpoints" / LAST)

    train_in_process(f"data.root={pics}", *QUICK, "trainer.max_epochs=2", run_dir=run_dir)
    assert json.loads(summary_path.read_text())["resumed_from"] is None, "a finished run was resumed silently"

    summary = json.loads(summary_path.read_text())
    summary["status"] = "interrupted"
    summary_path.write_text(json.dumps(summary))
    train_in_process(f"data.root={pics}", *QUICK, "trainer.max_epochs=3", run_dir=run_dir)
    resumed = json.loads(summary_path.read_text())
    assert resumed["resumed_from"] == str(run_dir / "checkpoints" / LAST)
    assert resumed["status"] == "finished" and resumed["epochs_completed"] == 3
    assert checkpoint_step(run_dir / "checkpoints" / LAST) > finished_step


def test_a_dead_running_record_counts_as_interrupted(pics: Path, train_in_process) -> None:
    _, run_dir = train_in_process(f"data.root={pics}", *QUICK, "trainer.max_epochs=1")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    summary.update(status="running", pid=int(dead.stdout))  # SIGKILL leaves `running` behind
    summary_path.write_text(json.dumps(summary))
    point = resolve_resume(None, run_dir, str(run_dir / "checkpoints"), run_dir.parent, "digits")
    assert point.ckpt_path == str(run_dir / "checkpoints" / LAST)


def test_checkpoints_of_another_version_or_with_missing_weights_fail_in_one_line(
    pics: Path, train_in_process, tmp_path: Path
) -> None:
    _, run_dir = train_in_process(f"data.root={pics}", *QUICK, "trainer.max_epochs=1")
    checkpoint = torch.load(run_dir / "checkpoints" / LAST, map_location="cpu", weights_only=True)

    old = dict(checkpoint, mlproj={**checkpoint["mlproj"], "version": "0.0.1"})
    torch.save(old, tmp_path / "old.ckpt")
    result = run_cli("eval", [f"ckpt_path={tmp_path / 'old.ckpt'}", f"hydra.run.dir={tmp_path / 'e1'}"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: ckpt_path={tmp_path / 'old.ckpt'} was written by mlproj 0.0.1, this is {__version__}:"
        " use mlproj 0.0.1 (git checkout its commit) or train again"
    ]

    state = dict(checkpoint["state_dict"])
    del state["backbone.fc.weight"]
    torch.save(dict(checkpoint, state_dict=state), tmp_path / "partial.ckpt")
    result = run_cli("eval", [f"ckpt_path={tmp_path / 'partial.ckpt'}", f"hydra.run.dir={tmp_path / 'e2'}"], tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "does not fit this model: 1 missing (backbone.fc.weight), 0 unexpected" in result.stderr


def test_sigterm_before_training_ends_the_process_without_a_traceback(pics: Path, tmp_path: Path) -> None:
    """A stop while the data is being prepared: the process ends at once, status 143, nothing half-written."""
    import signal
    import time

    script = (
        "import os, signal, sys; sys.argv = sys.argv[:1] + sys.argv[2:];"
        " from mlproj import build; real = build.build_datamodule;"
        " build.build_datamodule = lambda *a: (os.kill(os.getpid(), signal.SIGTERM), real(*a))[1];"
        " import mlproj.train as t; t.build_datamodule = build.build_datamodule; t.main()"
    )
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", script, "train", f"data.root={pics}", *QUICK, f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert time.perf_counter() - started < 60


def final_weights(url: str) -> dict[str, torch.Tensor]:
    import fsspec

    with fsspec.open(url, "rb") as handle:
        return torch.load(handle, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_a_restarted_container_resumes_from_its_bucket_checkpoint_dir_exactly(
    pics: Path, tmp_path: Path, gcs_emulator
) -> None:
    """Vertex AI: checkpoints go to AIP_CHECKPOINT_DIR (gs://); after SIGTERM, a restarted container runs the same
    command in a fresh run dir and picks the run up from the bucket, ending with the uninterrupted run's weights."""
    import signal
    import time

    import fsspec

    from mlproj.run_record import read_summary

    aip_dir = f"{gcs_emulator.bucket('vertex')}/job/checkpoints"
    args = [f"data.root={pics}", *QUICK, "trainer.max_epochs=3", "logger=wandb", "test=true"]
    env = {**os.environ, **gcs_emulator.env, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}

    reference = run_cli("train", [*args, f"hydra.run.dir={tmp_path / 'reference'}"], tmp_path, env=env)
    assert reference.returncode == 0, reference.stderr[-2000:]

    env["AIP_CHECKPOINT_DIR"] = aip_dir
    command = [sys.executable, str(ROOT / "train.py"), *args]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    fs, _ = fsspec.core.url_to_fs(aip_dir)
    while not fs.exists(f"{aip_dir}/{LAST}") and process.poll() is None:
        time.sleep(0.05)
        fs.invalidate_cache()
    assert process.poll() is None, "the run finished before it could be stopped"
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 0, output[-2000:]
    stopped = read_summary(aip_dir)
    assert stopped["status"] == "interrupted", "the summary beside the bucket's checkpoints says how the run ended"
    assert stopped["epochs_completed"] < 3

    restarted = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert f"holds an interrupted run: resuming it from {aip_dir}/{LAST}" in restarted.stdout + restarted.stderr
    finished = read_summary(aip_dir)
    assert finished["status"] == "finished" and finished["resumed_from"] == f"{aip_dir}/{LAST}"
    assert finished["best_checkpoint"] == f"{aip_dir}/best.ckpt"
    first_dir, second_dir = Path(stopped["run_dir"]), Path(finished["run_dir"])
    assert first_dir != second_dir, "each container start has its own local run dir"
    assert (second_dir / "wandb_run_id").read_text() == (first_dir / "wandb_run_id").read_text(), "same W&B run"

    expected = final_weights(str(tmp_path / "reference" / "checkpoints" / LAST))
    resumed = final_weights(f"{aip_dir}/{LAST}")
    assert max(float((resumed[k].double() - expected[k].double()).abs().max()) for k in expected) <= 1e-6
    assert finished["metrics"] == read_summary(tmp_path / "reference")["metrics"]
    assert not [p for p in fs.ls(aip_dir, detail=False) if ".tmp-" in p], "a temporary object was left behind"

    fresh = tmp_path / "logs" / "train" / "runs" / "another-start"
    point = resolve_resume(None, fresh, aip_dir, tmp_path / "logs" / "train" / "runs", "digits")
    assert point.ckpt_path is None, "a finished run is never resumed silently"
