"""summary.json: the machine-readable record of a run, written at start and rewritten at the end."""

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlproj import __version__

SUMMARY = "summary.json"
HYDRA_FILES = {".hydra", "train.log", "eval.log", "predict.log"}
REPORTED_METRICS = ("val/acc", "val/acc_best", "test/acc", "test/acc_top5", "test/loss")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def git_state(cwd: Path) -> tuple[str | None, bool | None]:
    """The commit checked out where the run started, and whether tracked files differ from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit.stdout.strip(), bool(status.stdout.strip())


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0], "mlproj": __version__}
    for name in ("torch", "torchvision", "lightning", "timm", "torchmetrics", "hydra-core"):
        with suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def is_main_process() -> bool:
    """Only global rank 0 writes records; DDP children re-run the entry point with these set."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def discard_unused_run_dir(run_dir: Path) -> None:
    """Remove a run dir that holds only what Hydra wrote at start, so a bad config leaves nothing behind."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= HYDRA_FILES:
        shutil.rmtree(run_dir, ignore_errors=True)


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / SUMMARY).read_text())
    except (OSError, ValueError):
        return None


class RunRecord:
    def __init__(self, run_dir: Path, summary: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.summary = summary

    @classmethod
    def start(cls, run_dir: Path, fields: dict[str, Any]) -> "RunRecord":
        commit, dirty = git_state(Path.cwd())
        summary = {
            "status": "running",
            **fields,
            "started_at": now(),
            "ended_at": None,
            "epochs_completed": 0,
            "metrics": {},
            "best_checkpoint": None,
            "git_commit": commit,
            "git_dirty": dirty,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "versions": package_versions(),
        }
        record = cls(run_dir, summary)
        record.write()
        return record

    @property
    def metrics(self) -> dict[str, float]:
        return self.summary["metrics"]

    def write(self) -> None:
        if not is_main_process():
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.run_dir / f".{SUMMARY}.tmp"
        tmp.write_text(json.dumps(self.summary, indent=2, default=str) + "\n")
        tmp.replace(self.run_dir / SUMMARY)

    def update_from(self, trainer: Any) -> None:
        """Copy progress, the reported metrics and the best checkpoint from a Lightning Trainer."""
        self.summary["epochs_completed"] = int(trainer.fit_loop.epoch_progress.current.completed)
        for name in REPORTED_METRICS:
            value = trainer.callback_metrics.get(name)
            if value is not None:
                self.metrics[name] = float(value)
        checkpoint = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if checkpoint:
            self.summary["best_checkpoint"] = checkpoint if "://" in checkpoint else str(Path(checkpoint).absolute())

    def finish(self, status: str, trainer: Any | None = None) -> None:
        if trainer is not None:
            self.update_from(trainer)
        self.summary["status"] = status
        self.summary["ended_at"] = now()
        self.write()

    @contextmanager
    def recording(self, trainer: Any) -> Iterator["RunRecord"]:
        """Whatever happens inside, summary.json ends as finished, interrupted or failed."""
        try:
            yield self
        except (KeyboardInterrupt, SystemExit):
            self.finish("interrupted", trainer)
            raise
        except BaseException:
            self.finish("failed", trainer)
            raise
        self.finish("interrupted" if trainer.interrupted else "finished", trainer)
