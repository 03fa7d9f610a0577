"""summary.json: the machine-readable record of a run, written at start and rewritten at the end."""

import hashlib
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
from mlproj.storage import read_text, write_json, write_text

SUMMARY = "summary.json"
RUN_ID_FILE = "wandb_run_id"  # the W&B run a run dir logs to (mlproj.loggers), kept so a resume continues it
# What Hydra writes into a run dir before the task starts (the log is named by hydra.job.name, the task).
HYDRA_FILES = {".hydra", *(f"{task}.log" for task in ("train", "eval", "predict", "prepare", "export"))}
REPORTED_METRICS = ("val/acc", "val/acc_best", "test/acc", "test/acc_top5", "test/loss")
# Run names: adjective-noun-NN, 64 x 64 x 100 = 409,600 of them (word lists as text: 128 quoted strings read worse).
ADJECTIVES = """amber bold brave bright brisk calm clever cosmic crisp curious daring dusty eager fancy fierce fluffy
frosty gentle giddy glad golden grand happy hardy humble icy jolly keen kind lively lucky lunar mellow merry misty
modest nimble noble odd plucky polar proud quick quiet rapid rosy rustic shiny silent silver sleek snowy solar spry
stellar steady stormy sunny swift tidy vivid warm wild witty""".split()  # noqa: SIM905
NOUNS = """badger beaver bison cobra condor coyote crane dingo dolphin eagle falcon ferret finch fox gecko gibbon
heron hippo ibis jackal jaguar koala lemur leopard lion llama lynx magpie marmot mink moose newt ocelot octopus orca
osprey otter owl panda parrot pelican penguin puffin quail rabbit raven robin salmon seal shark sloth sparrow
stork swan tapir tiger toucan turtle walrus weasel whale wombat yak zebra""".split()  # noqa: SIM905


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


def run_name(run_dir: Path) -> str:
    """A short name people can say and remember ("brisk-otter-42"), derived from the run dir so the first log line
    can show it before summary.json exists and a run resumed in place keeps it. Two runs share a name with odds
    of 1 in 409,600; the run dir stays the key."""
    digest = int.from_bytes(hashlib.blake2b(str(run_dir.absolute()).encode(), digest_size=8).digest(), "big")
    digest, adjective = divmod(digest, len(ADJECTIVES))
    digest, noun = divmod(digest, len(NOUNS))
    return f"{ADJECTIVES[adjective]}-{NOUNS[noun]}-{digest % 100:02d}"


def pid_replaced(pid: int, started_at: str) -> bool:
    """Whether live pid `pid` is no longer the run that started at `started_at` (ISO time): a process started later
    holds it (pids are reused, after a reboot say), or the run exited and waits to be reaped. Linux only (/proc);
    False elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if "btime" in line)
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        recorded = datetime.fromisoformat(started_at).timestamp()
    except (OSError, IndexError, StopIteration, ValueError):
        return False
    # The run's process starts before it records `started_at`; a few seconds absorb btime's rounding, clock steps.
    return fields[0] == "Z" or started > recorded + 5  # Z: exited, not yet reaped


def run_process_alive(summary: dict[str, Any]) -> bool | None:
    """Whether the process that wrote a `running` summary still runs: None when it ran on another host (nothing
    here can tell), False when its pid is gone, is this process (a restarted container often gets pid 1 again)
    or now belongs to a process started after the run. One answer for resuming (mlproj.resume) and for
    listing runs (mlproj.runs), which differ only in what they make of None."""
    if summary.get("host") != socket.gethostname():
        return None
    pid = int(summary.get("pid") or 0)
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass  # exists, owned by another user
    except OSError:
        return False
    return not pid_replaced(pid, summary.get("started_at") or now())


def is_main_process() -> bool:
    """Only global rank 0 writes records; DDP children re-run the entry point with these set."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def discard_unused_run_dir(run_dir: Path) -> None:
    """Remove a run dir that holds only what Hydra wrote at start, so a bad config leaves nothing behind."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= HYDRA_FILES:
        shutil.rmtree(run_dir, ignore_errors=True)


def occupied(run_dir: Path, task: str, ckpt_path: str | None) -> str | None:
    """What in `run_dir` a new `task` run must not write over (None: nothing). Only an interrupted training run
    (or one whose process is gone) is continued in place; `ckpt_path=last` asks for that explicitly."""
    if not run_dir.is_dir():
        return None
    found = sorted({p.name for p in run_dir.iterdir()} - HYDRA_FILES)
    if not found:
        return None
    summary = read_summary(run_dir)
    if task == "train" and summary is not None:
        status = summary.get("status")
        if ckpt_path == "last" or status == "interrupted" or (status == "running" and not run_process_alive(summary)):
            return None
        return f"holds run {summary.get('name')} ({status}, experiment {summary.get('experiment')})"
    shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
    return f"holds {shown}, which this {task} run would write over"


def read_summary(records: str | Path) -> dict[str, Any] | None:
    """The summary.json in a run dir, or in a checkpoint dir elsewhere (any fsspec location), if readable."""
    text = read_text(f"{records}/{SUMMARY}")
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return None


class RunRecord:
    """summary.json in the run dir and, when the checkpoints live elsewhere (`mirror`: a bucket, Vertex AI's
    AIP_CHECKPOINT_DIR), a copy beside them with the W&B run id, so a restarted container that has only the
    checkpoint dir knows whether the run was interrupted and which W&B run to continue."""

    def __init__(self, run_dir: Path, summary: dict[str, Any], mirror: str | None = None) -> None:
        self.run_dir = run_dir
        self.summary = summary
        self.mirror = mirror

    @classmethod
    def start(cls, run_dir: Path, fields: dict[str, Any], mirror: str | None = None) -> "RunRecord":
        commit, dirty = git_state(Path.cwd())
        summary = {
            "status": "running",
            "name": run_name(run_dir),
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
        record = cls(run_dir, summary, mirror)
        record.write()
        return record

    @property
    def metrics(self) -> dict[str, float]:
        return self.summary["metrics"]

    def write(self) -> None:
        if not is_main_process():
            return
        write_json(self.run_dir / SUMMARY, self.summary)
        if self.mirror:
            write_json(f"{self.mirror}/{SUMMARY}", self.summary)
            run_id = self.run_dir / RUN_ID_FILE
            if run_id.is_file():
                write_text(f"{self.mirror}/{RUN_ID_FILE}", run_id.read_text())

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
