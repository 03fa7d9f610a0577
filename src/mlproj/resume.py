"""Where a training run continues from: `ckpt_path=last`, a run interrupted before, or a fresh start.

Reading and checking the checkpoints themselves is mlproj.checkpoints.
"""

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlproj.checkpoints import checkpoint_in
from mlproj.run_record import RUN_ID_FILE, discard_unused_run_dir, is_main_process, read_summary, run_process_alive
from mlproj.storage import read_text

log = logging.getLogger(__name__)

# Global rank 0's decision, inherited by the DDP processes Lightning starts: they must not decide again, since by
# then rank 0 has rewritten the run's summary.json as `running` (and a fresh start on one rank hangs the others).
DECISION_VAR = "MLPROJ_RESUME_DECISION"


@dataclass(frozen=True)
class ResumePoint:
    run_dir: Path
    ckpt_path: str | None
    checkpoint: dict[str, Any] | None = None  # already read while looking for it: checks need not read it again


def mirror_dir(run_dir: Path, checkpoint_dir: str) -> str | None:
    """The checkpoint dir when it lives outside the run dir (AIP_CHECKPOINT_DIR on Vertex AI, a bucket): a restarted
    container gets a fresh local run dir and only that survives, so the run's records are mirrored there
    (mlproj.run_record.RunRecord) and read back from there when deciding whether to resume."""
    return None if checkpoint_dir.rstrip("/") == f"{run_dir}/checkpoints" else checkpoint_dir


def interrupted_run(records: str) -> bool:
    """A run that was stopped (status interrupted) or died without saying so (running, process gone)."""
    summary = read_summary(records) or {}
    if summary.get("status") == "interrupted":
        return True
    # A `running` record from another machine is taken over too: this run dir is being started again from here.
    return summary.get("status") == "running" and not run_process_alive(summary)


def newest_checkpoint_of(experiment: str | None, runs_dir: Path) -> tuple[Path, str, dict[str, Any]] | None:
    """The most recently started run of `experiment` under `runs_dir` that left a readable last checkpoint."""
    if not runs_dir.is_dir():
        return None
    runs = []
    for run_dir in runs_dir.iterdir():
        summary = read_summary(run_dir)
        if summary and summary.get("experiment") == experiment:
            checkpoint_dir = summary.get("checkpoint_dir") or f"{run_dir}/checkpoints"
            runs.append((summary.get("started_at") or "", run_dir, checkpoint_dir))
    for _, run_dir, checkpoint_dir in sorted(runs, reverse=True):
        found = checkpoint_in(checkpoint_dir)
        if found:
            return run_dir, *found
    return None


def adopt_run_dir(fresh: Path, previous: Path) -> None:
    """Continue in `previous`: bring this invocation's resolved config along, drop the empty fresh dir."""
    if not fresh.is_dir():
        return
    if (fresh / ".hydra").is_dir():
        shutil.copytree(fresh / ".hydra", previous / ".hydra", dirs_exist_ok=True)
    discard_unused_run_dir(fresh)


def adopt_run_id(mirror: str, run_dir: Path) -> None:
    """A fresh run dir that resumes a run recorded elsewhere keeps logging to that run's W&B run."""
    run_id = read_text(f"{mirror}/{RUN_ID_FILE}")
    if run_id and not (run_dir / RUN_ID_FILE).exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_ID_FILE).write_text(run_id)


def resolve_resume(
    ckpt_path: str | None, run_dir: Path, checkpoint_dir: str, runs_dir: Path, experiment: str | None
) -> ResumePoint:
    """`decide_resume`, taken once by global rank 0 and followed by the DDP processes it starts (DECISION_VAR).

    Processes started otherwise (torchrun, other nodes) have no decision to inherit and decide themselves.
    """
    if not is_main_process() and DECISION_VAR in os.environ:
        decided_dir, decided_ckpt = json.loads(os.environ[DECISION_VAR])
        return ResumePoint(Path(decided_dir), decided_ckpt)
    point = decide_resume(ckpt_path, run_dir, checkpoint_dir, runs_dir, experiment)
    if is_main_process():
        os.environ[DECISION_VAR] = json.dumps([str(point.run_dir), point.ckpt_path])
    return point


def decide_resume(
    ckpt_path: str | None, run_dir: Path, checkpoint_dir: str, runs_dir: Path, experiment: str | None
) -> ResumePoint:
    """Turn `ckpt_path` into a checkpoint to resume from and the run dir to continue in.

    None resumes on its own only when this run's records say it was interrupted. `last` means this run's
    checkpoint dir (paths.checkpoint_dir: the run dir's checkpoints/, or AIP_CHECKPOINT_DIR on Vertex AI) first,
    then the newest run of the same experiment under logs/, whose run dir is then reused.
    """
    mirror = mirror_dir(run_dir, checkpoint_dir)
    records = mirror or str(run_dir)
    if ckpt_path is None:
        found = checkpoint_in(checkpoint_dir) if interrupted_run(records) else None
        if found is None:
            return ResumePoint(run_dir, None)
        log.warning("%s holds an interrupted run: resuming it from %s", records, found[0])
    elif ckpt_path != "last":
        return ResumePoint(run_dir, ckpt_path)
    else:
        found = checkpoint_in(checkpoint_dir)
    if found is not None:
        if mirror:
            adopt_run_id(mirror, run_dir)
        return ResumePoint(run_dir, *found)
    previous = newest_checkpoint_of(experiment, runs_dir)
    if previous is None:
        log.warning("ckpt_path=last: no checkpoint of experiment %s under %s; starting fresh", experiment, runs_dir)
        return ResumePoint(run_dir, None)
    log.info("ckpt_path=last: resuming %s in its run dir", previous[0])
    return ResumePoint(*previous)
