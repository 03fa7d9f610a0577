"""The package's configs, composed the way a Hydra task composes them, for commands that are not Hydra tasks.

`mlproj vertex submit` composes the job's config here before it prints or submits anything, so a config that would
not compose fails on the laptop in one line, not minutes into a paid cloud job. Hydra is imported only when asked.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlproj.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def compose(config_name: str, overrides: Sequence[str]) -> Any:
    """The composed config (a DictConfig), or a ConfigError naming what Hydra refused, in one line."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name=config_name):
            return hydra_compose(config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(
            f"the {config_name} config does not compose with {' '.join(overrides) or 'no overrides'}:"
            f" {hydra_reason(error)}"
        ) from None


def hydra_reason(error: BaseException) -> str:
    """Hydra's several-line message (and its cause's first line, where the reason often is) as one line."""
    text, _, options = str(error).split("Config search path:")[0].partition("Available options in")
    reason = " ".join(text.split())
    if options:
        reason += f" (one of: {', '.join(options.split(':', 1)[-1].split())})"
    cause = str(error.__cause__ or "").strip()
    return f"{reason} ({cause.splitlines()[0]})" if cause else reason
