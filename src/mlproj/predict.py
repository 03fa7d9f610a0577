"""`python predict.py ckpt_path=PATH input=DIR_OR_FILE`: a CSV of top-k predictions per image."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from mlproj.checkpoints import checkpoint_classes, load_checkpoint
from mlproj.data.scan import IMAGE_EXTENSIONS, list_images
from mlproj.data.splits import write_csv
from mlproj.entry import hydra_entry
from mlproj.errors import ConfigError

log = logging.getLogger(__name__)


def input_images(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ConfigError(f"input={path} is not an image file ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return [path]
    if not path.is_dir():
        raise ConfigError(f"input={path} does not exist: give an image file or a folder of images")
    images = list_images(path)
    if not images:
        raise ConfigError(f"input={path} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return images


def predict(cfg: DictConfig) -> Path:
    ckpt_path = str(cfg.ckpt_path)
    checkpoint = load_checkpoint(ckpt_path)
    classes = checkpoint_classes(checkpoint, ckpt_path) or [
        str(i) for i in range(checkpoint["hyper_parameters"]["num_classes"])
    ]
    images = input_images(Path(cfg.input).expanduser())
    top_k = min(int(cfg.top_k), len(classes))

    import lightning as L
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from mlproj.console import tidy_lightning_logging
    from mlproj.data.datamodule import ImageDataset
    from mlproj.data.samples import Samples
    from mlproj.data.transforms import build_batch_transform, build_transform
    from mlproj.data.validate import check_images
    from mlproj.models.classifier import ImageClassifier

    tidy_lightning_logging()
    checks = check_images([str(p) for p in images])
    for check in checks:
        if check.error:
            log.warning("rejected %s: %s", check.path, check.error)
    images = [Path(check.path) for check in checks if check.error is None]
    if not images:
        raise ConfigError(f"input={cfg.input} holds no image that decodes")
    model = ImageClassifier.from_checkpoint(checkpoint, ckpt_path)
    model.eval_batch_transform = build_batch_transform(model.data_config, None, crop_here=False)
    samples = Samples(labels=np.zeros(len(images), dtype=np.int64), paths=np.asarray([str(p) for p in images]))
    loader = DataLoader(
        ImageDataset(samples, build_transform(model.data_config)),
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
    )
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        precision=cfg.precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    probabilities = torch.cat(trainer.predict(model, loader))
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
            str(path),
            classes[index[0]],
            f"{probs[0]:.6f}",
            *(v for i, p in zip(index, probs, strict=True) for v in (classes[i], f"{p:.6f}")),
        ]
        for path, probs, index in zip(images, top_probs.tolist(), top_index.tolist(), strict=True)
    )
    write_csv(output, header, rows)
    log.info("wrote %d predictions to %s", len(images), output)
    return output


main = hydra_entry("predict", predict)

if __name__ == "__main__":
    main()
