"""Local hyperparameter search: `python train.py hparams_search=...` runs an Optuna study as Hydra's sweeper."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, read_summary, run_cli


def test_search_space_reads_hydra_sweep_syntax() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from mlproj.search import distribution

    parse = OverridesParser.create().parse_override
    assert distribution(parse("lr=tag(log, interval(1e-4, 1e-2))")) == FloatDistribution(1e-4, 1e-2, log=True)
    assert distribution(parse("smoothing=interval(0.0, 0.2)")) == FloatDistribution(0.0, 0.2)
    assert distribution(parse("batch=choice(16, 32, 64)")) == CategoricalDistribution([16, 32, 64])
    assert distribution(parse("opt=adamw,sgd")) == CategoricalDistribution(["adamw", "sgd"])
    assert distribution(parse("epochs=range(10, 31, step=10)")) == IntDistribution(10, 30, step=10)


def test_help_lists_the_searches_without_importing_optuna() -> None:
    code = (
        "import sys; sys.argv = ['train.py', '--help']\n"
        "from mlproj.train import main\n"
        "try:\n    main()\nfinally:\n    print('optuna imported:', 'optuna' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "hparams_search: digits_optuna, mushroom_optuna" in result.stdout
    assert "optuna imported: False" in result.stdout


@pytest.mark.slow
def test_optuna_search_runs_trials_and_keeps_the_best(tmp_path: Path, digits_root: Path) -> None:
    sweep_dir = tmp_path / "search"
    tiny = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "test=false"]
    where = [f"data.root={digits_root}", f"paths.cache_dir={tmp_path / '.cache'}", f"hydra.sweep.dir={sweep_dir}"]
    result = run_cli("train", ["hparams_search=digits_optuna", "hydra.sweeper.n_trials=3", *tiny, *where], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    trials = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in trials] == ["0", "1", "2"]
    learning_rates, scores = [], []
    for trial in trials:
        summary = read_summary(trial)
        assert summary["status"] == "finished" and summary["epochs_completed"] == 1
        overrides = dict(o.split("=", 1) for o in yaml.safe_load((trial / ".hydra" / "overrides.yaml").read_text()))
        assert 3e-4 <= float(overrides["model.optimizer.lr"]) <= 1e-2  # from digits_optuna's search space
        learning_rates.append(float(overrides["model.optimizer.lr"]))
        scores.append(summary["metrics"]["val/acc_best"])
    assert len(set(learning_rates)) == 3  # Optuna proposed three different trials

    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(scores))  # what train.py returned: optimized_metric
    assert best["best_params"]["model.optimizer.lr"] == pytest.approx(learning_rates[scores.index(max(scores))])
