"""Finding and reading checkpoints: `ckpt_path=last`, local paths and gs:// URLs alike."""

import logging
import os
import pickle
import shutil
import socket
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlproj import __version__
from mlproj.errors import ConfigError
from mlproj.run_record import discard_unused_run_dir, read_summary

log = logging.getLogger(__name__)

LAST = "last.ckpt"
PREVIOUS = "last.prev.ckpt"  # the last.ckpt before the newest one (see mlproj.checkpoint_io)


@dataclass(frozen=True)
class ResumePoint:
    run_dir: Path
    ckpt_path: str | None


def checkpoint_in(run_dir: str | Path) -> str | None:
    """The newest readable `<run_dir>/checkpoints/last.ckpt` (any fsspec location), or the one before it when a
    kill left the newest truncated or unreadable."""
    import fsspec

    for name in (LAST, PREVIOUS):
        path = f"{str(run_dir).rstrip('/')}/checkpoints/{name}"
        fs, local = fsspec.core.url_to_fs(path)
        if not fs.exists(local):
            continue
        try:
            load_checkpoint(path)
        except ConfigError as error:
            log.warning("%s; trying the checkpoint before it", error)
            continue
        return path
    return None


def interrupted_run(run_dir: Path) -> bool:
    """A run dir whose run was stopped (status interrupted) or died without saying so (running, process gone)."""
    summary = read_summary(run_dir) or {}
    if summary.get("status") == "interrupted":
        return True
    if summary.get("status") != "running":
        return False
    pid = int(summary.get("pid") or 0)
    if summary.get("host") != socket.gethostname() or pid <= 0 or pid == os.getpid():
        return True  # another machine, or a restarted container (which often gets the same pid, 1)
    try:
        os.kill(pid, 0)
    except OSError:
        return True
    return False


def newest_run_with_checkpoint(runs_dir: Path, experiment: str | None) -> Path | None:
    """The most recently started run of `experiment` under `runs_dir` that left a last checkpoint."""
    if not runs_dir.is_dir():
        return None
    candidates = []
    for run_dir in runs_dir.iterdir():
        summary = read_summary(run_dir)
        saved = any((run_dir / "checkpoints" / name).is_file() for name in (LAST, PREVIOUS))
        if summary and summary.get("experiment") == experiment and saved:
            candidates.append((summary.get("started_at") or "", run_dir))
    return max(candidates)[1] if candidates else None


def adopt_run_dir(fresh: Path, previous: Path) -> None:
    """Continue in `previous`: bring this invocation's resolved config along, drop the empty fresh dir."""
    if not fresh.is_dir():
        return
    if (fresh / ".hydra").is_dir():
        shutil.copytree(fresh / ".hydra", previous / ".hydra", dirs_exist_ok=True)
    discard_unused_run_dir(fresh)


def resolve_resume(ckpt_path: str | None, run_dir: Path, runs_dir: Path, experiment: str | None) -> ResumePoint:
    """Turn `ckpt_path` into a file to resume from and the run dir to continue in.

    `last` means the current run dir (hydra.run.dir, or AIP_CHECKPOINT_DIR on Vertex AI) first,
    then the newest run of the same experiment under logs/, whose run dir is then reused.
    """
    if ckpt_path is None:
        found = checkpoint_in(run_dir) if interrupted_run(run_dir) else None
        if found:
            log.warning("%s holds an interrupted run: resuming it from %s", run_dir, found)
        return ResumePoint(run_dir, found)
    if ckpt_path != "last":
        return ResumePoint(run_dir, ckpt_path)
    aip_dir = os.environ.get("AIP_CHECKPOINT_DIR")
    for current in filter(None, (aip_dir, run_dir)):
        found = checkpoint_in(current)
        if found:
            return ResumePoint(run_dir, found)
    previous = newest_run_with_checkpoint(runs_dir, experiment)
    found = checkpoint_in(previous) if previous is not None else None
    if found is None:
        log.warning("ckpt_path=last: no checkpoint of experiment %s under %s; starting fresh", experiment, runs_dir)
        return ResumePoint(run_dir, None)
    log.info("ckpt_path=last: resuming %s in its run dir", previous)
    return ResumePoint(previous, found)


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
