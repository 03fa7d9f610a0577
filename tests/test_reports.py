"""Evaluation outputs (metrics tables, predictions, confusion matrix, Grad-CAM grid) and `mlproj report`, from real
tiny training runs: the PNGs are read back and the HTML page parsed."""

import base64
import csv
import io
import json
import logging
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlproj.stats import wilson_interval

from conftest import compose, make_cifar10, read_summary

# A few batches per stage, and the whole test split.
QUICK = ["debug=limit", "trainer.limit_test_batches=1.0"]
SECTIONS = {"run", "metrics", "curves", "epoch-times", "confusion", "misclassified", "calibration", "lr-finder"}


def train(tmp: Path, *overrides: str) -> Path:
    from hydra.core.global_hydra import GlobalHydra

    from mlproj.train import train as run_train

    run_dir = tmp / "logs" / "train" / "runs" / "run"
    try:
        run_train(compose("train", [f"paths.log_dir={tmp / 'logs'}", *overrides], run_dir))
    finally:
        GlobalHydra.instance().clear()
    return run_dir


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory, digits_root: Path) -> Path:
    """One real training run on a third of the digits (every class), shared by the tests that read its outputs."""
    tmp = tmp_path_factory.mktemp("digits")
    for image in sorted(digits_root.rglob("*.png"))[::3]:
        (tmp / "digits" / image.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, tmp / "digits" / image.parent.name / image.name)
    return train(tmp, f"data.root={tmp / 'digits'}", *QUICK)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def picture(source: Path | bytes) -> np.ndarray:
    """The image as an RGB array, after checking it is no blank canvas."""
    image = np.asarray(Image.open(source if isinstance(source, Path) else io.BytesIO(source)).convert("RGB"))
    assert image.shape[0] >= 200 and image.shape[1] >= 300
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50, "a blank or nearly blank image"
    return image


def coloured_fraction(image: np.ndarray) -> float:
    """The share of strongly coloured pixels: Grad-CAM's heat map on grey digits (the figure's text is black)."""
    channels = image.astype(int)
    return float(((channels.max(axis=2) - channels.min(axis=2)) > 80).mean())


def test_a_training_run_writes_metrics_tables_and_predictions(digits_run: Path) -> None:
    summary = read_summary(digits_run)
    metrics = json.loads((digits_run / "metrics.json").read_text())
    tested = summary["split_sizes"]["test"]
    assert metrics["split"] == "test" and metrics["images"] == tested
    assert metrics["ckpt_path"] == summary["best_checkpoint"]
    for name in ("test/acc", "test/acc_top5", "test/loss"):
        assert metrics[name] == pytest.approx(summary["metrics"][name])
    assert set(metrics["per_class"]) == {str(d) for d in range(10)}
    assert sum(row["support"] for row in metrics["per_class"].values()) == tested
    assert {"test/precision_macro", "test/recall_macro", "test/f1_macro"} <= set(metrics)
    # 95% intervals: Wilson from the count of correct images, a bootstrap around macro F1; in the summary too
    assert metrics["test/acc_ci95"] == pytest.approx(list(wilson_interval(round(metrics["test/acc"] * tested), tested)))
    for name in ("test/acc", "test/acc_top5", "test/f1_macro"):
        low, high = metrics[f"{name}_ci95"]
        assert low <= metrics[name] <= high and high - low > 0.01
        assert summary["metrics"][f"{name}_ci95"] == [low, high]

    table = read_csv(digits_run / "metrics.csv")
    assert [row["class"] for row in table] == [str(d) for d in range(10)]
    assert float(table[3]["f1"]) == pytest.approx(metrics["per_class"]["3"]["f1"], abs=1e-6)

    predictions = read_csv(digits_run / "predictions.csv")
    assert len(predictions) == tested
    assert list(predictions[0])[:4] == ["path", "actual", "prediction", "probability"]
    assert (Path(summary["data_root"]) / predictions[0]["path"]).is_file()  # relative to the data root
    accuracy = np.mean([row["actual"] == row["prediction"] for row in predictions])
    assert accuracy == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert all(row["prediction"] == row["label1"] for row in predictions)
    assert all(float(row["prob1"]) >= float(row["prob5"]) for row in predictions)
    # The recall of each class is its share of correct predictions.
    threes = [row for row in predictions if row["actual"] == "3"]
    recall = np.mean([row["prediction"] == "3" for row in threes])
    assert recall == pytest.approx(metrics["per_class"]["3"]["recall"], abs=1e-6)


def test_a_training_run_draws_the_confusion_matrix_and_the_misclassified_grid(digits_run: Path) -> None:
    picture(digits_run / "figures" / "confusion_matrix.png")
    grid = picture(digits_run / "figures" / "misclassified.png")
    assert coloured_fraction(grid) > 0.05  # heat maps beside grey digits


def test_eval_writes_what_the_test_stage_wrote(digits_run: Path, tmp_path: Path) -> None:
    from mlproj.eval import evaluate

    checkpoint = read_summary(digits_run)["best_checkpoint"]
    evaluate(compose("eval", [f"ckpt_path={checkpoint}"], tmp_path / "eval"))
    assert (tmp_path / "eval" / "predictions.csv").read_text() == (digits_run / "predictions.csv").read_text()
    assert (tmp_path / "eval" / "metrics.csv").read_text() == (digits_run / "metrics.csv").read_text()
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["ckpt_path"] == checkpoint
    picture(tmp_path / "eval" / "figures" / "misclassified.png")


def test_a_vit_gets_grad_cam_on_its_patch_grid_and_cifar_rows_get_ids(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="mlproj.reports")
    cifar = make_cifar10(tmp_path / "cifar", per_batch=20, n_test=16)
    overrides = ["data=cifar10", f"data.root={cifar}", "model.backbone=test_vit", "data.image_size=160"]
    run_dir = train(tmp_path, *overrides, "debug=fdr", "data.batch_size=16", "model.pretrained=false")
    assert "Grad-CAM of blocks.5.norm1" in caplog.text  # the last block's norm, tokens on the 10x10 patch grid
    picture(run_dir / "figures" / "misclassified.png")
    paths = [row["path"] for row in read_csv(run_dir / "predictions.csv")]
    assert paths == [f"cifar-10-batches-py/test_batch/{i}" for i in range(16)]  # in-memory images: ids, not files


class Page(HTMLParser):
    """The sections (by id, with their headings) and the embedded images of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}
        self.images: dict[str, list[bytes]] = {}
        self.current: str | None = None
        self.in_heading = False
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section":
            self.current = values["id"]
            self.images[self.current] = []
        elif tag == "h2":
            self.in_heading = True
        elif tag == "img" and self.current:
            prefix = "data:image/png;base64,"
            assert values["src"].startswith(prefix), "an image that is not embedded"
            self.images[self.current].append(base64.b64decode(values["src"][len(prefix) :]))

    def handle_endtag(self, tag: str) -> None:
        self.in_heading = self.in_heading and tag != "h2"

    def handle_data(self, data: str) -> None:
        if self.in_heading and self.current:
            self.sections[self.current] = data
        self.text.append(data)


def test_report_is_one_self_contained_page_copied_to_reports(digits_run: Path, tmp_path: Path, capsys) -> None:
    from mlproj.reports.run_report import main

    main([str(digits_run), "--copy-to", str(tmp_path / "reports")])
    name = read_summary(digits_run)["name"]
    page = (digits_run / "report.html").read_text()
    assert (tmp_path / "reports" / f"{name}.html").read_text() == page
    assert f"{name}.html" in capsys.readouterr().out

    parsed = Page()
    parsed.feed(page)
    assert set(parsed.sections) == SECTIONS - {"lr-finder"}  # the run did not tune its learning rate
    for section in SECTIONS - {"run", "metrics", "lr-finder"}:
        (png,) = parsed.images[section]
        picture(png)
    text = " ".join(parsed.text)
    assert "resnet10t" in text and "digits" in text and "precision" in text
    low, high = json.loads((digits_run / "metrics.json").read_text())["test/acc_ci95"]
    assert f"[{low:.4f}, {high:.4f}]" in text  # the 95% interval beside top-1
    assert "model:" in text  # the resolved config


def test_report_shows_the_lr_finder_plot_when_the_run_has_one(digits_run: Path, tmp_path: Path) -> None:
    from mlproj.reports.run_report import render

    run_dir = Path(shutil.copytree(digits_run, tmp_path / "run"))
    # Lightning's own plot is tested in test_train.py (tune_lr=true takes 100 steps); a real PNG stands in for it.
    shutil.copyfile(run_dir / "figures" / "confusion_matrix.png", run_dir / "lr_find.png")
    parsed = Page()
    parsed.feed(render(run_dir)[1])
    assert set(parsed.sections) == SECTIONS
    (png,) = parsed.images["lr-finder"]
    assert png == (run_dir / "lr_find.png").read_bytes()


def test_report_of_a_folder_that_is_no_run_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from mlproj.cli import main

    monkeypatch.setattr("sys.argv", ["mlproj", "report", str(tmp_path)])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: RUN_DIR={tmp_path} is not a run dir")
