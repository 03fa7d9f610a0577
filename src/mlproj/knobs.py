"""The knobs a user sets on the command line, each with what it accepts: one description that the Hydra tasks check
before any work (`check_config`) and that the table test walks with bad values of each knob's kind.

A knob absent from a task's composed config is not checked there, so one table serves train, eval, predict, export
and prepare. Lightning's and timm's own arguments that are passed through untouched are checked by them.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlproj.errors import ConfigError

MISSING = object()


@dataclass(frozen=True)
class Knob:
    """`kind`: int, float, bool or str; numbers within [low, high]; `choices` for names; `nullable`: null allowed.
    `meaning` ends the error line. A knob a task's config leaves `???` must be given on the command line."""

    kind: type
    meaning: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False

    def expectation(self) -> str:
        if self.choices:
            wanted = "one of " + ", ".join(self.choices)
        elif self.kind is bool:
            wanted = "true or false"
        else:
            wanted = {int: "an integer", float: "a number", str: "a string"}[self.kind]
            if self.low is not None and self.high is not None:
                wanted += f" from {self.low:g} to {self.high:g}"
            elif self.low is not None:
                wanted += f" >= {self.low:g}"
        return wanted + (" or null" if self.nullable else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.kind is float:
            fits = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            fits = isinstance(value, self.kind) and not (self.kind is int and isinstance(value, bool))
        if not fits:
            return False
        if self.choices:
            return value in self.choices
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


KNOBS: dict[str, Knob] = {
    "seed": Knob(int, "the seed of Python, NumPy, torch and loader workers", low=0, nullable=True),
    "ckpt_path": Knob(str, "a .ckpt file or gs:// URL; train also takes last", nullable=True),
    "data.root": Knob(str, "the folder of images: class folders, or train/ val/ [test/] of class folders"),
    "data.batch_size": Knob(int, "images per device per step", low=1),
    "data.num_workers": Knob(int, "loader processes per device (0: load in the main process)", low=0),
    "data.image_size": Knob(int, "the model's input resolution (null: the backbone's)", low=8, nullable=True),
    "data.crop_pct": Knob(float, "share of the image the eval centre crop keeps", low=0.05, high=1, nullable=True),
    "data.val_fraction": Knob(float, "share of images held out for validation", low=0, high=0.9),
    "data.test_fraction": Knob(float, "share of images held out for testing", low=0, high=0.9),
    "data.cache_short_side": Knob(int, "the short side images are cached at (null: no cache)", low=8, nullable=True),
    "data.memory_mb": Knob(float, "the largest data set held in memory, in MB", low=0),
    "data.stream_cache_gb": Knob(float, "local disk for streamed chunks, in GB", low=0.001),
    "data.shard_quality": Knob(int, "the JPEG quality shards are written with", low=1, high=100),
    "data.decode": Knob(str, "where shard JPEGs are decoded", choices=("auto", "workers", "device")),
    "data.augment.hflip": Knob(float, "the probability of a horizontal flip", low=0, high=1),
    "data.augment.vflip": Knob(float, "the probability of a vertical flip", low=0, high=1),
    "data.augment.re_prob": Knob(float, "the probability of random erasing", low=0, high=1),
    "data.augment.crop": Knob(str, "the training crop", choices=("random_resized", "pad"), nullable=True),
    "model.optimizer.lr": Knob(float, "the peak learning rate", low=1e-12),
    "model.drop_rate": Knob(float, "dropout before the classifier", low=0, high=0.99),
    "model.label_smoothing": Knob(float, "label smoothing", low=0, high=0.99),
    "model.finetune": Knob(str, "which weights train", choices=("full", "linear_probe", "freeze_stages")),
    "model.freeze_stages": Knob(int, "backbone stages kept frozen", low=0),
    "model.unfreeze_at_epoch": Knob(int, "the epoch frozen layers start training", low=0, nullable=True),
    "trainer.max_epochs": Knob(int, "epochs to train (-1: until max_steps, max_time or a stop)", low=-1, nullable=True),
    "trainer.max_steps": Knob(int, "optimizer steps to train (-1: no limit)", low=-1),
    "trainer.accumulate_grad_batches": Knob(int, "batches per optimizer step", low=1),
    "trainer.num_nodes": Knob(int, "machines in the job", low=1),
    "callbacks.preemption.every_n_steps": Knob(int, "steps between last.ckpt saves (0: never)", low=0),
    "top_k": Knob(int, "classes listed per image", low=1),
    "batch_size": Knob(int, "images per forward pass", low=1),
    "num_workers": Knob(int, "loader processes (0: load in the main process)", low=0),
    "check_images": Knob(int, "images the exported model is checked on", low=0),
    "format": Knob(str, "the export format", choices=("onnx", "torchscript")),
    "calibrate": Knob(bool, "fit a temperature on the validation split and store it in the checkpoint"),
    "test": Knob(bool, "test the best checkpoint after fit"),
    "tune_lr": Knob(bool, "run the learning-rate finder first"),
    "tta": Knob(str, "test-time augmentation", choices=("flip", "flip_shift"), nullable=True),
    "input": Knob(str, "an image file or a folder of images", nullable=True),
}


def select(cfg: Any, key: str) -> Any:
    """The value at `key`: MISSING when the config has no such key, "???" when it is left unset."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    try:
        return OmegaConf.select(cfg, key, default=MISSING, throw_on_missing=True)
    except MissingMandatoryValue:
        return "???"


def check_config(cfg: Mapping[str, Any]) -> None:
    """Every knob the composed config holds, checked against KNOBS: the first bad one is a ConfigError."""
    for key, knob in KNOBS.items():
        value = select(cfg, key)
        if value is MISSING:
            continue
        if value == "???":
            raise ConfigError(f"{key} is required: give {key}=VALUE ({knob.meaning})")
        if not knob.accepts(value):
            raise ConfigError(f"{key}={value} is not {knob.expectation()}: {knob.meaning}")
