"""Loggers that survive a resume: CSV history kept, the same W&B run continued (offline without a key)."""

import csv
import logging
import netrc
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from mlproj.run_record import RUN_ID_FILE, run_name

log = logging.getLogger(__name__)


class AppendingWriter(ExperimentWriter):
    """Reads the existing header instead of deleting metrics.csv, so history survives a resume."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = list(csv.DictReader(handle).fieldnames or [])


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a resumed run appends to its metrics.csv."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def wandb_key_configured() -> bool:
    """An API key in the environment or in ~/.netrc (where `wandb login` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_logger(
    run_dir: str,
    project: str = "mlproj",
    entity: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    log_model: bool = False,
) -> WandbLogger:
    """A WandbLogger that resumes the run this run dir started, and goes offline instead of prompting."""
    run_path = Path(run_dir)
    id_file = run_path / RUN_ID_FILE
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = secrets.token_hex(4)
        run_path.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n")
    mode = os.environ.get("WANDB_MODE")
    offline = mode in ("offline", "dryrun")
    if mode is None and not wandb_key_configured():
        log.warning("W&B: no API key configured, logging offline to %s/wandb (sync later with `wandb sync`)", run_path)
        offline = True
    return WandbLogger(
        name=run_name(run_path),  # the name the run's first log line and `mlproj runs` show
        project=project,
        entity=entity,
        group=group,
        tags=list(tags or []),
        save_dir=str(run_path),
        id=run_id,
        resume="allow",
        offline=offline,
        log_model=log_model,
    )


@contextmanager
def closing_loggers() -> Iterator[None]:
    """End the W&B run however training ends, so the next run in this process (Hydra -m) starts its own."""
    try:
        yield
    finally:
        if "wandb" in sys.modules:
            import wandb

            if wandb.run is not None:
                wandb.finish()
