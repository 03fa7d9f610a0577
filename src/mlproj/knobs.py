"""The knobs a user sets, each with what it accepts: one description that the Hydra tasks check before any work
(`check_config`), that the mlproj utilities parse their flags with (a Knob is an argparse type), and that the table
tests walk with bad values of each knob's kind.

A knob absent from a task's composed config is not checked there, so one table serves train, eval, predict, export
and prepare. Lightning's and timm's own arguments that are passed through untouched are checked by them.
"""

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mlproj.errors import ConfigError
from mlproj.storage import is_remote, local_path

MISSING = object()
# What a path must be. Inputs exist: a file, a folder, or either. Outputs can be made and written: the path is not a
# file (output: a folder) or not a folder (output_file), and its nearest existing ancestor is a folder this user may
# write in, so no regular file sits on the way (os.access also says no on a read-only file system).
PathRule = Literal["file", "folder", "file_or_folder", "output", "output_file"]
PATH_WANTED: dict[str, str] = {
    "file": "a path to an existing file",
    "folder": "a path to an existing folder",
    "file_or_folder": "a path to an existing file or folder",
    "output": "a path to a folder that can be written",
    "output_file": "a path to a file that can be written",
}


@dataclass(frozen=True)
class Knob:
    """`kind`: int, float, bool, str or Path; numbers within [low, high] (or strictly between them: `exclusive`);
    `choices` for names; `nullable`: null allowed; `path`: what the path must be (PathRule), `urls`: a URL
    (gs://...) is taken as given and checked where it is read or written; `unless(config, value)`: True where the
    path is not one to check (a keyword such as train's ckpt_path=last, or a folder its DataModule makes); `many`: a
    flag's comma-separated list of values. `meaning` ends the error line. A knob a task's config leaves `???` must
    be given on the command line.

    Called with a flag's text, a Knob is an argparse type: the value as `kind`, or the one-line reason it is not."""

    kind: type
    meaning: str
    low: float | None = None
    high: float | None = None
    exclusive: bool = False
    choices: tuple[str, ...] = ()
    nullable: bool = False
    path: PathRule | None = None
    urls: bool = False
    unless: Callable[[Any, Any], bool] | None = None
    many: bool = False

    def expectation(self, flag: bool = False) -> str:
        """What the knob takes, in words; a flag's value is never null (leaving the flag out is)."""
        if self.choices:
            wanted = "one of " + ", ".join(self.choices)
        elif self.path:
            wanted = PATH_WANTED[self.path] + (" or a URL" if self.urls else "")
        elif self.kind is bool:
            wanted = "true or false"
        else:
            wanted = {int: "an integer", float: "a number", str: "a string", Path: "a path"}[self.kind]
            if self.low is not None and self.high is not None:
                between = "strictly between {:g} and {:g}" if self.exclusive else "from {:g} to {:g}"
                wanted += " " + between.format(self.low, self.high)
            elif self.low is not None:
                wanted += f" {'>' if self.exclusive else '>='} {self.low:g}"
            elif self.high is not None:
                wanted += f" {'<' if self.exclusive else '<='} {self.high:g}"
        if self.many:
            wanted += " (several: comma-separated)"
        return wanted + (" or null" if self.nullable and not flag else "")

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
        if self.exclusive:
            return (self.low is None or value > self.low) and (self.high is None or value < self.high)
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def __call__(self, text: str) -> Any:
        """As an argparse type: the flag's text as `kind` (a tuple of them when `many`), or ArgumentTypeError with
        the value, what is wrong with it and the knob's meaning (mlproj.flags.FlagParser makes that one line).

        Only what the text says: a path is checked against the file system after the whole line parsed
        (mlproj.flags.check_paths), so a well-formed line parses wherever it is read."""
        values = []
        for item in [part.strip() for part in text.split(",")] if self.many else [text]:
            try:
                value = self.kind(item)
            except ValueError:
                value = None
            if value is None or not self.accepts(value):
                raise argparse.ArgumentTypeError(f"{item} is not {self.expectation(flag=True)}: {self.meaning}")
            values.append(value)
        return tuple(values) if self.many else values[0]


def path_problem(text: str, rule: PathRule, urls: bool = False) -> str | None:
    """Why the path `text` breaks `rule` ("does not exist", "is a file, not a folder"), or None. Relative paths are
    taken from the working directory, as the tasks (hydra.job.chdir=false) and the utilities take them."""
    if urls and is_remote(text):
        return None
    path = local_path(text).expanduser()
    if rule in ("file", "folder", "file_or_folder"):
        if not path.exists():
            return "does not exist"
        if rule == "file" and path.is_dir():
            return "is a folder, not a file"
        if rule == "folder" and not path.is_dir():
            return "is a file, not a folder"
        return None
    if rule == "output" and path.exists() and not path.is_dir():
        return "is a file, not a folder"
    if rule == "output_file" and path.is_dir():
        return "is a folder, not a file"
    path = path.absolute()
    nearest = next(folder for folder in (path, *path.parents) if folder.exists())
    if not nearest.is_dir():
        return f"cannot be written ({nearest} is a file)"
    if not os.access(nearest, os.W_OK):
        return f"cannot be written ({nearest} is not writable)"
    return None


def resume_keyword(cfg: Any, value: Any) -> bool:
    """train's ckpt_path=last: the newest checkpoint of the experiment, found by train (mlproj.resume)."""
    return value == "last" and select(cfg, "task") == "train"


# DataModules that write their own root when it is missing: the embedded digits.
ROOT_WRITERS = ("mlproj.data.digits.DigitsDataModule",)


def root_made_or_unread(cfg: Any, value: Any) -> bool:
    """A data root need not exist where its DataModule writes it (digits), downloads into it (CIFAR with
    data.download=true) or streams shards instead of reading it (data.shards)."""
    shards = select(cfg, "data.shards")
    return (
        select(cfg, "data._target_") in ROOT_WRITERS
        or select(cfg, "data.download") is True
        or (shards is not MISSING and shards is not None)
    )


# The utilities' --alpha (mlproj compare, mlproj drift).
SIGNIFICANCE = Knob(float, "the significance level, e.g. 0.05", low=0, high=1, exclusive=True)

KNOBS: dict[str, Knob] = {
    "seed": Knob(int, "the seed of Python, NumPy, torch and loader workers", low=0, nullable=True),
    "ckpt_path": Knob(
        str,
        "a .ckpt file or gs:// URL; train also takes last",
        nullable=True,
        path="file",
        urls=True,
        unless=resume_keyword,
    ),
    "paths.log_dir": Knob(str, "the folder run dirs go under (logs/TASK/runs/TIME)", path="output"),
    "paths.cache_dir": Knob(str, "the folder of prepared-data records (image checks, pixel cache)", path="output"),
    "paths.checkpoint_dir": Knob(str, "where checkpoints go: a folder or gs:// URL", path="output", urls=True),
    "data.root": Knob(
        str,
        "the folder of images: class folders, or train/ val/ [test/] of class folders (`dvc pull` fetches the"
        " shipped ones)",
        path="folder",
        unless=root_made_or_unread,
    ),
    "data.cache_dir": Knob(
        str, "where image checks and decoded pixels are kept (null: nowhere)", nullable=True, path="output"
    ),
    "data.batch_size": Knob(int, "images per device per step", low=1),
    "data.num_workers": Knob(int, "loader processes per device (0: load in the main process)", low=0),
    "data.image_size": Knob(int, "the model's input resolution (null: the backbone's)", low=8, nullable=True),
    "data.crop_pct": Knob(float, "share of the image the eval centre crop keeps", low=0.05, high=1, nullable=True),
    "data.val_fraction": Knob(float, "share of images held out for validation", low=0, high=1, exclusive=True),
    "data.test_fraction": Knob(float, "share of images held out for testing", low=0, high=1, exclusive=True),
    "data.cache_short_side": Knob(int, "the short side images are cached at (null: no cache)", low=8, nullable=True),
    "data.memory_mb": Knob(float, "the largest data set held in memory, in MB", low=0),
    "data.stream_cache_gb": Knob(float, "local disk for streamed chunks, in GB", low=0, exclusive=True),
    "data.shard_quality": Knob(int, "the JPEG quality shards are written with", low=1, high=100),
    "data.decode": Knob(str, "where shard JPEGs are decoded", choices=("auto", "workers", "device")),
    "data.augment.hflip": Knob(float, "the probability of a horizontal flip", low=0, high=1),
    "data.augment.vflip": Knob(float, "the probability of a vertical flip", low=0, high=1),
    "data.augment.re_prob": Knob(float, "the probability of random erasing", low=0, high=1),
    "data.augment.crop": Knob(str, "the training crop", choices=("random_resized", "pad"), nullable=True),
    "model.optimizer.lr": Knob(float, "the peak learning rate", low=0, exclusive=True),
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
    "input": Knob(str, "an image file or a folder of images", nullable=True, path="file_or_folder"),
    "output": Knob(
        str, "the predictions CSV (null: predictions.csv in the run dir)", nullable=True, path="output_file"
    ),
    "output_dir": Knob(str, "the folder the exported model and its card go to", path="output"),
    "overwrite": Knob(bool, "replace an earlier export in output_dir"),
}


def select(cfg: Any, key: str) -> Any:
    """The value at `key`, its interpolations resolved: MISSING when the config has no such key (or holds Hydra's
    run-time values before Hydra has set them: the run dir is Hydra's to make), "???" when it is left unset."""
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    try:
        return OmegaConf.select(cfg, key, default=MISSING, throw_on_missing=True)
    except MissingMandatoryValue:
        return "???"
    except InterpolationResolutionError as error:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return MISSING
        reason = str(error).splitlines()[0]
        raise ConfigError(f"{key} does not resolve ({reason}): fix its ${{...}} interpolation") from None


def refused(key: str, value: Any, problem: str) -> ConfigError:
    return ConfigError(f"{key}={'null' if value is None else value} {problem}: {KNOBS[key].meaning}")


def checked(key: str, value: Any) -> Any:
    """`value` if KNOBS[key] takes it, else the line check_config gives: the same check for code handed a knob's
    value outside a composed config (a DataModule made in a notebook, the shard writer)."""
    knob = KNOBS[key]
    if not knob.accepts(value):
        raise refused(key, value, f"is not {knob.expectation()}")
    return value


def check_config(cfg: Mapping[str, Any]) -> None:
    """Every knob the composed config holds, checked against KNOBS: the first bad one is a ConfigError."""
    for key, knob in KNOBS.items():
        value = select(cfg, key)
        if value is MISSING:
            continue
        if value == "???":
            raise ConfigError(f"{key} is required: give {key}=VALUE ({knob.meaning})")
        checked(key, value)
        if knob.path and value is not None and not (knob.unless and knob.unless(cfg, value)):
            problem = path_problem(str(value), knob.path, knob.urls)
            if problem is not None:
                raise refused(key, value, problem)
