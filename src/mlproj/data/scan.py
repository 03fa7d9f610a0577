"""Finding images in class folders, and the early checks that fail with one line."""

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlproj.data.samples import Samples
from mlproj.data.validate import ImageCheck, drop_undecodable
from mlproj.errors import ConfigError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


def is_hidden(name: str) -> bool:
    """Dotfiles, macOS `._name` resource forks and `.DS_Store` are never images."""
    return name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted, hidden files and folders skipped."""
    found: list[Path] = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        found.extend(
            Path(current) / f for f in sorted(files) if not is_hidden(f) and Path(f).suffix.lower() in IMAGE_EXTENSIONS
        )
    return found


def class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name))


def is_presplit(root: Path) -> bool:
    """`train/` with `val/` and/or `test/` folders of class folders, rather than class folders directly."""
    return (root / "train").is_dir() and ((root / "val").is_dir() or (root / "test").is_dir())


def check_root(root: Path, key: str = "data.root") -> None:
    if not root.is_dir():
        raise ConfigError(
            f"{key}={root} does not exist or is not a folder: point {key} at a folder of class folders"
            " (or train/ and val/ folders of class folders), or run `dvc pull`"
        )


@dataclass(frozen=True)
class Validation:
    """Whether to decode every file first, and where the checks of unchanged file lists are kept."""

    enabled: bool = False
    cache_dir: Path | None = None


@dataclass(frozen=True)
class Scan:
    samples: Samples
    classes: list[str]
    checks: dict[str, ImageCheck] = field(default_factory=dict)
    checks_reused: bool = False


def scan_class_folders(
    folder: Path, key: str = "data.root", validation: Validation = Validation(), classes: list[str] | None = None
) -> Scan:
    """Images and labels of `folder/<class>/**`; `classes` fixes the label order (val/test follow train).

    With validation, files that do not decode are rejected by path first. Class folders left without
    images are skipped with a warning; fewer than two classes with images fail.
    """
    check_root(folder, key)
    per_class: dict[str, list[str]] = {d.name: [str(p) for p in list_images(d)] for d in class_folders(folder)}
    checks, reused = drop_undecodable(per_class, validation.cache_dir) if validation.enabled else ({}, False)
    for name in [name for name, images in per_class.items() if not images]:
        kind = "decodable " if validation.enabled else ""
        log.warning("skipping class folder %s: it holds no %simages", folder / name, kind)
        del per_class[name]
    if classes is None:
        classes = sorted(per_class)
        if len(classes) < 2:
            raise ConfigError(
                f"{key}={folder} has {len(classes)} class folder(s) with images ({', '.join(classes) or 'none'}):"
                " a classifier needs at least 2, as <root>/<class>/<image>"
            )
    if not per_class:
        raise ConfigError(f"{key}={folder} holds no images: put images in <class>/ folders there")
    unknown = sorted(set(per_class) - set(classes))
    if unknown:
        raise ConfigError(
            f"{key}={folder} has class folders the training split lacks: {', '.join(unknown)};"
            " every class of val/ and test/ must also be in train/"
        )
    index = {name: i for i, name in enumerate(classes)}
    paths = [p for name in sorted(per_class) for p in per_class[name]]
    labels = [index[name] for name in sorted(per_class) for _ in per_class[name]]
    samples = Samples(labels=np.asarray(labels, dtype=np.int64), paths=np.asarray(paths, dtype=np.str_))
    return Scan(samples, classes, checks, reused)
