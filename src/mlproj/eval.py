"""`python eval.py [experiment=NAME] ckpt_path=PATH`: test a checkpoint with train.py's own test code.

The run dir gets the evaluation outputs (mlproj.evaluation.write_outputs): metrics.json, metrics.csv,
predictions.csv and figures/.
"""

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mlproj.build import build, build_datamodule, connect_preprocessing, instantiate_group
from mlproj.checkpoints import check_classes_match, checkpoint_classes, load_checkpoint
from mlproj.entry import hydra_entry
from mlproj.errors import ConfigError

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """The architecture comes from the checkpoint; the data from the command line or, failing that, the checkpoint."""
    ckpt_path = str(cfg.ckpt_path)
    checkpoint = load_checkpoint(ckpt_path)
    classes = checkpoint_classes(checkpoint, ckpt_path)
    data_config = cfg.get("data") or OmegaConf.create((checkpoint.get("mlproj") or {}).get("data"))
    if not data_config:
        raise ConfigError(
            f"ckpt_path={ckpt_path} carries no data config: add experiment=NAME or data=NAME data.root=DIR"
        )

    import lightning as L

    from mlproj.console import tidy_lightning_logging
    from mlproj.evaluation import run_test
    from mlproj.models.classifier import ImageClassifier

    tidy_lightning_logging()
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(data_config)
    check_classes_match(classes, datamodule.classes, ckpt_path)
    model = ImageClassifier.from_checkpoint(checkpoint, ckpt_path)
    connect_preprocessing(datamodule, model)
    trainer = build(cfg.trainer, logger=instantiate_group(cfg.get("logger")) or False)
    metrics = run_test(trainer, model, datamodule, None, Path(cfg.paths.output_dir), weights_from=ckpt_path)
    log.info("%s on %s split: %s", ckpt_path, datamodule.test_split, {k: round(v, 4) for k, v in metrics.items()})
    return metrics


main = hydra_entry("eval", evaluate)

if __name__ == "__main__":
    main()
