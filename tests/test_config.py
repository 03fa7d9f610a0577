"""The configs users compose: experiments, group overrides, help, start-up cost."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlproj.entry import CONFIG_DIR

from conftest import ROOT, compose, run_cli

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def test_all_workload_experiments_exist() -> None:
    assert set(EXPERIMENTS) >= {
        "digits",
        "mushroom_resnet50",
        "cifar100_efficientnet_b0_linear_probe",
        "cifar100_resnet34_finetune",
        "imagenet_resnet50_scratch",
    }


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_leave_the_accelerator_to_the_machine(experiment: str, tmp_path: Path) -> None:
    cfg = compose("train", [f"experiment={experiment}"], tmp_path)
    assert cfg.experiment == experiment
    assert cfg.trainer.accelerator == "auto"


def test_experiments_carry_their_recipes(tmp_path: Path) -> None:
    mushrooms = compose("train", ["experiment=mushroom_resnet50"], tmp_path)
    assert mushrooms.data._target_.endswith("MushroomsDataModule")
    assert (mushrooms.data.val_fraction, mushrooms.data.test_fraction, mushrooms.data.split_seed) == (0.15, 0.15, 42)
    assert mushrooms.model.backbone == "resnet50.a1_in1k" and mushrooms.model.pretrained
    assert mushrooms.model.optimizer.opt == "adamw" and mushrooms.model.scheduler.name == "cosine"
    assert mushrooms.model.scheduler.warmup_epochs > 0 and mushrooms.model.label_smoothing > 0
    assert mushrooms.trainer.precision == "16-mixed"

    probe = compose("train", ["experiment=cifar100_efficientnet_b0_linear_probe"], tmp_path)
    assert probe.data._target_.endswith("CIFAR100DataModule")
    assert probe.model.backbone.startswith("efficientnet_b0") and probe.model.finetune == "linear_probe"

    resnet34 = compose("train", ["experiment=cifar100_resnet34_finetune"], tmp_path)
    assert resnet34.model.backbone.startswith("resnet34") and resnet34.model.pretrained
    assert (resnet34.model.finetune, resnet34.model.freeze_stages) == ("freeze_stages", 3)
    assert resnet34.model.optimizer.lr == 0.0175 and resnet34.data.batch_size == 128
    assert resnet34.trainer.max_epochs == 70

    imagenet = compose("train", ["experiment=imagenet_resnet50_scratch"], tmp_path)
    assert imagenet.model.backbone == "resnet50" and not imagenet.model.pretrained
    assert imagenet.model.optimizer.opt == "sgd"
    assert (imagenet.model.optimizer.momentum, imagenet.model.optimizer.weight_decay) == (0.9, 1e-4)
    schedule = imagenet.model.scheduler
    assert (schedule.name, imagenet.model.optimizer.lr) == ("onecycle", 0.185)
    assert (schedule.pct_start, schedule.div_factor, schedule.final_div_factor) == (0.3, 25, 1e4)
    assert imagenet.trainer.max_epochs == 60 and imagenet.trainer.strategy == "ddp"
    assert imagenet.data.batch_size * imagenet.trainer.devices == 448
    assert imagenet.trainer.precision == "16-mixed"


def test_command_line_groups_replace_the_experiments_choice(tmp_path: Path) -> None:
    cfg = compose("train", ["experiment=mushroom_resnet50", "data=imagefolder", "trainer=cpu"], tmp_path)
    assert cfg.data._target_ == "mlproj.data.imagefolder.ImageFolderDataModule"
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.model.backbone == "resnet50.a1_in1k"


def test_every_target_is_importable_without_src_prefix() -> None:
    targets = []
    for path in CONFIG_DIR.rglob("*.yaml"):
        text = path.read_text()
        targets += [line.split(":", 1)[1].strip() for line in text.splitlines() if "_target_:" in line]
        yaml.safe_load(text)
    assert targets
    assert all(t.split(".")[0] in {"mlproj", "lightning", "torch"} for t in targets), targets


def test_configs_ship_inside_the_package() -> None:
    assert Path(__import__("mlproj").__file__).parent / "configs" == CONFIG_DIR
    assert (CONFIG_DIR / "train.yaml").is_file()
    assert (ROOT / "configs").resolve() == CONFIG_DIR.resolve()


def test_help_is_a_glossary(tmp_path: Path) -> None:
    result = run_cli("train", ["--help"], cwd=tmp_path)
    assert result.returncode == 0
    for text in ("experiment:", "data:", "trainer:", "logger:", "data.root=", "model.backbone=", "ckpt_path="):
        assert text in result.stdout


@pytest.mark.parametrize("flag", ["--help", "--cfg job"])
def test_help_and_cfg_do_not_import_the_heavy_libraries(flag: str, tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from mlproj.train import main\n"
        f"sys.argv = ['train.py', *{flag.split()!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'lightning', 'timm', 'wandb', 'torchvision') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_run_dirs_started_within_one_second_never_collide(tmp_path: Path) -> None:
    dirs = {compose("train", [], tmp_path).hydra.run.dir for _ in range(3)}
    assert len(dirs) == 3
    assert all(d.startswith(str(Path("logs") / "train" / "runs")) or "/logs/train/runs/" in d for d in dirs)


def test_every_trainer_argument_can_be_set_from_the_command_line(tmp_path: Path) -> None:
    import inspect

    import lightning as L

    settable = set(compose("train", [], tmp_path).trainer) - {"_target_"}
    wired_elsewhere = {"self", "logger", "callbacks", "plugins", "model_registry", "enable_autolog_hparams"}
    assert set(inspect.signature(L.Trainer.__init__).parameters) - wired_elsewhere <= settable


@pytest.mark.slow
def test_an_installed_wheel_carries_its_configs(tmp_path: Path) -> None:
    """No source tree: the built package alone composes every experiment (configs do not vanish on install)."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("mlproj-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = (
        "import mlproj, sys; print(mlproj.__file__); from mlproj.train import main;"
        " sys.argv = ['train', '--cfg', 'job', 'experiment=mushroom_resnet50']; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(str(tmp_path / "site"))
    assert "backbone: resnet50.a1_in1k" in result.stdout
