"""`mlproj compare`: predictions.csv files with known answers, and real training runs (two with one command and seed
are identical, bit for bit), through the installed `mlproj` command."""

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlproj.stats import PairedResults, welch_test, wilson_interval

from conftest import compose, make_image_folder

MLPROJ = str(Path(sys.executable).with_name("mlproj"))


def mlproj_compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MLPROJ, "compare", *args], capture_output=True, text=True, timeout=120)


def predictions_dir(path: Path, correct: list[bool], images: list[str] | None = None) -> Path:
    """A run dir whose predictions.csv gets right the images `correct` says (actual `cat`, else `dog`)."""
    images = images or [f"cat/{i:04d}.jpg" for i in range(len(correct))]
    path.mkdir(parents=True)
    with (path / "predictions.csv").open("w", newline="") as handle:
        rows = csv.writer(handle)
        rows.writerow(["path", "actual", "prediction", "probability", "label1", "prob1"])
        for image, right in zip(images, correct, strict=True):
            label = "cat" if right else "dog"
            rows.writerow([image, "cat", label, "0.900000", label, "0.900000"])
    return path


def pattern(only_a: int, only_b: int, both: int, neither: int) -> tuple[list[bool], list[bool]]:
    """Per-image correctness of A and B with these counts."""
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    return a, b


def test_b_better_than_a_gets_intervals_mcnemar_and_a_sentence(tmp_path: Path) -> None:
    correct_a, correct_b = pattern(only_a=3, only_b=12, both=80, neither=5)
    a, b = predictions_dir(tmp_path / "a", correct_a), predictions_dir(tmp_path / "b", correct_b)
    result = mlproj_compare(str(a), str(b), "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["images"] == 100
    assert (found["a"]["acc"], found["b"]["acc"]) == (0.83, 0.92)
    assert found["a"]["acc_ci95"] == pytest.approx(list(wilson_interval(83, 100)))
    assert found["difference"] == pytest.approx(0.09)
    assert found["difference_ci95"] == pytest.approx(list(PairedResults(80, 3, 12, 5).difference_interval()))
    assert found["mcnemar"] == {"only_a": 3, "only_b": 12, "p_value": pytest.approx(2 * 576 / 2**15)}
    assert found["verdict"] == "B is better: +9.0 points, p = 0.035"
    assert not found["identical"]

    table = mlproj_compare(str(a), str(b)).stdout.splitlines()
    assert table[0].split() == ["run", "top-1", "95%", "interval"]
    assert table[1].split()[0] == "A" and table[1].split()[2] == "0.8300"
    assert table[3].split()[:3] == ["B", "-", "A"] and "+0.0900" in table[3]
    assert table[-1] == "B is better: +9.0 points, p = 0.035"
    assert "3 images only A got right, 12 only B" in table[-2]


def test_a_small_difference_is_no_significant_difference(tmp_path: Path) -> None:
    correct_a, correct_b = pattern(only_a=5, only_b=7, both=80, neither=8)
    a, b = predictions_dir(tmp_path / "a", correct_a), predictions_dir(tmp_path / "b", correct_b)
    found = json.loads(mlproj_compare(str(a), str(b), "--json").stdout)
    assert found["verdict"] == "no significant difference: B - A = +2.0 points, p = 0.774"
    low, high = found["difference_ci95"]
    assert low < 0 < high


def test_different_test_images_are_refused_in_one_line(tmp_path: Path) -> None:
    a = predictions_dir(tmp_path / "a", [True] * 10)
    b = predictions_dir(tmp_path / "b", [True] * 10, images=[f"cat/{i:04d}.jpg" for i in range(1, 11)])
    result = mlproj_compare(str(a), str(b))
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {a} and {b} were tested on different images (10 and 10, 9 in common)")
    missing = mlproj_compare(str(a), str(tmp_path))
    assert missing.returncode == 2 and f"{tmp_path} has no predictions.csv" in missing.stderr


def test_groups_of_seeds_get_mean_std_and_welch(tmp_path: Path) -> None:
    rights_a, rights_b = [80, 82, 81], [88, 90, 91]
    groups = {
        name: [predictions_dir(tmp_path / f"{name}{i}", [True] * k + [False] * (100 - k)) for i, k in enumerate(rights)]
        for name, rights in (("a", rights_a), ("b", rights_b))
    }
    result = mlproj_compare("--a", *map(str, groups["a"]), "--b", *map(str, groups["b"]), "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    welch = welch_test([k / 100 for k in rights_a], [k / 100 for k in rights_b])
    assert (found["a"]["mean"], found["a"]["std"]) == pytest.approx((0.81, 0.01))
    assert found["welch_p_value"] == pytest.approx(welch.p_value)
    assert found["verdict"] == f"B is better: +8.7 points, Welch p = {welch.p_value:.3f}"
    assert [run["acc"] for run in found["b"]["runs"]] == [0.88, 0.9, 0.91]
    text = mlproj_compare("--a", *map(str, groups["a"]), "--b", *map(str, groups["b"])).stdout
    assert "± 0.0100 (std)" in text and "Welch's t-test" in text
    one = mlproj_compare("--a", str(groups["a"][0]), "--b", *map(str, groups["b"]))
    assert one.returncode == 2 and "a group needs two or more" in one.stderr


def train_seeded(tmp: Path, images: Path, name: str) -> Path:
    """One tiny real run: resnet10t, 32 px, one epoch of three batches, tested on the whole test split."""
    from hydra.core.global_hydra import GlobalHydra

    from mlproj.train import train

    run_dir = tmp / "logs" / "train" / "runs" / name
    overrides = [
        "data=imagefolder",
        f"data.root={images}",
        "model.backbone=resnet10t",
        "data.image_size=32",
        "data.num_workers=0",
        "debug=limit",
        "trainer.max_epochs=1",
        "trainer.limit_test_batches=1.0",
        "seed=7",
    ]
    try:
        train(compose("train", [f"paths.log_dir={tmp / 'logs'}", *overrides], run_dir))
    finally:
        GlobalHydra.instance().clear()
    return run_dir


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("twins")
    images = make_image_folder(tmp / "pics", per_class=12)
    return train_seeded(tmp, images, "first"), train_seeded(tmp, images, "second")


def without_checkpoint(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metrics.items() if key != "ckpt_path"}


def test_two_runs_of_one_command_and_seed_are_identical(twin_runs: tuple[Path, Path]) -> None:
    first, second = twin_runs
    assert (first / "predictions.csv").read_bytes() == (second / "predictions.csv").read_bytes()
    metrics = [json.loads((run / "metrics.json").read_text()) for run in twin_runs]
    assert without_checkpoint(metrics[0]) == without_checkpoint(metrics[1])  # bitwise: == on the floats
    summaries = [json.loads((run / "summary.json").read_text())["metrics"] for run in twin_runs]
    assert summaries[0] == summaries[1]
    result = mlproj_compare(str(first), str(second))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("identical: the same predictions and probabilities on all")


def test_a_checkpoint_is_tested_on_its_own_test_split(twin_runs: tuple[Path, Path]) -> None:
    first, second = twin_runs
    best = json.loads((first / "summary.json").read_text())["best_checkpoint"]
    # best.ckpt: the run dir holds its test; last.ckpt (the same weights, one epoch): tested here, without a Trainer
    for checkpoint in (best, str(second / "checkpoints" / "last.ckpt")):
        found = json.loads(mlproj_compare(checkpoint, str(first), "--json").stdout)
        assert found["identical"], found
        assert found["a"]["source"] == checkpoint


def test_report_of_two_runs_has_the_comparison(twin_runs: tuple[Path, Path], tmp_path: Path) -> None:
    from mlproj.reports.run_report import main

    first, second = twin_runs
    main([str(first), str(second), "--copy-to", str(tmp_path)])
    page = (second / "report.html").read_text()
    assert 'id="comparison"' in page and "identical: the same predictions" in page
    assert page.index('id="comparison"') < page.index('id="metrics"')


def test_compare_help_imports_nothing_heavy() -> None:
    code = (
        "import sys; from mlproj.cli import main; sys.argv = ['mlproj', 'compare', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted({'torch', 'lightning', 'timm', 'hydra'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.splitlines()[-1] == "[]", result.stdout + result.stderr
    assert "RUN_A RUN_B" in result.stdout
