"""Versioned data: data.dvc, dvc.yaml and `make data`, through the real `dvc` CLI, in fresh git clones of the project,
offline and against a GCS emulator."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest
import yaml

from mlproj.data_version import data_version

from conftest import ROOT, make_image_folder, read_summary

VENV_BIN = Path(sys.executable).parent
# A pipeline run that takes seconds: one short epoch, no loader workers; eval.py tests all 269 test images.
QUICK_PARAMS = {
    "experiment": "digits",
    "data_root": "data/digits",
    "train": {
        "overrides": "trainer.max_epochs=1 trainer.limit_train_batches=2 trainer.limit_val_batches=1 test=false"
        " callbacks.progress_bar=null callbacks.model_summary=null"
    },
    "evaluate": {"overrides": ""},
}
STAGES = ("prepare", "train", "evaluate")


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run a command the way a user types it (the venv first on PATH); fail with its output when it fails."""
    full_env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        **(env or {}),
    }
    done = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{output[-6000:]}"
    return output


def dvc(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    return run([str(VENV_BIN / "dvc"), *args], cwd, env)


def project_repo(tmp_path: Path) -> Path:
    """A git repository of the project as it is now (tracked and new files), to clone from like a user would."""
    source = tmp_path / "origin"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        if not path.exists() and not path.is_symlink():
            continue  # deleted in the working tree
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            target.symlink_to(os.readlink(path))
        else:
            shutil.copy2(path, target)
    run(["git", "init", "-q"], source)
    run(["git", "add", "-A"], source)
    run(["git", "commit", "-q", "-m", "project"], source)
    return source


def fresh_clone(origin: Path, destination: Path, params: dict | None = None) -> Path:
    run(["git", "clone", "-q", str(origin), str(destination)], origin.parent)
    if params is not None:
        (destination / "params.yaml").write_text(yaml.safe_dump(params))
    return destination


def make_data(clone: Path) -> str:
    """`make data` with the test session's venv, which is up to date whatever the clone's file times say."""
    venv = VENV_BIN.parent
    return run(["make", "-o", f"{venv}/.installed", f"VENV={venv}", "data"], clone)


def stages_run(output: str) -> list[str]:
    return [stage for stage in STAGES if f"Running stage '{stage}'" in output]


def use_emulator_remote(repo: Path, bucket: str, endpoint: str) -> None:
    """What the README tells users: the remote's URL and endpoint in .dvc/config.local, outside git."""
    dvc("remote", "add", "--local", "--force", "-d", "emulated", f"{bucket}/dvcstore", cwd=repo)
    dvc("remote", "modify", "--local", "emulated", "endpointurl", endpoint, cwd=repo)
    dvc("remote", "modify", "--local", "emulated", "allow_anonymous_login", "true", cwd=repo)


def tracked_md5(dvc_file: Path) -> str:
    return yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]


def test_data_version_is_the_hash_dvc_records_until_a_file_changes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    images = make_image_folder(repo / "images", per_class=3)
    run(["git", "init", "-q"], repo)
    dvc("init", "-q", cwd=repo)
    dvc("add", "images", cwd=repo)
    assert data_version(images) == {"md5": tracked_md5(repo / "images.dvc"), "tracked_by": "images.dvc"}

    (images / "cat" / "cat_000.jpg").write_bytes(b"changed")
    changed = data_version(images)
    assert changed["md5"] != tracked_md5(repo / "images.dvc") and changed["tracked_by"] is None


def test_dvc_push_then_pull_restores_an_image_folder_byte_for_byte(tmp_path: Path, gcs_emulator) -> None:
    repo = tmp_path / "repo"
    images = make_image_folder(repo / "data" / "raw", per_class=4)
    original = {p.relative_to(images): p.read_bytes() for p in images.rglob("*") if p.is_file()}
    run(["git", "init", "-q"], repo)
    dvc("init", "-q", cwd=repo)
    dvc("add", "data/raw", cwd=repo)
    bucket = gcs_emulator.bucket("push-pull")
    use_emulator_remote(repo, bucket, gcs_emulator.endpoint)
    dvc("push", cwd=repo)
    assert len(fsspec.filesystem("gs").find(f"{bucket}/dvcstore")) == 13  # 12 images and the folder's listing

    shutil.rmtree(images)
    shutil.rmtree(repo / ".dvc" / "cache")
    dvc("pull", cwd=repo)
    restored = {p.relative_to(images): p.read_bytes() for p in images.rglob("*") if p.is_file()}
    assert restored == original


@pytest.mark.slow
def test_make_data_push_then_pull_and_repro_in_a_fresh_clone_reruns_only_what_changed(
    tmp_path: Path, gcs_emulator
) -> None:
    """The whole pipeline once: `make data` and `dvc push` in one clone, `dvc pull` and `dvc repro` in another."""
    origin = project_repo(tmp_path)
    first = fresh_clone(origin, tmp_path / "first")
    data_dvc = (first / "data.dvc").read_bytes()
    make_data(first)
    assert (first / "data.dvc").read_bytes() == data_dvc  # regenerated byte for byte
    shutil.rmtree(first / "data" / "digits")
    dvc("checkout", "data.dvc", cwd=first)  # the files are in DVC's cache now
    assert len(list((first / "data" / "digits").rglob("*.png"))) == 1797
    bucket = gcs_emulator.bucket("pipeline")
    use_emulator_remote(first, bucket, gcs_emulator.endpoint)
    dvc("push", "data.dvc", cwd=first)

    clone = fresh_clone(origin, tmp_path / "clone", QUICK_PARAMS)
    assert not (clone / "data" / "digits").exists()
    use_emulator_remote(clone, bucket, gcs_emulator.endpoint)
    dvc("pull", "data.dvc", cwd=clone)
    assert len(list((clone / "data" / "digits").rglob("*.png"))) == 1797

    assert stages_run(dvc("repro", cwd=clone)) == list(STAGES)
    summary = read_summary(clone / "results" / "train")
    assert summary["data_version"] == {"md5": tracked_md5(clone / "data.dvc"), "tracked_by": "data.dvc"}
    hparams = yaml.safe_load((clone / "results" / "train" / "csv" / "hparams.yaml").read_text())
    assert hparams["run"]["data_version"]["md5"] == tracked_md5(clone / "data.dvc")
    (workspace,) = json.loads(dvc("metrics", "show", "--json", cwd=clone)).values()
    assert "test/acc" in workspace["data"]["results/evaluate/metrics.json"]["data"]
    plots = json.loads(dvc("plots", "show", "--json", cwd=clone))
    assert not plots.get("errors") and set(plots["data"]) == {
        "results/train/csv/metrics.csv",
        "results/evaluate/predictions.csv",
        "results/evaluate/metrics.csv",
        "results/evaluate/figures/confusion_matrix.png",
        "results/evaluate/figures/misclassified.png",
        "results/evaluate/figures/reliability.png",
    }
    predictions = (clone / "results" / "evaluate" / "predictions.csv").read_text().splitlines()
    assert (
        predictions[0].startswith("path,actual,prediction,") and len(predictions) == 1 + summary["split_sizes"]["test"]
    )
    committed = run(["git", "status", "--porcelain", "--untracked-files=all", "results"], clone).split()
    assert "results/evaluate/metrics.json" in committed and "results/train/summary.json" not in committed

    assert stages_run(dvc("repro", cwd=clone)) == []
    assert "Data and pipelines are up to date" in dvc("status", cwd=clone)

    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["evaluate"]["overrides"] = "trainer.limit_test_batches=2"
    (clone / "params.yaml").write_text(yaml.safe_dump(params))
    assert stages_run(dvc("repro", "--dry", cwd=clone)) == ["evaluate"]
    (clone / "params.yaml").write_text(yaml.safe_dump(QUICK_PARAMS))

    image = clone / "data" / "digits" / "3" / "0003.png"
    image.write_bytes(image.read_bytes()[:-12] + bytes(12))
    assert stages_run(dvc("repro", cwd=clone)) == list(STAGES), "each stage runs again over its earlier results"
    assert read_summary(clone / "results" / "train")["data_version"]["md5"] == tracked_md5(clone / "data.dvc")
