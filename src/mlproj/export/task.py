"""`mlproj export ckpt_path=PATH format=torchscript|onnx [input=DIR] [quantize=true]`: export, then check it.

The exported model is run on real images (the test split of the checkpoint's own data, or `input=`) next to the
PyTorch model; the largest logit difference is reported and recorded in the model card, and an export that
disagrees by more than TOLERANCE fails. With `quantize=true` an int8 copy is written too (ONNX: static, calibrated
on the same images; TorchScript: dynamic), and its top-1 accuracy and speed are measured against float32 on the test
split.
"""

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from mlproj.entry import hydra_entry
from mlproj.errors import ConfigError
from mlproj.evaluation import preprocessed
from mlproj.export.formats import write_model, write_quantized
from mlproj.inference.model import TrainedModel, load_model
from mlproj.inference.runtimes import SUFFIXES, Logits, load_logits

log = logging.getLogger(__name__)

TOLERANCE = 1e-4  # largest absolute logit difference from PyTorch accepted in float32 (ONNX Runtime on CPU)
Batch = tuple[torch.Tensor, torch.Tensor | None]  # normalised images, labels when known


class ExportMismatchError(RuntimeError):
    """The exported model does not compute what the checkpoint computes: an exporter bug, not a user mistake."""


def split_batches(cfg: DictConfig, trained: TrainedModel) -> Iterator[Batch]:
    """The checkpoint's test split (val when it has none)."""
    from mlproj.build import build_datamodule

    data = trained.trained_on
    if not data:
        raise ConfigError(f"ckpt_path={cfg.ckpt_path} carries no data config: give input=DIR of images to check on")
    datamodule = build_datamodule({**data, "batch_size": cfg.batch_size}, trained.preprocessing)
    trained.check_classes(datamodule.classes)
    yield from preprocessed(datamodule, datamodule.test_dataloader())


def input_batches(cfg: DictConfig, trained: TrainedModel) -> Iterator[Batch]:
    """The images of `input=` (a file or folder, as `predict.py` takes it), without labels."""
    from mlproj.data.files import ImageFilesDataModule

    datamodule = ImageFilesDataModule(str(cfg.input), "input", cfg.batch_size, num_workers=0).load()
    datamodule.configure_preprocessing(trained.preprocessing)
    for images, _ in preprocessed(datamodule, datamodule.predict_dataloader()):
        yield images, None


def take(batches: Iterator[Batch], limit: int) -> list[Batch]:
    taken, count = [], 0
    for images, labels in batches:
        if count >= limit:
            break
        taken.append((images[: limit - count], None if labels is None else labels[: limit - count]))
        count += len(taken[-1][0])
    return taken


def run_all(logits: Logits, batches: list[Batch]) -> torch.Tensor:
    return torch.cat([logits(images).float() for images, _ in batches])


def compare_quantized(float_path: Path, int8_path: Path, batches: Iterator[Batch]) -> dict[str, Any]:
    """Top-1 accuracy and images/s of the int8 model against the float32 one, both in the exported runtime.

    Batch by batch, each model timed on the same batch after one untimed warm-up call.
    """
    runtimes = {"float32": load_logits(str(float_path)), "int8": load_logits(str(int8_path))}
    correct = dict.fromkeys(runtimes, 0)
    seconds = dict.fromkeys(runtimes, 0.0)
    images = agree = 0
    for number, (batch, labels) in enumerate(batches):
        top1 = {}
        for name, logits in runtimes.items():
            if number == 0:
                logits(batch)  # warm-up: first calls allocate and pick kernels
            start = time.perf_counter()
            top1[name] = logits(batch).argmax(1)
            seconds[name] += time.perf_counter() - start
            correct[name] += int((top1[name] == labels).sum())
        agree += int((top1["float32"] == top1["int8"]).sum())
        images += len(labels)
    return {
        "images": images,
        **{f"{name}_accuracy": correct[name] / images for name in runtimes},
        "top1_agreement": agree / images,
        **{f"{name}_images_per_s": round(images / max(seconds[name], 1e-9), 1) for name in runtimes},
    }


def model_files(output_dir: Path, suffix: str) -> list[Path]:
    """The files an export writes there: the model, its int8 copy, and the card beside each."""
    models = [output_dir / f"model{suffix}", output_dir / f"model.int8{suffix}"]
    return [*models, *(model.with_name(model.name + ".json") for model in models)]


def check_not_overwriting(cfg: DictConfig) -> None:
    """An earlier export in output_dir is kept unless overwrite=true: its card and model belong together."""
    found = [path.name for path in model_files(Path(cfg.output_dir), SUFFIXES[cfg.format]) if path.exists()]
    if found and not cfg.overwrite:
        raise ConfigError(
            f"output_dir={cfg.output_dir} already holds {', '.join(found)} (an earlier export): give another"
            " output_dir, or overwrite=true to replace them"
        )


def export(cfg: DictConfig) -> Path:
    """Write the model and its card; return the model's path."""
    if cfg.format not in SUFFIXES:
        raise ConfigError(f"format={cfg.format} is not an export format: use {' or '.join(SUFFIXES)}")
    check_not_overwriting(cfg)
    from mlproj.console import tidy_lightning_logging

    trained = load_model(str(cfg.ckpt_path), exported=False)
    tidy_lightning_logging()
    torch.manual_seed(cfg.seed)
    model, card = trained.module, trained.card
    if cfg.input is None:
        source = "the test split of the checkpoint's data"
        check_batches = take(split_batches(cfg, trained), cfg.check_images)
    else:
        source, check_batches = f"input={cfg.input}", take(input_batches(cfg, trained), cfg.check_images)
    example = check_batches[0][0]
    example = example if len(example) > 1 else torch.cat([example, example])  # a batch axis that can vary

    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"model{SUFFIXES[cfg.format]}"
    write_model(model.backbone, example, path, cfg.format)
    with torch.inference_mode():
        reference = run_all(trained.logits, check_batches)
    exported = run_all(load_logits(str(path)), check_batches)
    difference = (reference - exported).abs().max().item()
    ok = difference <= TOLERANCE
    check = {"on": source, "images": len(reference), "max_abs_logit_diff": difference, "tolerance": TOLERANCE}
    card.with_export(cfg.format).with_check({**check, "ok": ok}).write(path)
    log.info(
        "%s: %s vs PyTorch on %d images of %s: max |logit difference| %.2e (tolerance %.0e): %s",
        path,
        cfg.format,
        len(reference),
        source,
        difference,
        TOLERANCE,
        "ok" if ok else "MISMATCH",
    )
    if not ok:
        raise ExportMismatchError(f"{path} differs from the checkpoint by {difference:.2e} > {TOLERANCE:.0e}")

    if cfg.quantize:
        int8_path = output_dir / f"model.int8{SUFFIXES[cfg.format]}"
        calibration = [images for images, _ in check_batches]
        method = write_quantized(model.backbone, example, path, int8_path, cfg.format, calibration)
        comparison = compare_quantized(path, int8_path, split_batches(cfg, trained))
        card.with_export(cfg.format, method).with_check({"on": "test split", **comparison}).write(int8_path)
        log.info(
            "%s: %s on %d test images: top-1 %.4f (float32 %.4f), agreement %.4f, %.0f images/s (float32 %.0f)",
            int8_path,
            method,
            comparison["images"],
            comparison["int8_accuracy"],
            comparison["float32_accuracy"],
            comparison["top1_agreement"],
            comparison["int8_images_per_s"],
            comparison["float32_images_per_s"],
        )
    return path


main = hydra_entry("export", export)

if __name__ == "__main__":
    main()
