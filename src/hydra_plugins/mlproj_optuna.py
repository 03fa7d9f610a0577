"""Makes mlproj's Optuna sweeper known to Hydra, which builds sweepers only from `hydra_plugins.*` classes.

Hydra imports every module here at start-up (`--help` too), so this stays light: Optuna is imported
only when a search runs.
"""

from hydra.core.config_store import ConfigStore

from mlproj import search


class OptunaSweeper(search.OptunaSweeper):
    """`mlproj.search.OptunaSweeper`, under the name Hydra accepts for a plugin."""


ConfigStore.instance().store(
    group="hydra/sweeper", name="mlproj_optuna", node=search.OptunaSweeperConf, provider="mlproj"
)
