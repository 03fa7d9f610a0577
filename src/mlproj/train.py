"""`python train.py [overrides]`: compose -> build -> fit -> test -> summary.json."""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from mlproj import __version__
from mlproj.build import build, build_datamodule, instantiate_group, resolve_preprocessing
from mlproj.checkpoints import check_classes_match, check_state_keys, checkpoint_classes, load_checkpoint
from mlproj.cloud.secrets import load_wandb_key
from mlproj.entry import hydra_entry
from mlproj.errors import ConfigError
from mlproj.resume import adopt_run_dir, mirror_dir, resolve_resume
from mlproj.run_record import run_name
from mlproj.stop_signals import StopSignals
from mlproj.storage import is_remote

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; return the metrics a sweep optimises."""
    load_wandb_key()  # on Vertex AI: the key named by WANDB_API_KEY_SECRET, from Secret Manager
    signals = StopSignals().install()  # SIGTERM/SIGINT from here on end the run cleanly
    runs_dir = Path(cfg.paths.log_dir).absolute() / "train" / "runs"
    run_dir = Path(cfg.paths.output_dir).absolute()
    resume = resolve_resume(cfg.ckpt_path, run_dir, checkpoint_dir(cfg), runs_dir, cfg.experiment)
    run_dir = continue_in(cfg, resume.run_dir)
    log.info("run %s in %s", run_name(run_dir), run_dir)  # the name `mlproj runs` and summary.json show

    import lightning as L

    from mlproj.console import tidy_lightning_logging
    from mlproj.evaluation import calibrate_best, rounded, run_test
    from mlproj.loggers import closing_loggers
    from mlproj.lr_finder import tune_learning_rate
    from mlproj.run_record import RunRecord

    tidy_lightning_logging()
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build_run(cfg)  # bad config fails here, before anything is written
    signals.trainer = trainer
    if resume.ckpt_path:
        checkpoint = resume.checkpoint or load_checkpoint(resume.ckpt_path)
        check_classes_match(checkpoint_classes(checkpoint, resume.ckpt_path), datamodule.classes, resume.ckpt_path)
        check_state_keys(model.state_dict(), checkpoint, resume.ckpt_path)

    record = RunRecord.start(
        run_dir, run_fields(cfg, datamodule, trainer, resume.ckpt_path), mirror=mirror_dir(run_dir, checkpoint_dir(cfg))
    )
    datamodule.write_manifest(run_dir / "manifest.csv")
    log_run_config(trainer, cfg, record.summary)
    with signals.ending_commands(), record.recording(trainer), closing_loggers():
        if cfg.tune_lr:
            record.summary["tuned_lr"] = tune_learning_rate(trainer, model, datamodule, run_dir)
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume.ckpt_path, weights_only=True)
        record.update_from(trainer)
        temperature = calibrate_best(trainer, datamodule) if cfg.calibrate and not trainer.interrupted else 1.0
        if cfg.test and not trainer.interrupted:
            best = best_checkpoint(trainer)
            record.metrics.update(run_test(trainer, model, datamodule, best, run_dir, temperature=temperature))
    if trainer.is_global_zero:
        log.info("run dir %s: %s", run_dir, rounded(record.metrics))
    return record.metrics


def build_run(cfg: DictConfig, extra_callbacks: Sequence[Any] = ()) -> tuple[Any, Any, Any]:
    """The objects one run trains: the data (prepared and checked), a model sized to it, and the trainer."""
    from mlproj.callbacks.checkpoint_metadata import CheckpointMetadata
    from mlproj.checkpoint_io import AtomicCheckpointIO
    from mlproj.cloud.cluster import cluster_plugins
    from mlproj.models.optim import check_schedule_length

    preprocessing = resolve_preprocessing(cfg.model.backbone, cfg.data)
    datamodule = build_datamodule(cfg.data, preprocessing)
    model = build(cfg.model, num_classes=datamodule.num_classes, class_names=datamodule.classes, _convert_="all")
    metadata = {
        "data": {**OmegaConf.to_container(cfg.data, resolve=True), "root": str(datamodule.root)},
        "preprocessing": preprocessing,  # what eval, predict, export and serve feed the model (mlproj.inference)
        "experiment": cfg.experiment,
        "version": __version__,
    }
    trainer = build(
        cfg.trainer,
        callbacks=[*instantiate_group(cfg.get("callbacks")), CheckpointMetadata(metadata), *extra_callbacks],
        logger=instantiate_group(cfg.get("logger")) or False,
        plugins=[AtomicCheckpointIO(), *cluster_plugins(cfg.trainer.num_nodes)],
    )
    check_schedule_length((cfg.model.get("scheduler") or {}).get("name", "none"), trainer.max_epochs, trainer.max_steps)
    return datamodule, model, trainer


def continue_in(cfg: DictConfig, run_dir: Path) -> Path:
    """Point every `${paths.output_dir}` at `run_dir` when resuming an earlier run in place."""
    fresh = Path(cfg.paths.output_dir)
    if run_dir != fresh:
        adopt_run_dir(fresh, run_dir)
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
    return run_dir


def checkpoint_dir(cfg: DictConfig) -> str:
    """paths.checkpoint_dir as an absolute local path or a URL (gs://...)."""
    configured = str(cfg.paths.checkpoint_dir)
    return configured if is_remote(configured) else str(Path(configured).absolute())


def best_checkpoint(trainer: Any) -> str | None:
    """The best checkpoint when one was kept (not under fast_dev_run or without callbacks), else the current weights."""
    callback = trainer.checkpoint_callback
    return "best" if callback is not None and getattr(callback, "best_model_path", "") else None


def run_fields(cfg: DictConfig, datamodule: Any, trainer: Any, resumed_from: str | None) -> dict[str, Any]:
    from mlproj.data_version import data_version

    shards = datamodule.shard_index  # streamed: the set's index pins every byte and records its data version
    return {
        "experiment": cfg.experiment,
        "backbone": cfg.model.backbone,
        "run_dir": str(Path(cfg.paths.output_dir).absolute()),
        "checkpoint_dir": checkpoint_dir(cfg),
        "batch_size": datamodule.batch_size * trainer.world_size * trainer.accumulate_grad_batches,
        "data_root": str(datamodule.root),
        "data_version": shards.data_version if shards else data_version(datamodule.root, Path(cfg.paths.cache_dir)),
        "shards": shards.url if shards else None,
        "shards_index": shards.digest if shards else None,
        "num_classes": datamodule.num_classes,
        "split_sizes": datamodule.split_sizes(),
        "test_split": datamodule.test_split,
        "resumed_from": resumed_from,
    }


def log_run_config(trainer: Any, cfg: DictConfig, summary: dict[str, Any]) -> None:
    """The resolved config plus the run's provenance, in every logger (W&B config, hparams.yaml, ...)."""
    config = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    keys = (
        "git_commit",
        "git_dirty",
        "data_root",
        "data_version",
        "shards",
        "shards_index",
        "batch_size",
        "test_split",
    )
    provenance = {k: summary[k] for k in keys}
    for logger in trainer.loggers:
        logger.log_hyperparams({**config, "run": provenance})


def train_for_sweeper(cfg: DictConfig) -> float | dict[str, float]:
    """`train`, returning the one number `optimized_metric` names when set: what a Hydra sweeper (Optuna) optimises."""
    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    if not name:
        return metrics
    if name not in metrics:
        raise ConfigError(f"optimized_metric={name} was not reported by this run: use one of {sorted(metrics)}")
    return metrics[name]


main = hydra_entry("train", train_for_sweeper)

if __name__ == "__main__":
    main()
