"""`python eval.py [experiment=NAME] ckpt_path=PATH [calibrate=true] [tta=flip]`: test a checkpoint with train.py's
own test code, as served (its temperature, test-time augmentation if asked).

The run dir gets the evaluation outputs (mlproj.evaluation.write_outputs): metrics.json, metrics.csv,
predictions.csv and figures/. `calibrate=true` first fits a temperature on the validation split and stores it in
the checkpoint.
"""

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mlproj.build import build, build_datamodule, instantiate_group
from mlproj.entry import hydra_entry
from mlproj.errors import ConfigError
from mlproj.inference.model import load_model
from mlproj.inference.tta import check_mode

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
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
    from mlproj.evaluation import calibrate, rounded, run_test

    tta = check_mode(cfg.tta)
    tidy_lightning_logging()
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(data, trained.preprocessing)
    trained.check_classes(datamodule.classes)
    trainer = build(cfg.trainer, logger=instantiate_group(cfg.get("logger")) or False)
    if cfg.calibrate and trainer.world_size > 1:
        raise ConfigError(f"calibrate=true fits on one device, not {trainer.world_size}: add trainer.devices=1")
    temperature = trained.temperature
    if cfg.calibrate:
        temperature = calibrate(trained, datamodule, trainer.strategy.root_device)
    output_dir = Path(cfg.paths.output_dir)
    metrics = run_test(
        trainer, trained.module, datamodule, None, output_dir, weights_from=ckpt_path, temperature=temperature, tta=tta
    )
    log.info("%s on %s split: %s", ckpt_path, datamodule.test_split, rounded(metrics))
    return metrics


main = hydra_entry("eval", evaluate)

if __name__ == "__main__":
    main()
