"""Hyperparameter search on this machine, no server: an Optuna study as Hydra's sweeper.

`python train.py -m hparams_search=mushroom_optuna` asks Optuna for a trial, runs it as an ordinary
Hydra job (its own run dir, summary.json, checkpoints) and tells Optuna the number `train.py` returned,
the metric `optimized_metric` names. It uses Optuna's own ask/tell API rather than
hydra-optuna-sweeper, which pins optuna<3 (and, for SQLite storage, sqlalchemy<2) on the whole
environment. The search space is written the way Hydra sweeps are: `interval(1e-4, 1e-2)`,
`tag(log, interval(...))`, `range(16, 65, step=16)`, `choice(a, b)` or `a,b`.

Hydra builds sweepers only from `hydra_plugins.*` names: `hydra_plugins/mlproj_optuna.py` registers
this class and `hydra/sweeper=mlproj_optuna`.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class OptunaSweeperConf:
    """`hydra.sweeper` under `hydra/sweeper=mlproj_optuna`; the hparams_search configs fill it in."""

    _target_: str = "hydra_plugins.mlproj_optuna.OptunaSweeper"
    direction: str = "maximize"
    n_trials: int = 20
    # Trials asked for and launched together; they run in parallel only with a parallel Hydra launcher.
    n_jobs: int = 1
    # Seeds Optuna's TPE sampler, so a search proposes the same trials again.
    seed: int | None = None
    study_name: str | None = None
    # null keeps the study in memory; e.g. sqlite:///optuna.db resumes it later or shares it between machines.
    storage: str | None = None
    # Config key -> Hydra sweep expression (a plain value fixes the key for every trial).
    params: dict[str, Any] = field(default_factory=dict)


class OptunaSweeper(Sweeper):
    """Runs `n_trials` Hydra jobs with the parameters Optuna's TPE sampler proposes."""

    def __init__(
        self,
        direction: str,
        n_trials: int,
        n_jobs: int,
        seed: int | None,
        study_name: str | None,
        storage: str | None,
        params: dict[str, Any],
    ) -> None:
        self.direction = direction
        self.n_trials = n_trials
        self.n_jobs = max(1, n_jobs)
        self.seed = seed
        self.study_name = study_name
        self.storage = storage
        self.params = dict(params or {})

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context  # validate_batch_is_legal composes through it
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        try:
            import optuna
        except ImportError as error:
            raise ImportError("hparams_search needs Optuna: pip install 'mlproj[search]'") from error

        parser = OverridesParser.create()
        configured = parser.parse_overrides([f"{key}={value}" for key, value in self.params.items()])
        # The command line wins over the config file, key by key.
        overrides = {o.key_or_group: o for o in [*configured, *parser.parse_overrides(arguments)]}
        space = {key: distribution(o) for key, o in overrides.items() if o.is_sweep_override()}
        fixed = [o.input_line for o in overrides.values() if not o.is_sweep_override()]
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=optuna.samplers.TPESampler(seed=self.seed),
            direction=self.direction,
            load_if_exists=self.study_name is not None,
        )
        results: list[JobReturn] = []
        while len(results) < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - len(results)))]
            batch = [(*fixed, *(f"{key}={trial.params[key]}" for key in space)) for trial in trials]
            self.validate_batch_is_legal(batch)
            returns = self.launcher.launch(batch, initial_job_idx=len(results))
            for trial, result in zip(trials, returns, strict=True):
                tell(study, trial, result)
            results.extend(returns)
        if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            raise RuntimeError(f"all {len(results)} trials failed") from job_error(results[0])
        self.report(study)
        return results

    def report(self, study: Any) -> None:
        """Log the best trial and keep it as optimization_results.yaml in the sweep dir."""
        best = {"name": study.study_name, "best_value": study.best_value, "best_params": study.best_params}
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(best), sweep_dir / "optimization_results.yaml")
        log.info("best of %d trials: %s", len(study.trials), best)


def distribution(override: Override) -> Any:
    """The Optuna distribution for a Hydra sweep expression."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    sweep = override.value()
    if isinstance(sweep, ChoiceSweep):
        return CategoricalDistribution(list(override.sweep_iterator()))
    if isinstance(sweep, RangeSweep):
        if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
            return IntDistribution(sweep.start, sweep.stop - 1, step=sweep.step)
        return CategoricalDistribution(list(override.sweep_iterator()))
    if isinstance(sweep, IntervalSweep):
        log_scale = "log" in sweep.tags
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):
            return IntDistribution(sweep.start, sweep.end, log=log_scale)
        return FloatDistribution(float(sweep.start), float(sweep.end), log=log_scale)
    raise ValueError(f"{override.input_line}: not a sweep Optuna can search (use interval, range or choice)")


def tell(study: Any, trial: Any, result: JobReturn) -> None:
    """Report a job's number to Optuna; a failed job (a diverged learning rate, say) fails only its trial."""
    from optuna.trial import TrialState

    if result.status != JobStatus.COMPLETED:
        log.warning("trial %d failed", trial.number, exc_info=job_error(result))
        study.tell(trial, state=TrialState.FAIL)
        return
    value = result.return_value
    if not isinstance(value, (int, float)):
        raise TypeError(f"the task returned {type(value).__name__}, not a number: set optimized_metric (e.g. val/acc)")
    study.tell(trial, float(value))


def job_error(result: JobReturn) -> BaseException | None:
    """The exception a failed Hydra job raised (Hydra keeps it where the return value would be)."""
    return result._return_value if result.status == JobStatus.FAILED else None
