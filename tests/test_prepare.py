"""`mlproj prepare`: check once, record, and say `up to date` while the files are unchanged."""

import csv
import os
from pathlib import Path

import pytest

from mlproj.entry import CONFIG_DIR
from mlproj.prepare import prepare

from conftest import compose, make_image_folder


def run_prepare(root: Path, out: Path, *overrides: str) -> Path:
    return prepare(
        compose("prepare", ["data=imagefolder", f"data.root={root}", "data.validate=false", *overrides], out)
    )


def test_prepare_records_checks_and_is_up_to_date_until_a_file_changes(tmp_path: Path, capsys, caplog) -> None:
    root = make_image_folder(tmp_path / "pics", per_class=6)
    (root / "dog" / "broken.jpg").write_bytes(b"<html>not found</html>")

    first = run_prepare(root, tmp_path / "runs" / "a")
    out = capsys.readouterr().out
    assert "up to date" not in out and "pixel cache: " in out
    assert f"rejected {root / 'dog' / 'broken.jpg'}: not an image Pillow can read" in caplog.text
    rejected = list(csv.DictReader((first / "rejected.csv").open()))
    assert rejected == [{"path": "dog/broken.jpg", "reason": "not an image Pillow can read"}]
    manifest = list(csv.DictReader((first / "manifest.csv").open()))
    assert len(manifest) == 18 and all(row["width"] == "40" for row in manifest)

    second = run_prepare(root, tmp_path / "runs" / "b")
    assert "up to date" in capsys.readouterr().out
    assert list(csv.DictReader((second / "rejected.csv").open())) == rejected
    assert list(csv.DictReader((second / "manifest.csv").open())) == manifest

    changed = root / "cat" / "cat_000.jpg"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    run_prepare(root, tmp_path / "runs" / "c")
    assert "up to date" not in capsys.readouterr().out
    run_prepare(root, tmp_path / "runs" / "d")
    assert "up to date" in capsys.readouterr().out


def test_prepare_rebuilds_the_pixel_cache_when_its_short_side_changes(tmp_path: Path, capsys) -> None:
    root = make_image_folder(tmp_path / "pics", per_class=6)
    run_prepare(root, tmp_path / "runs" / "a", "data.cache_short_side=16")
    capsys.readouterr()
    run_prepare(root, tmp_path / "runs" / "b", "data.cache_short_side=24")
    assert "up to date" not in capsys.readouterr().out
    run_prepare(root, tmp_path / "runs" / "c", "data.cache_short_side=24")
    assert "up to date" in capsys.readouterr().out
    caches = sorted(p.name for p in (tmp_path / "runs" / ".cache" / "pixels").iterdir())
    assert len(caches) == 2 and caches[0].split("-")[1] == "16px" and caches[1].split("-")[1] == "24px"


def test_training_reuses_the_checks_prepare_recorded(tmp_path: Path, train_in_process) -> None:
    root = make_image_folder(tmp_path / "pics", per_class=6)
    run_prepare(root, tmp_path / "logs" / "prepare")
    records = list((tmp_path / "logs" / ".cache" / "checks").glob("*.csv"))
    assert len(records) == 1
    overrides = ["data=imagefolder", f"data.root={root}", "model.backbone=resnet10t", "data.image_size=32"]
    train_in_process(*overrides, "debug=fdr", f"paths.cache_dir={tmp_path / 'logs' / '.cache'}")
    assert list((tmp_path / "logs" / ".cache" / "checks").glob("*.csv")) == records


def test_the_mlproj_command_lists_its_commands(tmp_path: Path) -> None:
    import subprocess
    import sys

    listing = subprocess.run([sys.executable, "-m", "mlproj.cli"], capture_output=True, text=True, cwd=tmp_path)
    assert "usage: mlproj COMMAND" in listing.stderr
    assert listing.returncode == 2 and "prepare" in listing.stderr and "train" in listing.stderr
    helped = subprocess.run([sys.executable, "-m", "mlproj.cli", "prepare", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "data:" in helped.stdout


def test_prepare_from_the_command_line_fails_in_one_line_on_a_missing_root(tmp_path: Path) -> None:
    import subprocess
    import sys

    missing = tmp_path / "none"
    command = [sys.executable, "-m", "mlproj.cli", "prepare", "data=imagefolder", f"data.root={missing}"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: data.root={missing} does not exist: the folder of images: class folders, or train/ val/ [test/] of"
        " class folders (`dvc pull` fetches the shipped ones)"
    ]


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes_for_prepare(experiment: str, tmp_path: Path) -> None:
    """`mlproj prepare experiment=NAME` (and `mlproj vertex submit --task prepare experiment=NAME`) takes any recipe."""
    cfg = compose("prepare", [f"experiment={experiment}", "shards=gs://bucket/set"], tmp_path)
    assert cfg.task == "prepare" and cfg.shards == "gs://bucket/set" and cfg.data._target_


def test_processes_preparing_the_same_data_at_once_all_succeed_and_leave_whole_records(tmp_path: Path) -> None:
    """Three `mlproj prepare` of one folder into one cache at the same moment (as DDP ranks, sweep agents or two
    terminals do): each writes its checks and pixel cache under its own temporary name and renames it into place,
    so every process succeeds and what is left is whole; a fourth run finds it `up to date`."""
    import subprocess
    import sys

    root = make_image_folder(tmp_path / "pics", per_class=40)
    common = ["data=imagefolder", f"data.root={root}", f"paths.cache_dir={tmp_path / 'cache'}"]

    def start(name: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "mlproj.cli", "prepare", *common, f"hydra.run.dir={tmp_path / name}"]
        return subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    racing = [start(f"run{i}") for i in range(3)]
    outputs = [process.communicate(timeout=300)[0] for process in racing]
    assert [process.returncode for process in racing] == [0, 0, 0], outputs
    assert not list((tmp_path / "cache").rglob(".*.tmp-*")), "no temporary file left behind"
    last = start("run3")
    assert last.wait(timeout=300) == 0 and "up to date" in last.stdout.read()
    for name in ("run0", "run1", "run2", "run3"):
        assert len(list(csv.DictReader((tmp_path / name / "manifest.csv").open()))) == 120
