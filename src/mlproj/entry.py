"""Wraps a Hydra task so configuration mistakes end as one line and exit status 2.

This module must stay light: `--help` and `--cfg job` import it and nothing heavier.
"""

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from mlproj.errors import find_config_error
from mlproj.run_record import discard_unused_run_dir

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def hydra_entry(config_name: str, task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
    """Build the `main()` of an entry point around `task`."""

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
    def main(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except Exception as error:
            config_error = find_config_error(error)
            if config_error is None:
                raise
            run_dir = Path(cfg.paths.output_dir)
            discard_unused_run_dir(run_dir)
            print(f"error: {config_error}", file=sys.stderr)
            sys.exit(2)

    return main
