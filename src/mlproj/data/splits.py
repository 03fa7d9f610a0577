"""Stratified, seeded splits and the manifest that records them."""

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mlproj.data.samples import Samples
from mlproj.errors import ConfigError
from mlproj.storage import write_csv


def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Indices per split: each class is shuffled with `seed` and cut by `fractions`; train keeps the rest.

    Every class keeps at least one training image, so tiny classes still train.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], **{name: [] for name in fractions}}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for name, fraction in fractions.items():
            take = min(round(fraction * len(members)), len(members) - start - 1)
            take = max(take, 0)
            parts[name].append(members[start : start + take])
            start += take
        parts["train"].append(members[start:])
    split = {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}
    for name, fraction in fractions.items():
        if len(split[name]) == 0:
            raise ConfigError(
                f"data.{name}_fraction={fraction} leaves the {name} split empty ({len(labels)} images in"
                f" {len(np.unique(labels))} classes): raise it, or add images"
            )
    return split


def relative_to(path: str, root: Path | None) -> str:
    return str(Path(path).relative_to(root)) if root is not None and Path(path).is_relative_to(root) else path


def write_manifest(
    path: Path, splits: dict[str, Samples], classes: list[str], root: Path | None, checks: dict[str, Any] | None = None
) -> None:
    """One row per image: where it came from, its class, the split it was used in, and its size when checked."""
    checks = checks or {}

    def rows() -> Iterator[list[Any]]:
        for split, samples in splits.items():
            for i, label in enumerate(samples.labels):
                source = samples.describe(i)
                check = checks.get(source)
                if check is not None:
                    sizes = [check.width, check.height, check.size]
                elif samples.paths is None:  # in-memory pixels are the original images
                    height, width = samples.pixels[i].shape[:2]
                    sizes = [width, height, ""]
                else:
                    sizes = ["", "", ""]
                yield [relative_to(source, root if samples.paths is not None else None), classes[label], split, *sizes]

    write_csv(path, ["path", "label", "split", "width", "height", "bytes"], rows())


def write_rejected(path: Path, rejected: Iterable[Any], root: Path | None) -> None:
    write_csv(path, ["path", "reason"], ([relative_to(c.path, root), c.error] for c in rejected))
