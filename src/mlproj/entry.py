"""Wraps a Hydra task so configuration mistakes end as one line and exit status 2 (mlproj.cli.one_line_errors),
leaving no run dir behind.

This module must stay light: `--help` and `--cfg job` import it and nothing heavier.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from mlproj.cli import one_line_errors
from mlproj.run_record import discard_unused_run_dir

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def hydra_entry(config_name: str, task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
    """Build the `main()` of an entry point around `task`."""

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
    def main(cfg: DictConfig) -> Any:
        # Inside the task: @hydra.main prints a traceback for whatever leaves it.
        with one_line_errors(cleanup=lambda: discard_unused_run_dir(Path(cfg.paths.output_dir))):
            return task(cfg)

    return main
