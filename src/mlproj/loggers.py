"""Experiment loggers that need more than a constructor: W&B offline fallback and run-id reuse."""

import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_run_id"


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
) -> Any:
    """A WandbLogger that resumes the run this run dir started, and goes offline instead of prompting."""
    from lightning.pytorch.loggers import WandbLogger

    run_path = Path(run_dir)
    id_file = run_path / RUN_ID_FILE
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        import wandb

        run_id = wandb.util.generate_id()
        run_path.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n")
    mode = os.environ.get("WANDB_MODE")
    offline = mode in ("offline", "dryrun")
    if mode is None and not wandb_key_configured():
        log.warning("W&B: no API key configured, logging offline to %s/wandb (sync later with `wandb sync`)", run_path)
        offline = True
    return WandbLogger(
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
