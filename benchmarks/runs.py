"""`mlproj runs` with 500 run dirs must answer in under a second: it reads summary.json files and nothing else.

Writes 500 run dirs into a temporary logs/ (400 single runs, 10 multiruns of 10 jobs), each summary.json shaped by
the real RunRecord (finished, failed, interrupted, and `running` ones whose process is gone, here or on another
host), then times the installed `mlproj runs` as a subprocess, wall clock, as a user would wait for it. For scale,
the same run times `python -c pass`.
"""

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from mlproj.run_record import RunRecord, run_name

GOAL_S = 1.0
RUNS, MULTIRUNS, JOBS = 400, 10, 10
MLPROJ = str(Path(sys.executable).with_name("mlproj"))


def gone_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def write_runs(logs: Path, seed: int = 0) -> int:
    """RunRecord's own summary once, then 500 variations of it in their run dirs; returns how many."""
    rng = random.Random(seed)
    fields = {
        "experiment": "digits",
        "backbone": "resnet10t",
        "batch_size": 64,
        "data_root": "data/digits",
        "data_version": {"kind": "folder", "files": 1797, "digest": "0" * 16},
        "num_classes": 10,
        "split_sizes": {"train": 1293, "val": 144, "test": 360},
        "test_split": "test",
        "resumed_from": None,
    }
    template = RunRecord.start(logs.parent / "template", fields).summary  # outside logs/: not listed
    dead = gone_pid()
    first = datetime(2024, 1, 1, tzinfo=timezone.utc)
    dirs = [logs / "train" / "runs" / f"run{i:03d}" for i in range(RUNS)]
    dirs += [logs / "train" / "multiruns" / f"sweep{m:02d}" / str(j) for m in range(MULTIRUNS) for j in range(JOBS)]
    for i, run_dir in enumerate(dirs):
        started = first + timedelta(hours=i, minutes=rng.randrange(60))
        status = rng.choices(["finished", "failed", "interrupted", "running"], weights=[80, 8, 7, 5])[0]
        summary: dict[str, Any] = {
            **template,
            "status": status,
            "name": run_name(run_dir),
            "experiment": rng.choice(["digits", "mushroom_resnet50", "cifar10_resnet18"]),
            "backbone": rng.choice(["resnet10t", "resnet50.a1_in1k", "convnext_tiny"]),
            "run_dir": str(run_dir),
            "batch_size": rng.choice([32, 64, 256]),
            "started_at": started.isoformat(timespec="milliseconds"),
            "ended_at": None if status == "running" else (started + timedelta(minutes=20)).isoformat(),
            "epochs_completed": rng.randrange(1, 30),
            "metrics": {"val/acc": rng.random(), "val/acc_best": rng.random()},
            "pid": dead,
            "host": socket.gethostname() if rng.random() < 0.5 else "another-host",
        }
        if status == "finished":
            summary["metrics"].update(
                {"test/acc": rng.random(), "test/acc_top5": rng.random(), "test/loss": rng.random()}
            )
        run_dir.mkdir(parents=True)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return len(dirs)


def wall_time(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp) / "logs"
        count = write_runs(logs)
        commands = {
            "runs_500_s": [MLPROJ, "runs", "--logs", str(logs)],
            "runs_500_json_s": [MLPROJ, "runs", "--logs", str(logs), "--json", "--sort", "test/acc"],
            "python_startup_s": [sys.executable, "-c", "pass"],
        }
        listed = subprocess.run(commands["runs_500_s"], check=True, capture_output=True, text=True).stdout
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):  # interleaved, so machine noise hits every command alike
            for name, command in commands.items():
                times[name].append(wall_time(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    startup = medians.pop("python_startup_s")
    print(f"{count} run dirs, {len(listed.splitlines()) - 1} rows listed; {os.cpu_count()} CPUs")
    print(f"median of {args.repeats} runs each; for scale, `python -c pass` takes {startup:.3f} s")
    for name, value in medians.items():
        print(f"ratio {name} {value:.3f} (goal <= {GOAL_S:g}){'' if value <= GOAL_S else ' MISSED'}")


if __name__ == "__main__":
    main()
