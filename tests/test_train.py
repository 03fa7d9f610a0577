"""Training, resuming, evaluating and predicting through the real entry points."""

import csv
import json
import os
import zipfile
from pathlib import Path

import pytest

from conftest import (
    SHARED_DATA,
    compose,
    make_cifar100,
    make_image_folder,
    read_summary,
    requires_shared_data,
    run_cli,
)

SUMMARY_KEYS = {
    "status",
    "experiment",
    "backbone",
    "started_at",
    "ended_at",
    "epochs_completed",
    "batch_size",
    "metrics",
    "best_checkpoint",
    "git_commit",
    "git_dirty",
    "pid",
    "host",
    "data_root",
}
QUICK = ["debug=limit", "data.num_workers=0"]


def experiment_data(experiment: str, tmp_path: Path) -> list[str]:
    """A small offline data folder in the layout each experiment's data module reads."""
    if experiment.startswith("cifar100"):
        return [f"data.root={make_cifar100(tmp_path / 'cifar', n_train=1000, n_test=100)}"]
    if experiment == "mushroom_resnet50":
        from mlproj.data.mushrooms import GENERA

        return [f"data.root={make_image_folder(tmp_path / 'kaggle' / 'Mushrooms', classes=GENERA, per_class=7).parent}"]
    if experiment == "imagenet_resnet50_scratch":
        folder = make_image_folder(tmp_path / "imagenet", per_class=4, splits=("train", "val"))
        return [f"data.root={folder}", "trainer.devices=1", "trainer.strategy=auto"]
    return []


@pytest.mark.parametrize(
    "experiment",
    [
        "digits",
        "mushroom_resnet50",
        "cifar100_efficientnet_b0_linear_probe",
        "cifar100_resnet34_finetune",
        "imagenet_resnet50_scratch",
    ],
)
def test_every_experiment_runs_offline(experiment: str, tmp_path: Path, digits_root: Path, train_in_process) -> None:
    data = experiment_data(experiment, tmp_path) or [f"data.root={digits_root}"]
    overrides = [f"experiment={experiment}", "debug=fdr", "model.pretrained=false", "data.batch_size=4"]
    metrics, run_dir = train_in_process(*overrides, "data.image_size=32", *data)
    summary = read_summary(run_dir)
    assert summary["status"] == "finished"
    assert summary["experiment"] == experiment
    assert set(summary) >= SUMMARY_KEYS
    assert "test/acc" in metrics


def test_summary_records_the_run(digits_root: Path, train_in_process) -> None:
    metrics, run_dir = train_in_process(f"data.root={digits_root}", *QUICK)
    summary = read_summary(run_dir)
    assert summary["status"] == "finished" and summary["experiment"] == "digits"
    assert summary["epochs_completed"] == 3
    assert summary["batch_size"] == 64
    assert summary["data_root"] == str(digits_root)
    assert summary["pid"] == os.getpid()
    assert set(summary["metrics"]) >= {"val/acc", "val/acc_best", "test/acc", "test/acc_top5", "test/loss"}
    assert Path(summary["best_checkpoint"]).is_absolute() and Path(summary["best_checkpoint"]).is_file()
    assert summary["metrics"]["test/acc"] == pytest.approx(metrics["test/acc"])
    history = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    epoch_times = [row["time/epoch_s"] for row in history if row.get("time/epoch_s")]
    assert len(epoch_times) == 3 and all(float(t) > 0 for t in epoch_times)
    manifest = list(csv.DictReader((run_dir / "manifest.csv").open()))
    assert len(manifest) == 1797 and {row["split"] for row in manifest} == {"train", "val", "test"}


def test_resume_continues_where_it_stopped(digits_root: Path, train_in_process, tmp_path: Path) -> None:
    _first_metrics, first_dir = train_in_process(f"data.root={digits_root}", *QUICK, "trainer.max_epochs=1")
    _, second_dir = train_in_process(f"data.root={digits_root}", *QUICK, "trainer.max_epochs=2", "ckpt_path=last")
    assert second_dir == first_dir
    summary = read_summary(first_dir)
    assert summary["epochs_completed"] == 2
    assert summary["resumed_from"].endswith("last.ckpt")
    steps = [int(row["step"]) for row in csv.DictReader((first_dir / "csv" / "metrics.csv").open()) if row["train/acc"]]
    assert steps == [2, 5]  # epoch 0 from the first run kept, epoch 1 continues at 3 steps per epoch
    assert not list(tmp_path.joinpath("logs", "train", "runs").glob("run1"))


def test_last_with_nothing_to_resume_starts_fresh(digits_root: Path, train_in_process, caplog) -> None:
    _, run_dir = train_in_process(f"data.root={digits_root}", *QUICK, "trainer.max_epochs=1", "ckpt_path=last")
    assert read_summary(run_dir)["resumed_from"] is None
    assert "starting fresh" in caplog.text


def test_eval_reproduces_the_test_accuracy_train_reported(digits_root: Path, train_in_process, tmp_path: Path) -> None:
    from mlproj.eval import evaluate

    metrics, run_dir = train_in_process(f"data.root={digits_root}", *QUICK, "trainer.limit_test_batches=1.0")
    checkpoint = read_summary(run_dir)["best_checkpoint"]
    with_experiment = evaluate(
        compose("eval", ["experiment=digits", f"data.root={digits_root}", f"ckpt_path={checkpoint}"], tmp_path / "e1")
    )
    from_checkpoint_alone = evaluate(compose("eval", [f"ckpt_path={checkpoint}"], tmp_path / "e2"))
    for name in ("test/acc", "test/acc_top5", "test/loss"):
        assert with_experiment[name] == pytest.approx(metrics[name], abs=1e-6)
        assert from_checkpoint_alone[name] == pytest.approx(metrics[name], abs=1e-6)
    assert json.loads((tmp_path / "e2" / "metrics.json").read_text())["split"] == "test"


def test_checkpoints_load_without_the_source_tree(digits_root: Path, train_in_process) -> None:
    import torch

    _, run_dir = train_in_process(f"data.root={digits_root}", *QUICK)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    torch.load(checkpoint, map_location="cpu", weights_only=True)
    with zipfile.ZipFile(checkpoint) as archive:
        pickled = b"".join(archive.read(n) for n in archive.namelist() if n.endswith(".pkl"))
    assert b"src." not in pickled and b"omegaconf" not in pickled


def test_predict_writes_top_k_for_a_folder_and_a_file(digits_root: Path, train_in_process, tmp_path: Path) -> None:
    from mlproj.predict import predict

    _, run_dir = train_in_process(f"data.root={digits_root}", *QUICK)
    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    output = predict(compose("predict", [f"ckpt_path={checkpoint}", f"input={digits_root / '7'}", "top_k=3"], tmp_path))
    rows = list(csv.DictReader(output.open()))
    assert len(rows) == len(list((digits_root / "7").glob("*.png")))
    assert set(rows[0]) >= {"path", "prediction", "probability", "label1", "prob1", "label3", "prob3"}
    assert all(row["prediction"] == row["label1"] for row in rows)
    assert all(float(row["prob1"]) >= float(row["prob2"]) >= float(row["prob3"]) for row in rows)
    one = tmp_path / "one.csv"
    single = digits_root / "3" / sorted(os.listdir(digits_root / "3"))[0]
    predict(compose("predict", [f"ckpt_path={checkpoint}", f"input={single}", f"output={one}"], tmp_path))
    assert len(list(csv.DictReader(one.open()))) == 1


def test_predict_skips_files_that_do_not_decode(digits_root: Path, train_in_process, tmp_path: Path, caplog) -> None:
    import shutil

    from mlproj.predict import predict

    _, run_dir = train_in_process(f"data.root={digits_root}", *QUICK, "trainer.max_epochs=1")
    folder = tmp_path / "incoming"
    folder.mkdir()
    for name in sorted(os.listdir(digits_root / "5"))[:2]:
        shutil.copy(digits_root / "5" / name, folder / name)
    (folder / "broken.jpg").write_bytes(b"<html>403</html>")
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    output = predict(compose("predict", [f"ckpt_path={checkpoint}", f"input={folder}"], tmp_path / "p"))
    assert len(list(csv.DictReader(output.open()))) == 2
    assert f"rejected {folder / 'broken.jpg'}: not an image Pillow can read" in caplog.text


def test_presplit_folder_without_test_is_tested_on_val(tmp_path: Path, train_in_process) -> None:
    folder = make_image_folder(tmp_path / "pics", per_class=6, splits=("train", "val"), modes=("RGB", "L", "P", "RGBA"))
    overrides = ["data=imagefolder", f"data.root={folder}", "model.backbone=resnet10t", "data.image_size=32"]
    _, run_dir = train_in_process(*overrides, "data.batch_size=8", *QUICK)
    summary = read_summary(run_dir)
    assert summary["test_split"] == "val"
    assert summary["split_sizes"] == {"train": 18, "val": 18}


def test_lr_finder_picks_the_rate_and_saves_its_plot(digits_root: Path, train_in_process) -> None:
    enough_steps = ["data.batch_size=16", "trainer.limit_train_batches=40"]  # the finder takes 100 steps
    _metrics, run_dir = train_in_process(f"data.root={digits_root}", *QUICK, *enough_steps, "tune_lr=true")
    assert (run_dir / "lr_find.png").stat().st_size > 1000
    tuned = read_summary(run_dir)["tuned_lr"]
    assert tuned > 0 and tuned != 3e-3  # the finder's suggestion, not the experiment's configured rate
    history = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    assert max(float(row["lr-AdamW/pg1"]) for row in history if row.get("lr-AdamW/pg1")) <= tuned * 1.0001


def test_wandb_without_a_key_logs_offline_and_resumes_the_same_run(
    digits_root: Path, train_in_process, tmp_path: Path, monkeypatch, caplog
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    overrides = [f"data.root={digits_root}", *QUICK, "logger=[csv,wandb]"]
    _, run_dir = train_in_process(*overrides, "trainer.max_epochs=1")
    assert "no API key configured, logging offline" in caplog.text
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    _, resumed_dir = train_in_process(*overrides, "trainer.max_epochs=2", "ckpt_path=last")
    assert resumed_dir == run_dir
    offline_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2 and all(p.name.endswith(run_id) for p in offline_runs)


def test_ema_and_early_stopping_callbacks_can_be_added(digits_root: Path, train_in_process) -> None:
    _, run_dir = train_in_process(f"data.root={digits_root}", *QUICK, "callbacks=[default,ema,early_stopping]")
    assert read_summary(run_dir)["status"] == "finished"


@requires_shared_data
@pytest.mark.slow
def test_real_photos_train_through_the_folder_path(train_in_process) -> None:
    root = SHARED_DATA / "hymenoptera"
    overrides = ["data=imagefolder", f"data.root={root}", "model.backbone=resnet10t", "data.image_size=64"]
    metrics, run_dir = train_in_process(*overrides, "data.batch_size=32", "trainer.max_epochs=1", "data.num_workers=2")
    summary = read_summary(run_dir)
    assert summary["status"] == "finished" and summary["test_split"] == "val"
    assert summary["split_sizes"] == {"train": 244, "val": 153}
    assert 0.0 <= metrics["test/acc"] <= 1.0


@pytest.mark.slow
def test_default_command_trains_digits_to_95_percent(tmp_path: Path) -> None:
    """`make train`'s `python train.py` with no arguments, in a fresh directory."""
    result = run_cli("train", [], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    summary = read_summary(run_dir)
    assert summary["experiment"] == "digits" and summary["status"] == "finished"
    assert summary["metrics"]["test/acc"] >= 0.95
    assert len(list((tmp_path / "data" / "digits").rglob("*.png"))) == 1797


@pytest.mark.slow
def test_two_process_cpu_ddp(tmp_path: Path, digits_root: Path) -> None:
    args = ["trainer=ddp_cpu", f"data.root={digits_root}", *QUICK, "trainer.max_epochs=2"]
    result = run_cli("train", args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    summary = read_summary(run_dir)
    assert summary["status"] == "finished" and summary["batch_size"] == 128
    assert (run_dir / "train_ddp_process_1.log").exists()
    low, high = summary["metrics"]["test/acc_ci95"]  # from the synced accuracy: no process holds every prediction
    assert low <= summary["metrics"]["test/acc"] <= high and "test/acc_top5_ci95" in summary["metrics"]


@pytest.mark.parametrize("preset", ["overfit", "profiler"])
def test_debug_presets_run(preset: str, digits_root: Path, train_in_process) -> None:
    short = ["trainer.max_epochs=2", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    _, run_dir = train_in_process(f"data.root={digits_root}", f"debug={preset}", *short, "test=false")
    assert read_summary(run_dir)["status"] == "finished"


def test_cifar10_trains_from_its_data_config(tmp_path: Path, train_in_process) -> None:
    from conftest import make_cifar10

    root = make_cifar10(tmp_path / "cifar10")
    overrides = ["data=cifar10", f"data.root={root}", "data.download=false", "model.backbone=resnet10t"]
    _, run_dir = train_in_process(*overrides, "debug=fdr", "data.batch_size=16")
    summary = read_summary(run_dir)
    assert summary["status"] == "finished" and summary["num_classes"] == 10
    assert summary["split_sizes"] == {"train": 230, "val": 20, "test": 100}


def test_a_run_with_no_planned_end_trains_with_max_steps_or_max_time(digits_root: Path, train_in_process) -> None:
    """trainer.max_epochs=-1 (until stopped): the cosine schedule takes its length from max_steps; with max_time
    alone, a schedule that needs no length."""
    _, run_dir = train_in_process(f"data.root={digits_root}", *QUICK, "trainer.max_epochs=-1", "trainer.max_steps=4")
    import torch

    assert read_summary(run_dir)["status"] == "finished"
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    timed = [*QUICK, "trainer.max_epochs=-1", "trainer.max_time=00:00:00:02", "model/scheduler=step", "test=false"]
    _, run_dir = train_in_process(f"data.root={digits_root}", *timed)
    assert read_summary(run_dir)["status"] == "finished"


def test_a_schedule_with_no_length_to_plan_over_is_one_line(digits_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [f"data.root={digits_root}", *QUICK, "trainer.max_epochs=-1", f"hydra.run.dir={run_dir}"]
    result = run_cli("train", args, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: model.scheduler.name=onecycle is planned over the run's length, and trainer.max_epochs=-1 with no"
        " trainer.max_steps has none: set trainer.max_steps=N, or model.scheduler=step or none"
    )  # the default experiment's (digits) schedule
    assert "Traceback" not in result.stderr
    assert not run_dir.exists(), "nothing written"
