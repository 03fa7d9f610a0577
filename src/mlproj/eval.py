"""`python eval.py [experiment=NAME] ckpt_path=PATH`: test a checkpoint with train.py's own test code.

The run dir gets the evaluation outputs (mlproj.evaluation.write_outputs): metrics.json, metrics.csv,
predictions.csv and figures/.
"""

import logging
from pathlib import Path

from omegaconf import DictConfig

from mlproj.build import build, build_datamodule, instantiate_group
from mlproj.entry import hydra_entry
from mlproj.errors import ConfigError
from mlproj.inference.model import load_model

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """The architecture and preprocessing come from the checkpoint; the data from the command line or, failing
    that, the checkpoint."""
    ckpt_path = str(cfg.ckpt_path)
    trained = load_model(ckpt_path, exported=False)
    data = cfg.get("data") or trained.trained_on
    if not data:
        raise ConfigError(
            f"ckpt_path={ckpt_path} carries no data config: add experiment=NAME or data=NAME data.root=DIR"
        )

    import lightning as L

    from mlproj.console import tidy_lightning_logging
    from mlproj.evaluation import run_test

    tidy_lightning_logging()
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(data, trained.preprocessing)
    trained.check_classes(datamodule.classes)
    trainer = build(cfg.trainer, logger=instantiate_group(cfg.get("logger")) or False)
    metrics = run_test(trainer, trained.module, datamodule, None, Path(cfg.paths.output_dir), weights_from=ckpt_path)
    log.info("%s on %s split: %s", ckpt_path, datamodule.test_split, {k: round(v, 4) for k, v in metrics.items()})
    return metrics


main = hydra_entry("eval", evaluate)

if __name__ == "__main__":
    main()
