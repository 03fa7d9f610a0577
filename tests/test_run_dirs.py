"""A run dir that holds another run is never written into: the new run stops before Hydra writes anything, in one
line naming the run and the ways on (mlproj.entry.RunDirGuard)."""

import json
from pathlib import Path

import pytest

from conftest import run_cli


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def recorded_run(run_dir: Path, status: str) -> Path:
    """A training run's records as train.py leaves them, as far as a new run can tell."""
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 1\n")
    summary = {"status": status, "name": "brave-otter-07", "experiment": "digits", "pid": 0, "host": "elsewhere"}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


@pytest.mark.parametrize("status", ["finished", "failed"])
def test_a_new_training_run_never_writes_into_a_finished_or_failed_one(status: str, tmp_path: Path) -> None:
    run_dir = recorded_run(tmp_path / "run", status)
    before = snapshot(run_dir)
    result = run_cli("train", ["debug=fdr", f"hydra.run.dir={run_dir}"], tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: hydra.run.dir={run_dir} holds run brave-otter-07 ({status}, experiment digits): give another"
        " hydra.run.dir, or ckpt_path=last to resume it, or leave hydra.run.dir out for a new run dir"
    )
    assert snapshot(run_dir) == before, "nothing written, its .hydra config included"


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("train", ["debug=fdr"]),
        ("eval", ["ckpt_path=x.ckpt"]),
        ("predict", ["ckpt_path=x.ckpt", "input=pics"]),
    ],
)
def test_no_task_writes_into_a_folder_of_other_files(script: str, args: list[str], tmp_path: Path) -> None:
    (tmp_path / "x.ckpt").touch()  # paths that exist: the knobs pass, the run dir is what is refused
    (tmp_path / "pics").mkdir()
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    result = run_cli(script, [*args, f"hydra.run.dir={folder}"], tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        f"error: hydra.run.dir={folder} holds notes.txt, which this {script} run would write over: give another"
    )
    assert snapshot(folder) == {"notes.txt": b"mine"}


def test_an_eval_never_writes_into_a_training_run(tmp_path: Path) -> None:
    run_dir = recorded_run(tmp_path / "run", "finished")
    before = snapshot(run_dir)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    result = run_cli("eval", [f"ckpt_path={checkpoint}", f"hydra.run.dir={run_dir}"], tmp_path, timeout=120)
    assert result.returncode == 2
    assert "holds .hydra" not in result.stderr and "checkpoints, summary.json, which this eval run" in result.stderr
    assert snapshot(run_dir) == before
