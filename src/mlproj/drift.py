"""`mlproj drift --reference RUN_DIR --images DIR`: have new images moved away from a run's training data?

Two views of the same images. What the model sees: its pooled backbone features (the checkpoint's evaluation
preprocessing), compared by a kernel two-sample test, the maximum mean discrepancy (MMD, Gretton et al. 2012) with a
Gaussian kernel and a permutation p-value. What a person would check: brightness, contrast, channel means, sharpness
and size per image, each compared by a two-sample Kolmogorov-Smirnov test. A darkened camera moves both; a blur the
model's input size hides moves only sharpness. So the verdict is Bonferroni over all nine tests: drift when any
adjusted p-value is below alpha, valid however the tests depend on each other. Drift is a finding, not an error:
the exit status is 0 either way unless --fail-on-drift asks for 1.
"""

import argparse
import csv
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mlproj.checkpoints import checkpoint_in
from mlproj.data.scan import IMAGE_EXTENSIONS, list_images
from mlproj.errors import ConfigError
from mlproj.flags import FlagParser, check_paths
from mlproj.knobs import SIGNIFICANCE, Knob
from mlproj.run_record import read_summary
from mlproj.storage import is_remote

log = logging.getLogger(__name__)

PERMUTATIONS = 1000  # the smallest possible p-value is 1 / (PERMUTATIONS + 1)
MIN_IMAGES = 10  # per side: fewer make any two-sample test meaningless
STATS_SHORT_SIDE = 256  # statistics are measured at one resolution, so sharpness compares across image sizes
STATISTICS = ("brightness", "contrast", "red", "green", "blue", "sharpness", "width", "height")
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 weights: brightness as people see it


@dataclass(frozen=True)
class Measured:
    """Per image: the backbone's pooled features and the image statistics (columns in STATISTICS order)."""

    features: np.ndarray
    statistics: np.ndarray


def pixel_statistics(pixels: np.ndarray) -> np.ndarray:
    """Brightness and contrast (mean and std of luma, 0-255), channel means, and sharpness: the variance of the
    Laplacian of luma, which blur lowers."""
    rgb = pixels.astype(np.float32)
    luma = rgb @ LUMA
    laplacian = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4 * luma[1:-1, 1:-1]
    sharpness = float(laplacian.var()) if laplacian.size else 0.0
    return np.array([luma.mean(), luma.std(), *rgb.mean(axis=(0, 1)), sharpness], dtype=np.float64)


class DriftImages:
    """Each image decoded once (upright, RGB, shrunk to STATS_SHORT_SIDE): its statistics, and from the same pixels
    the checkpoint's evaluation crop. A map-style dataset for torch's DataLoader, decoded in its workers."""

    def __init__(self, paths: list[str], crop: Any) -> None:
        self.paths = paths
        self.crop = crop  # mlproj.data.batch_transforms.ImageTransform: uint8 HxWx3 in, uint8 3xSxS out
        self.short_side = max(STATS_SHORT_SIDE, crop.crop.scale_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Any, np.ndarray]:
        from mlproj.data.cache import load_resized

        pixels = np.require(load_resized(self.paths[i], self.short_side), requirements="W")  # torch wants writable
        return self.crop(pixels), pixel_statistics(pixels)


def read_manifest(run_dir: Path) -> list[dict[str, str]]:
    try:
        with (run_dir / "manifest.csv").open(newline="") as handle:
            return list(csv.DictReader(handle))
    except OSError as error:
        raise ConfigError(
            f"--reference {run_dir} has no readable manifest.csv ({error.strerror}): train the reference run with"
            " this mlproj version, which records the images it used there"
        ) from error


def reference_run(run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """The run's summary and the files of its training split, as paths that exist here."""
    summary = read_summary(run_dir)
    if not isinstance(summary, dict):
        raise ConfigError(
            f"--reference {run_dir} is not a training run dir (no readable summary.json): give one of"
            " logs/train/runs/<time>/ (`mlproj runs` lists them)"
        )
    data_root = Path(summary.get("data_root") or run_dir)
    rows = [row for row in read_manifest(run_dir) if row.get("split") == "train"]
    paths = [str(data_root / row["path"]) for row in rows]  # an absolute manifest path stays as it is
    found = [path for path in paths if Path(path).is_file()]
    if not found:
        raise ConfigError(
            f"--reference {run_dir}: none of its {len(paths)} training images is a file under data_root={data_root}:"
            " restore the data there (`dvc pull`); runs on in-memory data (CIFAR pickles) have no files to compare"
        )
    if len(found) < len(paths):
        log.warning("%d of %d training images are missing under %s", len(paths) - len(found), len(paths), data_root)
    return summary, found


def reference_checkpoint(run_dir: Path, summary: dict[str, Any]) -> str:
    """The run's best checkpoint (also found when the run dir was moved since), else its newest readable last.ckpt."""
    best = summary.get("best_checkpoint")
    if best:
        for path in (str(best), str(run_dir / "checkpoints" / Path(str(best)).name)):
            if is_remote(path) or Path(path).is_file():
                return path
    found = checkpoint_in(str(summary.get("checkpoint_dir") or run_dir / "checkpoints"))
    if found is None:
        raise ConfigError(f"--reference {run_dir} has no checkpoint (best or last): use a run that trained an epoch")
    return found[0]


def new_images(folder: Path) -> list[str]:
    images = [str(p) for p in list_images(folder)]
    if not images:
        raise ConfigError(f"--images {folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return images


def sample(paths: list[str], limit: int, seed: int) -> list[str]:
    """At most `limit` paths, drawn without replacement with `seed`, in their original order."""
    if len(paths) <= limit:
        return paths
    keep = np.sort(np.random.default_rng(seed).choice(len(paths), size=limit, replace=False))
    return [paths[i] for i in keep]


def decodable(paths: list[str], side: str) -> tuple[list[str], dict[str, tuple[int, int]], int]:
    """The paths that decode, their upright sizes, and how many were rejected (one `rejected PATH: REASON` line
    each); fewer than MIN_IMAGES left stops with one line."""
    from mlproj.data.validate import check_images

    checks = check_images(paths)
    for check in checks:
        if check.error:
            log.warning("rejected %s: %s", check.path, check.error)
    good = [check for check in checks if check.error is None]
    if len(good) < MIN_IMAGES:
        raise ConfigError(
            f"{side} has {len(good)} image(s) that decode, a two-sample test needs at least {MIN_IMAGES}:"
            " give more images"
        )
    return [c.path for c in good], {c.path: (c.width, c.height) for c in good}, len(checks) - len(good)


def measure(trained: Any, paths: list[str], sizes: dict[str, tuple[int, int]], workers: int) -> Measured:
    """Features with the checkpoint's own evaluation preprocessing (predict.py's), statistics from the same decode."""
    import torch
    from torch.utils.data import DataLoader

    backbone = trained.module.backbone
    device = next(backbone.parameters()).device
    normalise = trained.preprocess.batch_transform.to(device)
    loader = DataLoader(DriftImages(paths, trained.preprocess.image_transform), batch_size=64, num_workers=workers)
    features, statistics = [], []
    with torch.inference_mode():
        for crops, stats in loader:
            images = normalise(crops.to(device))
            pooled = backbone.forward_head(backbone.forward_features(images), pre_logits=True)
            features.append(pooled.float().flatten(1).cpu().numpy())
            statistics.append(stats.numpy())
    size_columns = np.array([sizes[path] for path in paths], dtype=np.float64)
    return Measured(np.concatenate(features), np.concatenate([np.concatenate(statistics), size_columns], 1))


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, permutations: int, seed: int) -> dict[str, float]:
    """Unbiased MMD² between the rows of x and y with a Gaussian kernel whose bandwidth is the median pairwise
    distance of the pooled sample (the median heuristic), and the share of random relabellings of the pooled sample
    whose MMD² is at least as large (counting the observed one, so p is never 0)."""
    z = np.concatenate([x, y]).astype(np.float64)
    m, n = len(x), len(y)
    squared = (z * z).sum(1)
    squared_distances = np.maximum(squared[:, None] + squared[None, :] - 2 * z @ z.T, 0.0)
    median = float(np.median(squared_distances[np.triu_indices(len(z), 1)]))  # the bandwidth, squared
    kernel = np.exp(-squared_distances / (2 * median)) if median > 0 else np.ones_like(squared_distances)
    row_sums, total = kernel.sum(1), kernel.sum()

    def mmd2(in_x: np.ndarray) -> np.ndarray:
        """MMD² for each row of `in_x` (1 where a pooled image counts as reference), from kernel sums within and
        between the two groups; the diagonal (k(a, a) = 1) is left out, which makes the estimate unbiased."""
        within_x = np.einsum("pi,pi->p", in_x @ kernel, in_x)
        x_to_all = in_x @ row_sums
        within_y = total - 2 * x_to_all + within_x
        between = x_to_all - within_x
        return (within_x - m) / (m * (m - 1)) + (within_y - n) / (n * (n - 1)) - 2 * between / (m * n)

    observed = float(mmd2(np.r_[np.ones(m), np.zeros(n)][None])[0])
    rng = np.random.default_rng(seed)
    exceed = 0
    for start in range(0, permutations, 100):  # in chunks: memory stays at 100 x (m + n) per step
        count = min(100, permutations - start)
        relabelled = (rng.random((count, m + n)).argsort(1) < m).astype(np.float64)
        exceed += int((mmd2(relabelled) >= observed).sum())
    return {"mmd2": observed, "p_value": (1 + exceed) / (1 + permutations), "bandwidth": float(np.sqrt(median))}


def compare_statistics(reference: np.ndarray, new: np.ndarray) -> dict[str, dict[str, float]]:
    """Per statistic: both means, and the two-sample Kolmogorov-Smirnov statistic with its p-value."""
    from scipy.stats import ks_2samp

    compared = {}
    for column, name in enumerate(STATISTICS):
        test = ks_2samp(reference[:, column], new[:, column])
        compared[name] = {
            "reference_mean": float(reference[:, column].mean()),
            "new_mean": float(new[:, column].mean()),
            "ks_statistic": float(test.statistic),
            "p_value": float(test.pvalue),
        }
    return compared


def bonferroni(tests: list[dict[str, Any]], alpha: float) -> float:
    """Adjust every test's p-value for the number of tests (valid whatever their dependence), mark the ones below
    `alpha` as moved, and return the smallest adjusted p-value: the verdict's."""
    for test in tests:
        test["p_adjusted"] = min(1.0, test["p_value"] * len(tests))
        test["moved"] = test["p_adjusted"] < alpha
    return min(test["p_adjusted"] for test in tests)


def detect(args: argparse.Namespace) -> dict[str, Any]:
    """Read the reference run, sample both sides, measure them the same way, test, and return the report."""
    run_dir = args.reference.expanduser().absolute()
    summary, training_images = reference_run(run_dir)
    candidates = new_images(args.images.expanduser().absolute())
    from mlproj.inference.model import load_model

    ckpt_path = reference_checkpoint(run_dir, summary)
    trained = load_model(ckpt_path, exported=False)  # an mlproj checkpoint of this version, or one line saying why not

    reference_paths, reference_sizes, reference_rejected = decodable(
        sample(training_images, args.max_images, args.seed), f"--reference {run_dir}"
    )
    paths, sizes, rejected = decodable(sample(candidates, args.max_images, args.seed), f"--images {args.images}")

    import torch

    trained.module.to("cuda" if torch.cuda.is_available() else "cpu")
    reference = measure(trained, reference_paths, reference_sizes, args.workers)
    new = measure(trained, paths, sizes, args.workers)
    features = {
        "test": "MMD, Gaussian kernel (median-heuristic bandwidth), permutation p-value",
        "backbone": trained.card.backbone,
        "dimensions": int(reference.features.shape[1]),
        "permutations": PERMUTATIONS,
        **mmd_permutation_test(reference.features, new.features, PERMUTATIONS, args.seed),
    }
    statistics = compare_statistics(reference.statistics, new.statistics)
    p_value = bonferroni([features, *statistics.values()], args.alpha)
    return {
        "drift": p_value < args.alpha,
        "p_value": p_value,
        "alpha": args.alpha,
        "tests": 1 + len(statistics),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "reference": {
            "run_dir": str(run_dir),
            "name": summary.get("name"),
            "checkpoint": ckpt_path,
            "data_root": summary.get("data_root"),
            "split": "train",
            "images": len(training_images),
            "rejected": reference_rejected,
            "used": len(reference_paths),
        },
        "new": {
            "images_dir": str(args.images.expanduser().absolute()),
            "images": len(candidates),
            "rejected": rejected,
            "used": len(paths),
        },
        "features": features,
        "statistics": statistics,
        "settings": {"max_images": args.max_images, "seed": args.seed, "stats_short_side": STATS_SHORT_SIDE},
    }


def verdict_line(report: dict[str, Any]) -> str:
    found, comparison = ("DRIFT", "<") if report["drift"] else ("no drift", ">=")
    return (
        f"{found}: p={report['p_value']:.3g} {comparison} alpha {report['alpha']}"
        f" (smallest of {report['tests']} Bonferroni-adjusted p-values)"
    )


def features_line(report: dict[str, Any]) -> str:
    features = report["features"]
    return (
        f"backbone features ({features['backbone']}, {features['dimensions']}-d): MMD² {features['mmd2']:.3g},"
        f" permutation p={features['p_value']:.4f} (adjusted {features['p_adjusted']:.3g})"
        f"{': moved' if features['moved'] else ''}"
    )


def moved_line(report: dict[str, Any]) -> str:
    moved = [
        f"{name} {stat['reference_mean']:.4g} -> {stat['new_mean']:.4g} (p={stat['p_adjusted']:.2g})"
        for name, stat in report["statistics"].items()
        if stat["moved"]
    ]
    return "image statistics moved: " + ("; ".join(moved) if moved else "none")


def markdown(report: dict[str, Any]) -> str:
    reference, new, features, settings = report["reference"], report["new"], report["features"], report["settings"]
    lines = [
        f"# Data drift: {verdict_line(report)}",
        "",
        f"- reference: {reference['used']} of {reference['images']} training images of run {reference['name']}"
        f" (`{reference['run_dir']}`), checkpoint `{reference['checkpoint']}`",
        f"- new: {new['used']} of {new['images']} images in `{new['images_dir']}` ({new['rejected']} rejected)",
        f"- {report['created_at']}, seed {settings['seed']}, at most {settings['max_images']} images per side",
        "",
        "One test on the backbone's features and one per image statistic; each p-value is multiplied by the number of"
        " tests (Bonferroni), and drift is reported when any adjusted p-value is below alpha.",
        "",
        "## Backbone features",
        "",
        f"{features['test']}: MMD² {features['mmd2']:.4g}, p = {features['p_value']:.4f}"
        f" ({features['permutations']} permutations), adjusted {features['p_adjusted']:.3g}; {features['dimensions']}"
        f" pooled features of {features['backbone']}, kernel bandwidth {features['bandwidth']:.4g}.",
        "",
        f"## Image statistics (at short side {settings['stats_short_side']} px; width and height as stored)",
        "",
        "Two-sample Kolmogorov-Smirnov test per statistic.",
        "",
        "| statistic | reference mean | new mean | KS statistic | p | adjusted p | moved |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, stat in report["statistics"].items():
        lines.append(
            f"| {name} | {stat['reference_mean']:.4g} | {stat['new_mean']:.4g} | {stat['ks_statistic']:.3f}"
            f" | {stat['p_value']:.2g} | {stat['p_adjusted']:.2g} | {'yes' if stat['moved'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], output: Path) -> None:
    from mlproj.storage import write_json, write_text

    write_json(output / "drift.json", report)
    write_text(output / "drift.md", markdown(report))


def parser() -> FlagParser:
    parser = FlagParser(
        prog="mlproj drift",
        description="Compare new images with a training run's training images: the run's backbone features (MMD "
        "two-sample test, permutation p-value) and image statistics (brightness, contrast, channel means, "
        "sharpness, size; Kolmogorov-Smirnov tests); drift when any Bonferroni-adjusted p-value is below --alpha. "
        "Writes drift.json and drift.md; exit status 0 whether or not drift is found, 1 with --fail-on-drift when "
        "it is, 2 for bad input.",
    )
    parser.add_argument(
        "--reference",
        type=Knob(Path, "a training run dir (`mlproj runs` lists them)", path="folder"),
        required=True,
        metavar="RUN_DIR",
    )
    parser.add_argument(
        "--images",
        type=Knob(Path, "a folder of new images (searched recursively)", path="folder"),
        required=True,
        metavar="DIR",
    )
    parser.add_argument(
        "--output",
        type=Knob(Path, "the folder the report goes to", path="output"),
        metavar="DIR",
        note="default: logs/drift/<time>",
    )
    parser.add_argument(
        "--max-images",
        type=Knob(int, "images per side at most (a random sample of them)", low=MIN_IMAGES),
        default=300,
        metavar="N",
    )
    parser.add_argument(
        "--seed",
        type=Knob(int, "the seed of the samples and the permutations", low=0),
        default=0,
    )
    parser.add_argument(
        "--alpha",
        type=SIGNIFICANCE,
        default=0.05,
    )
    parser.add_argument(
        "--workers",
        type=Knob(int, "image loader processes (0: load in the main process)", low=0),
        default=2,
        metavar="N",
    )
    parser.add_argument("--fail-on-drift", action="store_true", help="exit with status 1 when drift is found")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    return parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = check_paths(parser(), parse_args(sys.argv[1:] if argv is None else argv))
    output = args.output or Path("logs") / "drift" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    report = detect(args)
    write_report(report, output)
    reference, new = report["reference"], report["new"]
    print(verdict_line(report))
    print(f"compared {new['used']} new images of {new['images_dir']} with {reference['used']} training images")
    print(features_line(report))
    print(moved_line(report))
    print(f"report: {output / 'drift.md'}, {output / 'drift.json'}")
    if report["drift"] and args.fail_on_drift:
        sys.exit(1)


if __name__ == "__main__":
    from mlproj.cli import one_line_errors

    with one_line_errors():
        main()
