"""Finding and reading checkpoints: `ckpt_path=last`, local paths and gs:// URLs alike."""

import logging
import pickle
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlproj import __version__
from mlproj.errors import ConfigError
from mlproj.run_record import RUN_ID_FILE, discard_unused_run_dir, read_summary, run_process_alive
from mlproj.storage import read_text

log = logging.getLogger(__name__)

LAST = "last.ckpt"
PREVIOUS = "last.prev.ckpt"  # the last.ckpt before the newest one (see mlproj.checkpoint_io)


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


def checkpoint_in(checkpoint_dir: str) -> tuple[str, dict[str, Any]] | None:
    """The newest readable `last.ckpt` in `checkpoint_dir` (any fsspec location) with its contents, or the one
    before it when a kill left the newest truncated or unreadable."""
    import fsspec

    for name in (LAST, PREVIOUS):
        path = f"{checkpoint_dir.rstrip('/')}/{name}"
        fs, local = fsspec.core.url_to_fs(path)
        if not fs.exists(local):
            continue
        try:
            return path, load_checkpoint(path)
        except ConfigError as error:
            log.warning("%s; trying the checkpoint before it", error)
    return None


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


def load_checkpoint(path: str) -> dict[str, Any]:
    """Read a checkpoint safely (weights_only) from a path or URL; one-line errors for the usual mistakes."""
    import fsspec
    import torch
    from fsspec.implementations.local import LocalFileSystem

    try:
        fs, local = fsspec.core.url_to_fs(path)
        if isinstance(fs, LocalFileSystem):  # memory-mapped: checking class names costs no full read
            return torch.load(local, map_location="cpu", weights_only=True, mmap=True)
        with fs.open(local, "rb") as handle:
            return torch.load(handle, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise ConfigError(
            f"ckpt_path={path} does not exist: give a .ckpt file from a run's checkpoints/ folder"
        ) from error
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise ConfigError(f"ckpt_path={path} is not a readable checkpoint ({str(error).splitlines()[0]})") from error


def checkpoint_classes(checkpoint: dict[str, Any], path: str) -> list[str]:
    """Its class names, once it is known to be an mlproj checkpoint of this version."""
    hparams = checkpoint.get("hyper_parameters") or {}
    if "backbone" not in hparams or "state_dict" not in checkpoint:
        raise ConfigError(f"ckpt_path={path} was not written by mlproj's ImageClassifier (no backbone hyperparameters)")
    written_by = (checkpoint.get("mlproj") or {}).get("version")
    if written_by is not None and written_by != __version__:
        raise ConfigError(
            f"ckpt_path={path} was written by mlproj {written_by}, this is {__version__}:"
            f" use mlproj {written_by} (git checkout its commit) or train again"
        )
    return list(hparams.get("class_names") or [])


def check_state_keys(expected: dict[str, Any], checkpoint: dict[str, Any], path: str) -> None:
    """The checkpoint's weights fit the model built now, or one line naming what is missing or extra."""
    have = set(checkpoint["state_dict"])
    missing, extra = sorted(set(expected) - have), sorted(have - set(expected))
    if missing or extra:
        raise ConfigError(
            f"ckpt_path={path} does not fit this model: {len(missing)} missing ({', '.join(missing[:3])}),"
            f" {len(extra)} unexpected ({', '.join(extra[:3])}) weights: resume with the model config it was"
            " trained with, or start fresh"
        )


def short_list(names: list[str]) -> str:
    return f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''} ({len(names)} classes)"


def check_classes_match(checkpoint_classes: list[str], data_classes: list[str], path: str) -> None:
    if checkpoint_classes and checkpoint_classes != list(data_classes):
        raise ConfigError(
            f"ckpt_path={path} was trained on {short_list(checkpoint_classes)} but the data has"
            f" {short_list(list(data_classes))}: use the data it was trained on (experiment=NAME or data.root=DIR)"
        )
