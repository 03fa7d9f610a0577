"""`mlproj drift`: new images against the training data of a real run, shifted and not."""

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance, ImageFilter

from conftest import SHARED_DATA, compose, make_image_folder, write_image

HYMENOPTERA = SHARED_DATA / "hymenoptera"
QUICK = [
    "data=imagefolder",
    "model.backbone=resnet10t",
    "data.image_size=32",
    "data.cache_short_side=40",
    "data.batch_size=32",
    "data.num_workers=0",
    "debug=limit",
    "trainer.max_epochs=1",
    "test=false",
]
FEW = ["--max-images", "80", "--workers", "0"]  # both sides sampled: seconds on two cores


def train_reference(root: Path, tmp: Path) -> Path:
    """A real (tiny) training run on `root`; its run dir holds summary.json, manifest.csv and checkpoints."""
    from hydra.core.global_hydra import GlobalHydra

    from mlproj.train import train

    run_dir = tmp / "logs" / "train" / "runs" / "reference"
    train(compose("train", [f"paths.log_dir={tmp / 'logs'}", f"data.root={root}", *QUICK], run_dir))
    GlobalHydra.instance().clear()
    return run_dir


def shifted_copy(source: Path, target: Path, shift: Callable[[Image.Image], Image.Image]) -> Path:
    """Every other photo of `source` (both classes, about 80), shifted, in the same layout."""
    for path in sorted(source.rglob("*.jpg"))[::2]:
        copy = target / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            shift(image.convert("RGB")).save(copy, quality=90)
    return target


def darken(image: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(0.5)


def blur(image: Image.Image) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(3))


def drift_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """`mlproj drift ...` as users type it."""
    command = [sys.executable, "-m", "mlproj.cli", "drift", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def drift_in_process(*args: str | Path, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """The same `main` with the same error handling as `mlproj drift`, in this process: torch and Lightning are
    already imported by the training fixture."""
    from mlproj.cli import one_line_errors
    from mlproj.drift import main

    code = 0
    try:
        with one_line_errors():
            main([str(arg) for arg in args])
    except SystemExit as stop:
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def hymenoptera_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not HYMENOPTERA.is_dir():
        pytest.skip(f"{HYMENOPTERA} is absent (see ../shared/data/README.md)")
    # Trained on train/ alone (split here), so val/ is a held-out part of the same set.
    yield train_reference(HYMENOPTERA / "train", tmp_path_factory.mktemp("hymenoptera"))


@pytest.fixture(scope="module")
def generated_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A run on generated class folders (conftest), and the folder it trained on."""
    tmp = tmp_path_factory.mktemp("generated")
    root = make_image_folder(tmp / "images", per_class=16)
    yield train_reference(root, tmp), root


def test_darkened_photos_are_drift_and_fail_when_asked(hymenoptera_run: Path, tmp_path: Path) -> None:
    dark = shifted_copy(HYMENOPTERA / "val", tmp_path / "dark", darken)
    output = tmp_path / "report"
    result = drift_cli(
        "--reference", hymenoptera_run, "--images", dark, "--output", output, "--fail-on-drift", *FEW, cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("DRIFT: p=")
    report = json.loads((output / "drift.json").read_text())
    assert report["drift"] and report["p_value"] < 0.01
    assert report["features"]["moved"] and report["features"]["p_value"] < 0.01  # the model sees it too
    brightness = report["statistics"]["brightness"]
    assert brightness["moved"] and brightness["new_mean"] < 0.6 * brightness["reference_mean"]
    assert "brightness" in result.stdout.splitlines()[3]
    assert "| brightness |" in (output / "drift.md").read_text()


def test_held_out_photos_of_the_same_set_are_not_drift(
    hymenoptera_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "report"
    code, out, _ = drift_in_process(
        "--reference", hymenoptera_run, "--images", HYMENOPTERA / "val", "--output", output, "--fail-on-drift", *FEW,
        capsys=capsys,
    )  # fmt: skip
    report = json.loads((output / "drift.json").read_text())
    assert code == 0 and out.startswith("no drift: p=")
    assert not report["drift"] and report["p_value"] > 0.05
    assert report["features"]["p_value"] > 0.05
    assert not any(stat["moved"] for stat in report["statistics"].values())
    assert report["new"]["used"] == 80 and report["reference"]["used"] == 80  # --max-images per side


def test_blurred_photos_move_sharpness(hymenoptera_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A blur the 32 px model cannot see is still drift: sharpness (variance of the Laplacian) drops."""
    blurred = shifted_copy(HYMENOPTERA / "val", tmp_path / "blurred", blur)
    output = tmp_path / "report"
    code, out, _ = drift_in_process(
        "--reference", hymenoptera_run, "--images", blurred, "--output", output, *FEW, capsys=capsys
    )
    report = json.loads((output / "drift.json").read_text())
    assert code == 0 and out.startswith("DRIFT")  # a finding, not an error, without --fail-on-drift
    sharpness = report["statistics"]["sharpness"]
    assert sharpness["moved"] and sharpness["new_mean"] < 0.2 * sharpness["reference_mean"]
    assert report["p_value"] < 0.01


def test_generated_images_darkened_are_drift_and_bad_files_are_rejected(
    generated_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir, root = generated_run
    dark = tmp_path / "dark"
    for path in sorted(root.rglob("*.*")):
        with Image.open(path) as image:
            copy = dark / path.relative_to(root)
            copy.parent.mkdir(parents=True, exist_ok=True)
            darken(image.convert("RGB")).save(copy)
    (dark / "cat" / "broken.jpg").write_bytes(b"not an image")
    code, _, _ = drift_in_process(
        "--reference", run_dir, "--images", dark, "--output", tmp_path / "report", "--workers", "0", capsys=capsys
    )
    report = json.loads((tmp_path / "report" / "drift.json").read_text())
    assert code == 0 and report["drift"]
    assert report["statistics"]["brightness"]["moved"]
    assert f"rejected {dark / 'cat' / 'broken.jpg'}: not an image Pillow can read" in caplog.messages
    assert (report["new"]["images"], report["new"]["rejected"], report["new"]["used"]) == (49, 1, 48)


def test_same_generated_folder_is_not_drift(
    generated_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir, root = generated_run
    code, out, _ = drift_in_process(
        "--reference", run_dir, "--images", root, "--output", tmp_path / "report", "--workers", "0", capsys=capsys
    )
    assert code == 0 and out.startswith("no drift")
    assert (tmp_path / "report" / "drift.md").read_text().startswith("# Data drift: no drift")


def test_bad_input_is_one_line_and_exit_2(generated_run: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, _ = generated_run
    not_a_run = drift_cli("--reference", tmp_path, "--images", tmp_path, cwd=tmp_path)
    assert not_a_run.returncode == 2
    assert not_a_run.stderr.strip().splitlines() == [
        f"error: --reference {tmp_path} is not a training run dir (no readable summary.json): give one of"
        " logs/train/runs/<time>/ (`mlproj runs` lists them)"
    ]
    few = tmp_path / "few"
    for i in range(3):
        write_image(few / f"img{i}.png", seed=i)
    too_few = drift_cli("--reference", run_dir, "--images", few, cwd=tmp_path)
    assert too_few.returncode == 2
    assert too_few.stderr.strip().endswith("a two-sample test needs at least 10: give more images")
    assert len(too_few.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "logs").exists()  # no report for a run that never compared anything
