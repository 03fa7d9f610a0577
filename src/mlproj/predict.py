"""`python predict.py ckpt_path=PATH input=DIR_OR_FILE`: a CSV of top-k predictions per image."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from mlproj.entry import hydra_entry
from mlproj.inference.model import load_model
from mlproj.inference.tta import check_mode

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> Path:
    """Probabilities as served: calibrated by the checkpoint's temperature, averaged over the `tta` views."""
    trained = load_model(str(cfg.ckpt_path), exported=False)
    tta = check_mode(cfg.tta)

    import lightning as L
    import torch

    from mlproj.console import tidy_lightning_logging
    from mlproj.data.files import ImageFilesDataModule
    from mlproj.storage import write_csv

    tidy_lightning_logging()
    images = ImageFilesDataModule(str(cfg.input), "input", cfg.batch_size, cfg.num_workers).load()
    images.configure_preprocessing(trained.preprocessing)
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        precision=cfg.precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    with trained.serving(tta):  # its temperature and test-time augmentation, in the model's forward
        probabilities = torch.cat(trainer.predict(trained.module, datamodule=images))
    classes = trained.classes
    top_k = min(int(cfg.top_k), len(classes))
    top_probs, top_index = probabilities.topk(top_k, dim=1)

    output = Path(cfg.output) if cfg.output else Path(cfg.paths.output_dir) / "predictions.csv"
    header = [
        "path",
        "prediction",
        "probability",
        *(f"{kind}{k}" for k in range(1, top_k + 1) for kind in ("label", "prob")),
    ]
    rows = (
        [
            path,
            classes[index[0]],
            f"{probs[0]:.6f}",
            *(v for i, p in zip(index, probs, strict=True) for v in (classes[i], f"{p:.6f}")),
        ]
        for path, probs, index in zip(images.paths, top_probs.tolist(), top_index.tolist(), strict=True)
    )
    write_csv(output, header, rows)
    log.info("wrote %d predictions to %s", len(images.paths), output)
    return output


main = hydra_entry("predict", predict)

if __name__ == "__main__":
    main()
