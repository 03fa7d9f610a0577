"""W&B sweep files: W&B's own sweep engine accepts them, and the runs it proposes start train.py as an agent would."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlproj.run_record import RUN_ID_FILE

from conftest import ROOT, make_image_folder, read_summary

SWEEP_DIR = ROOT / "src" / "mlproj" / "configs" / "sweep"
CHECK = ROOT / "src" / "mlproj" / "sweep_check.py"
# Each sweep file is named after the experiment it tunes.
SWEEPS = ["mushroom_resnet50", "cifar100_resnet34_finetune"]
TUNED = {
    "model.optimizer.lr",
    "data.batch_size",
    "model.optimizer.weight_decay",
    "model.label_smoothing",
    "trainer.max_epochs",
}


@pytest.fixture(scope="module")
def sweeps_python() -> Path:
    """The small venv `make sweep-validator` builds: W&B's `sweeps` pins numpy<2, so it lives apart from .venv."""
    subprocess.run(["make", "-s", "--no-print-directory", "sweep-validator"], cwd=ROOT, check=True, timeout=900)
    return ROOT / ".venv" / "sweeps-validator" / "bin" / "python"


def check(sweeps_python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sweeps_python, CHECK, *args], capture_output=True, text=True, timeout=120)


def sweep_file(name: str) -> Path:
    return SWEEP_DIR / f"{name}.yaml"


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_file_passes_wandb_schema(name: str, sweeps_python: Path) -> None:
    result = check(sweeps_python, str(sweep_file(name)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok {sweep_file(name)}"
    config = yaml.safe_load(sweep_file(name).read_text())
    assert config["program"] == "train.py" and config["method"] == "bayes"
    assert config["metric"] == {"name": "val/acc", "goal": "maximize"}
    assert config["early_terminate"]["type"] == "hyperband" and config["run_cap"] > 0
    assert set(config["parameters"]) == TUNED
    assert config["command"][:4] == ["${env}", "${interpreter}", "${program}", f"experiment={name}"]
    assert config["command"][-1] == "${args_no_hyphens}"


def test_broken_sweep_file_is_rejected(sweeps_python: Path, tmp_path: Path) -> None:
    config = yaml.safe_load(sweep_file("mushroom_resnet50").read_text())
    config["metric"]["goal"] = "maximise"
    config["parameters"]["model.optimizer.lr"].update(min=0.1, max=0.001)
    config["command"][-1] = "${args}"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(config))
    result = check(sweeps_python, str(broken))
    assert result.returncode == 1
    errors = result.stderr.splitlines()
    assert any("'maximise' is not one of ['minimize', 'maximize']" in line for line in errors)
    assert any("model.optimizer.lr" in line for line in errors)  # min above max
    assert any("${args_no_hyphens}" in line for line in errors)
    assert all(line.startswith(f"error: {broken}: ") for line in errors)


def agent_command(sweep: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The command `wandb agent` starts for one proposed run, built by the agent's own helpers and rules."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    command = {"program": sweep["program"], "args": {k: {"value": v} for k, v in params.items()}}
    variables = sweep_utils.create_sweep_command_args(command)
    variables.update(interpreter=["python"], program=[command["program"]], env=["/usr/bin/env"])
    rendered: list[str] = []
    for part in sweep_utils.create_sweep_command(list(sweep["command"])):
        part = str(part)
        if part.startswith("${") and part.endswith("}"):
            rendered += variables.get(part[2:-1]) or []
        else:
            rendered.append(part)
    return rendered


@pytest.mark.slow
@pytest.mark.parametrize("name", SWEEPS)
def test_proposed_runs_train_through_the_agent_command(name: str, sweeps_python: Path, tmp_path: Path) -> None:
    """W&B's engine proposes two runs; the first trains (one fast_dev_run through the agent's command line)."""
    proposed = check(sweeps_python, str(sweep_file(name)), "--propose", "2")
    assert proposed.returncode == 0, proposed.stderr
    parameter_sets = json.loads(proposed.stdout)
    assert len(parameter_sets) == 2 and all(set(p) == TUNED for p in parameter_sets)
    assert parameter_sets[0] != parameter_sets[1]
    folder = make_image_folder(tmp_path / "images", per_class=6)
    sweep = yaml.safe_load(sweep_file(name).read_text())
    # The agent runs `python` from PATH in the directory it was started in: the repo root, in the project's venv.
    env = {**os.environ, "WANDB_MODE": "offline", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    params = parameter_sets[0]
    logs = tmp_path / "logs"
    command = agent_command(sweep, params)
    assert command[:3] == ["/usr/bin/env", "python", "train.py"]
    offline = ["data=imagefolder", f"data.root={folder}", "trainer=cpu", "model.pretrained=false"]
    small = ["trainer.fast_dev_run=true", "data.image_size=32", "data.num_workers=0"]
    where = [f"paths.log_dir={logs}", f"paths.cache_dir={tmp_path / '.cache'}"]
    result = subprocess.run(
        [*command, *offline, *small, *where], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (logs / "train" / "runs").iterdir()
    summary = read_summary(run_dir)
    assert summary["status"] == "finished" and summary["experiment"] == name
    resolved = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert resolved["model"]["optimizer"]["lr"] == pytest.approx(params["model.optimizer.lr"])
    assert resolved["model"]["label_smoothing"] == pytest.approx(params["model.label_smoothing"])
    assert resolved["data"]["batch_size"] == params["data.batch_size"]
    assert resolved["trainer"]["max_epochs"] == params["trainer.max_epochs"]
    # fast_dev_run swaps loggers for a dummy, but the W&B logger was built for the run: it kept its run id.
    assert (run_dir / RUN_ID_FILE).is_file(), "the sweep's runs must log to W&B"
