"""Finding and reading checkpoints: `ckpt_path=last`, local paths and gs:// URLs alike."""

import logging
import os
import pickle
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlproj.errors import ConfigError
from mlproj.run_record import discard_unused_run_dir, read_summary

log = logging.getLogger(__name__)

LAST = "last.ckpt"


@dataclass(frozen=True)
class ResumePoint:
    run_dir: Path
    ckpt_path: str | None


def checkpoint_in(run_dir: str | Path) -> str | None:
    """`<run_dir>/checkpoints/last.ckpt` if it exists (any fsspec location)."""
    import fsspec

    path = f"{str(run_dir).rstrip('/')}/checkpoints/{LAST}"
    fs, local = fsspec.core.url_to_fs(path)
    return path if fs.exists(local) else None


def newest_run_with_checkpoint(runs_dir: Path, experiment: str | None) -> Path | None:
    """The most recently started run of `experiment` under `runs_dir` that left a last checkpoint."""
    if not runs_dir.is_dir():
        return None
    candidates = []
    for run_dir in runs_dir.iterdir():
        summary = read_summary(run_dir)
        if summary and summary.get("experiment") == experiment and (run_dir / "checkpoints" / LAST).is_file():
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
    if ckpt_path != "last":
        return ResumePoint(run_dir, ckpt_path)
    aip_dir = os.environ.get("AIP_CHECKPOINT_DIR")
    for current in filter(None, (aip_dir, run_dir)):
        found = checkpoint_in(current)
        if found:
            return ResumePoint(run_dir, found)
    previous = newest_run_with_checkpoint(runs_dir, experiment)
    if previous is None:
        log.warning("ckpt_path=last: no checkpoint of experiment %s under %s; starting fresh", experiment, runs_dir)
        return ResumePoint(run_dir, None)
    log.info("ckpt_path=last: resuming %s in its run dir", previous)
    return ResumePoint(previous, str(previous / "checkpoints" / LAST))


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
    hparams = checkpoint.get("hyper_parameters") or {}
    if "backbone" not in hparams or "state_dict" not in checkpoint:
        raise ConfigError(f"ckpt_path={path} was not written by mlproj's ImageClassifier (no backbone hyperparameters)")
    return list(hparams.get("class_names") or [])


def short_list(names: list[str]) -> str:
    return f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''} ({len(names)} classes)"


def check_classes_match(checkpoint_classes: list[str], data_classes: list[str], path: str) -> None:
    if checkpoint_classes and checkpoint_classes != list(data_classes):
        raise ConfigError(
            f"ckpt_path={path} was trained on {short_list(checkpoint_classes)} but the data has"
            f" {short_list(list(data_classes))}: use the data it was trained on (experiment=NAME or data.root=DIR)"
        )
