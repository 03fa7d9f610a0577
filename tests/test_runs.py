"""`mlproj runs`: real summary.json files written by RunRecord, read back through the installed `mlproj` command."""

import json
import logging
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlproj.resume import interrupted_run
from mlproj.run_record import RunRecord, run_name

MLPROJ = str(Path(sys.executable).with_name("mlproj"))  # the console script `pip install -e .` made
NAME = re.compile(r"^[a-z]+-[a-z]+-\d\d$")


def record_run(
    logs: Path,
    stamp: str,
    status: str = "finished",
    metrics: dict[str, float] | None = None,
    multirun_job: int | None = None,
    **fields: Any,
) -> Path:
    """A run dir whose summary.json RunRecord wrote: `running` as it does at start (started now, by this process),
    or started on `2024-05-<stamp>` and ended as `status`."""
    parent = logs / "train" / ("runs" if multirun_job is None else f"multiruns/{stamp}")
    run_dir = parent / (stamp if multirun_job is None else str(multirun_job))
    record = RunRecord.start(run_dir, {"experiment": "digits", "backbone": "resnet10t", "batch_size": 64, **fields})
    if status != "running":
        record.summary["started_at"] = f"2024-05-{stamp}+00:00"
        record.summary["epochs_completed"] = 10
        record.metrics.update(metrics or {})
        record.finish(status)
    return run_dir


def rewrite(run_dir: Path, /, **changes: Any) -> None:
    """Change fields RunRecord sets itself (pid, host), as another process or machine would have written them."""
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, **changes}))


def mlproj_runs(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([MLPROJ, "runs", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def listed(logs: Path, *args: str) -> list[dict[str, Any]]:
    result = mlproj_runs("--logs", str(logs), "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def gone_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture
def sleeping_pid() -> Iterator[int]:
    """A live process, started before the test writes its records."""
    process = subprocess.Popen(["sleep", "60"])
    yield process.pid
    process.kill()
    process.wait()


def test_table_shows_runs_newest_first_with_their_numbers(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    old = record_run(
        logs,
        "01T10:00:00",
        metrics={"val/acc_best": 0.9, "test/acc": 0.88, "test/acc_ci95": [0.85, 0.904], "test/loss": 0.41},
        data_root=str(tmp_path / "data" / "digits"),
    )
    new = record_run(logs, "03T10:00:00", status="failed", backbone="convnext_tiny", batch_size=256, data_root="/d")
    mid = record_run(
        logs, "02T10:00:00", status="interrupted", experiment="mushroom_resnet50", shards="gs://b/mushrooms-256"
    )
    result = mlproj_runs(cwd=tmp_path)  # --logs defaults to ./logs
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    columns = ["name", "experiment", "backbone", "data", "status", "started", "epochs", "batch", "best val top-1"]
    assert re.split(r"\s{2,}", header.strip()) == [*columns, "test top-1", "test loss"]
    assert [row.split()[0] for row in rows] == [run_name(new), run_name(mid), run_name(old)]
    assert rows[0].split()[1:5] == ["digits", "convnext_tiny", "/d", "failed"]
    assert rows[0].split()[-5:] == ["10", "256", "-", "-", "-"]
    assert rows[1].split()[1:5] == ["mushroom_resnet50", "resnet10t", "gs://b/mushrooms-256", "interrupted"]
    assert rows[2].split()[3:5] == ["data/digits", "finished"]  # where the data came from, relative to here
    assert rows[2].split()[-7:] == ["10", "64", "0.9000", "0.8800", "±", "0.0270", "0.4100"]  # half the 95% interval


def test_a_running_record_whose_process_is_gone_is_stale(tmp_path: Path, gone_pid: int, sleeping_pid: int) -> None:
    logs = tmp_path / "logs"
    alive = record_run(logs, "01T10:00:00", status="running")
    dead = record_run(logs, "02T10:00:00", status="running")
    reused = record_run(logs, "03T10:00:00", status="running")
    elsewhere = record_run(logs, "04T10:00:00", status="running")
    rewrite(alive, pid=sleeping_pid)
    rewrite(dead, pid=gone_pid)
    rewrite(reused, pid=sleeping_pid, started_at="2024-05-03T10:00:00+00:00")  # its pid taken by a later process
    rewrite(elsewhere, host=f"not-{socket.gethostname()}")
    status = {Path(run["run_dir"]): run["status"] for run in listed(logs)}
    assert status == {alive: "running", dead: "stale", reused: "stale", elsewhere: "running"}
    # Resuming reads the same answer: a stale run dir is resumed, a live one is left alone.
    assert [interrupted_run(str(d)) for d in (alive, dead, reused)] == [False, True, True]
    table = mlproj_runs("--logs", str(logs)).stdout
    assert f"{run_name(dead)}  " in table and " stale " in table


def test_json_is_each_summary_with_resolved_status_and_run_dir(tmp_path: Path, gone_pid: int) -> None:
    logs = tmp_path / "logs"
    finished = record_run(logs, "01T10:00:00", metrics={"test/acc": 0.97})
    dead = record_run(logs, "02T10:00:00", status="running")
    rewrite(dead, pid=gone_pid, run_dir="/moved/away")
    first, second = listed(logs)
    assert first == {**json.loads((dead / "summary.json").read_text()), "status": "stale", "run_dir": str(dead)}
    assert second == {**json.loads((finished / "summary.json").read_text()), "run_dir": str(finished)}
    assert NAME.match(second["name"]) and second["metrics"]["test/acc"] == 0.97


def test_sort_puts_the_best_first_and_runs_without_the_metric_last(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    low = record_run(logs, "01T10:00:00", metrics={"test/acc": 0.5, "test/loss": 1.2})
    high = record_run(logs, "02T10:00:00", metrics={"test/acc": 0.9, "test/loss": 0.3})
    none = record_run(logs, "04T10:00:00", status="failed")
    mid = record_run(logs, "03T10:00:00", metrics={"test/acc": 0.7, "test/loss": 0.8})
    order = {
        sort: [Path(run["run_dir"]) for run in listed(logs, "--sort", sort)] for sort in ("test/acc", "test", "loss")
    }
    assert order["test/acc"] == order["test"] == [high, mid, low, none]
    assert order["loss"] == [high, mid, low, none]  # lowest loss first
    assert [Path(run["run_dir"]) for run in listed(logs)] == [none, mid, high, low]
    bad = mlproj_runs("--logs", str(logs), "--sort", "accuracy")
    assert bad.returncode == 2 and "--sort accuracy is not one of val/acc" in bad.stderr and "test/acc" in bad.stderr


def test_status_filters_by_resolved_status(tmp_path: Path, gone_pid: int) -> None:
    logs = tmp_path / "logs"
    finished = record_run(logs, "01T10:00:00")
    failed = record_run(logs, "02T10:00:00", status="failed")
    dead = record_run(logs, "03T10:00:00", status="running")
    rewrite(dead, pid=gone_pid)
    assert [Path(run["run_dir"]) for run in listed(logs, "--status", "finished")] == [finished]
    assert [Path(run["run_dir"]) for run in listed(logs, "--status", "failed,stale")] == [dead, failed]
    assert listed(logs, "--status", "running") == []
    assert "no training runs under" in mlproj_runs("--logs", str(logs), "--status", "running").stdout
    bad = mlproj_runs("--logs", str(logs), "--status", "done")
    assert bad.returncode == 2 and "--status done is not one of running, finished" in bad.stderr


def test_multirun_jobs_are_listed_each_with_its_own_name(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    jobs = [record_run(logs, "01T10:00:00", multirun_job=n, metrics={"test/acc": n / 10}) for n in range(3)]
    runs = listed(logs)
    assert sorted(Path(run["run_dir"]) for run in runs) == jobs
    assert len({run["name"] for run in runs}) == 3


def test_an_unreadable_summary_is_named_and_the_rest_listed(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    good = record_run(logs, "01T10:00:00")
    broken = logs / "train" / "runs" / "02T10:00:00" / "summary.json"
    broken.parent.mkdir()
    broken.write_text('{"status": "runn')  # cut short by a full disk
    result = mlproj_runs("--logs", str(logs), "--json")
    assert result.returncode == 0 and f"skipped {broken}" in result.stderr
    assert [Path(run["run_dir"]) for run in json.loads(result.stdout)] == [good]


def test_run_name_is_short_memorable_and_kept_by_its_run_dir(tmp_path: Path) -> None:
    names = [RunRecord.start(tmp_path / f"run{i}", {}).summary["name"] for i in range(20)]
    assert all(NAME.match(name) for name in names) and len(set(names)) == 20
    again = RunRecord.start(tmp_path / "run3", {})  # a run resumed in its own run dir
    assert again.summary["name"] == names[3] == run_name(tmp_path / "run3")
    assert json.loads((tmp_path / "run3" / "summary.json").read_text())["name"] == names[3]


def test_the_first_log_line_of_a_run_names_it(image_folder, train_in_process, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    overrides = ["data=imagefolder", f"data.root={image_folder()}", "data.image_size=32", "data.batch_size=8"]
    _, run_dir = train_in_process(*overrides, "model.backbone=resnet10t", "debug=fdr")
    name = json.loads((run_dir / "summary.json").read_text())["name"]
    assert NAME.match(name)
    assert caplog.records[0].getMessage() == f"run {name} in {run_dir}"
    (run,) = listed(tmp_path / "logs")
    assert (run["name"], run["status"]) == (name, "finished")


def test_wandb_runs_get_the_same_name(tmp_path: Path) -> None:
    from mlproj.loggers import wandb_logger

    run_dir = tmp_path / "logs" / "train" / "runs" / "2024-05-01_10-00-00-000000"
    assert wandb_logger(str(run_dir))._wandb_init["name"] == run_name(run_dir)


def test_listing_imports_nothing_heavy(tmp_path: Path) -> None:
    record_run(tmp_path / "logs", "01T10:00:00")
    code = (
        "import sys; from mlproj.cli import main; sys.argv = ['mlproj', 'runs', '--logs', sys.argv[1]]; main();"
        "print(sorted({'torch', 'lightning', 'numpy', 'pandas', 'timm', 'hydra', 'fsspec'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "logs")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]" and "digits" in result.stdout
