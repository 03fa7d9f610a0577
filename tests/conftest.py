"""Fixtures that build real image files and run the real entry points, in-process or as subprocesses."""

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest_plugins = ["gcs_emulator"]  # the `gcs_emulator` fixture: a GCS API on 127.0.0.1

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
# What timm's resolve_data_config gives a model, at a small size so tests stay fast.
DATA_CONFIG = {
    "input_size": [3, 32, 32],
    "interpolation": "bilinear",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "crop_pct": 1.0,
    "crop_mode": "center",
}

# No test may reach the network: the hub fails fast instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")  # else each dvc command starts a daemon that reports usage
os.environ.setdefault("MPLBACKEND", "Agg")
# gcsfs reads this once, when first imported (Lightning imports it during any training run when it is installed);
# its default probes every bucket for hierarchical namespaces, which the GCS emulator answers only after timeouts.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (40, 32), seed: int = 0) -> Path:
    """A real image file in `mode` (RGB, L, P, RGBA, P-transparent, CMYK, I;16); format from the suffix."""
    rng = np.random.default_rng(seed)
    width, height = size
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode == "P-transparent":
        image = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        image.info["transparency"] = 0
    elif mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16))
    else:
        image = rgb.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P-transparent":
        image.save(path, transparency=0)
    else:
        image.save(path)
    return path


def make_image_folder(
    root: Path,
    classes: Sequence[str] = ("cat", "dog", "fox"),
    per_class: int = 8,
    splits: Sequence[str] | None = None,
    modes: Sequence[str] = ("RGB",),
    suffixes: Sequence[str] = (".jpg", ".png"),
) -> Path:
    """`root/<class>/` (or `root/<split>/<class>/` when splits are given) of real JPEG/PNG files.

    Each class gets its own mean colour so a model can actually tell them apart.
    """
    seed = 0
    for split in splits or [""]:
        for label, name in enumerate(classes):
            for i in range(per_class):
                mode = modes[(i + label) % len(modes)]
                # JPEG holds no palette or alpha, PNG no CMYK.
                suffix = {"RGB": suffixes[i % len(suffixes)], "L": suffixes[i % len(suffixes)], "CMYK": ".jpg"}.get(
                    mode, ".png"
                )
                path = root / split / name / f"{name}_{i:03d}{suffix}"
                write_image(path, mode=mode, seed=seed)
                if mode == "RGB":
                    tint = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16) // 3 + 60 * label
                    Image.fromarray(np.clip(tint, 0, 255).astype(np.uint8)).save(path)
                seed += 1
    return root


def make_cifar100(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """torchvision's cifar-100-python/ layout (pickled train, test, meta) with random pixels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", n_train), ("test", n_test)):
        batch = {
            "data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
            "fine_labels": list(np.arange(count) % 100),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"class{i:02d}" for i in range(100)]}))
    return root


def make_cifar10(root: Path, per_batch: int = 50, n_test: int = 100, seed: int = 0) -> Path:
    """torchvision's cifar-10-batches-py/ layout (five pickled training batches, test_batch, batches.meta)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    for name in names:
        count = n_test if name == "test_batch" else per_batch
        batch = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8), "labels": list(np.arange(count) % 10)}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"kind{i}" for i in range(10)]}))
    return root


def compose(config_name: str, overrides: Sequence[str], output_dir: Path) -> Any:
    """The config the command line would build, with Hydra's runtime set so `${hydra:...}` resolves."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from mlproj.entry import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        # Records of checked images go beside the run, never into the working directory.
        overrides = [f"paths.cache_dir={output_dir.parent / '.cache'}", *overrides]
        cfg = hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


def train_tiny(tmp: Path, per_class: int = 6) -> tuple[Path, Path]:
    """A resnet10t trained for a few batches on generated class folders under `tmp`: what exports, servers and
    reports need is a real checkpoint, not a good one. Returns (images, run dir)."""
    from hydra.core.global_hydra import GlobalHydra

    from mlproj.train import train

    images = make_image_folder(tmp / "pics", per_class=per_class)
    run_dir = tmp / "logs" / "run"
    quick = ["data=imagefolder", "model.backbone=resnet10t", "data.image_size=32", "data.num_workers=0", "debug=limit"]
    train(compose("train", [*quick, "trainer.max_epochs=1", "test=false", f"data.root={images}"], run_dir))
    GlobalHydra.instance().clear()
    return images, run_dir


def run_cli(
    script: str, args: Sequence[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`python <script>.py args...` from the project root's shim, the way users run it."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / f"{script}.py"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture
def image_folder(tmp_path: Path) -> Callable[..., Path]:
    def build(name: str = "images", **kwargs: Any) -> Path:
        return make_image_folder(tmp_path / name, **kwargs)

    return build


@pytest.fixture
def train_in_process(tmp_path: Path) -> Iterator[Callable[..., tuple[dict[str, float], Path]]]:
    """Run mlproj.train.train on composed overrides; returns (metrics, run dir)."""
    from mlproj.train import train

    counter = iter(range(1000))

    def run(*overrides: str, run_dir: Path | None = None) -> tuple[dict[str, float], Path]:
        run_dir = run_dir or tmp_path / "logs" / "train" / "runs" / f"run{next(counter)}"
        cfg = compose("train", [f"paths.log_dir={tmp_path / 'logs'}", *overrides], run_dir)
        return train(cfg), Path(cfg.paths.output_dir)

    yield run
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()


requires_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent")


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded default data, written once per test session."""
    from mlproj.data.digits import write_digits

    root = tmp_path_factory.mktemp("data") / "digits"
    write_digits(root)
    return root
