"""Wraps a Hydra task so configuration mistakes end as one line and exit status 2 (mlproj.cli.one_line_errors),
leaving no run dir behind.

This module must stay light: `--help` and `--cfg job` import it and nothing heavier.
"""

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mlproj.cli import one_line_errors
from mlproj.composition import CONFIG_DIR
from mlproj.knobs import check_config
from mlproj.run_record import discard_unused_run_dir, is_main_process, occupied


class RunDirGuard(Callback):
    """Stops a run before Hydra writes anything when `hydra.run.dir` holds another run (configs/hydra/default.yaml
    names it): a finished or failed run, another task's outputs, or files that are no run at all."""

    started: Path | None = None  # the run dir this process is about to make, once it is known to be free

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with one_line_errors():  # the knobs before Hydra makes anything: paths.log_dir may not be writable
            check_config(config)
        if not is_main_process():  # DDP children re-run the command in the run dir their parent started
            return
        run_dir = Path(config.hydra.run.dir).absolute()
        reason = occupied(run_dir, config.task, config.get("ckpt_path"))
        if reason is None:
            RunDirGuard.started = run_dir
            return
        resume = " or ckpt_path=last to resume it," if config.task == "train" else ""
        print(
            f"error: hydra.run.dir={run_dir} {reason}: give another hydra.run.dir,{resume} or leave hydra.run.dir"
            " out for a new run dir",
            file=sys.stderr,
        )
        raise SystemExit(2)


def discard_started_run_dir() -> None:
    if RunDirGuard.started is not None:
        discard_unused_run_dir(RunDirGuard.started)


def hydra_entry(config_name: str, task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
    """Build the `main()` of an entry point around `task`."""

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
    def run(cfg: DictConfig) -> Any:
        # Inside the task: @hydra.main prints a traceback for whatever leaves it.
        with one_line_errors(cleanup=lambda: discard_unused_run_dir(Path(cfg.paths.output_dir))):
            check_config(cfg)  # every knob the user can set, before any work
            return task(cfg)

    def main() -> Any:
        # Around Hydra too: a Ctrl+C while it sets the run dir up (logging, .hydra/) leaves no run dir behind.
        with one_line_errors(cleanup=discard_started_run_dir):
            return run()

    return main
