"""Every knob of every Hydra task, walked with bad values of its kind (mlproj.knobs.KNOBS, the description the tasks
check before any work): each is refused in one line naming the key. New knobs are covered by adding them there."""

import subprocess
import sys
from pathlib import Path

import pytest

from mlproj.composition import CONFIG_DIR, compose
from mlproj.errors import ConfigError
from mlproj.knobs import KNOBS, MISSING, Knob, check_config, select

from conftest import ROOT

MLPROJ = str(Path(sys.executable).with_name("mlproj"))

# The least each task needs to compose with its required values given.
TASKS = {
    "train": [],
    "eval": ["ckpt_path=x.ckpt"],
    "predict": ["ckpt_path=x.ckpt", "input=pics"],
    "export": ["ckpt_path=x.ckpt"],
    "prepare": ["data=imagefolder", "data.root=pics"],
}
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def bad_values(knob: Knob) -> list[str]:
    """Override values of the wrong kind or out of range, as a user would type them."""
    values = [] if knob.nullable else ["null"]
    if knob.choices:
        return [*values, "nosuch"]
    if knob.kind is str:
        return values
    values.append("abc")
    if knob.low is not None:
        values.append(str(knob.low - 1 if knob.kind is int else knob.low - 0.5))
    if knob.high is not None:
        values.append(str(knob.high + 1))
    if knob.kind is int:
        values.append("1.5")
    return values


def cases() -> list[tuple[str, str, str]]:
    found = []
    for task, needed in TASKS.items():
        cfg = compose(task, needed)
        for key, knob in KNOBS.items():
            if select(cfg, key) is not MISSING:
                found += [(task, key, value) for value in bad_values(knob)]
    return found


CASES = cases()


def test_the_table_covers_every_task_and_most_knobs() -> None:
    assert {task for task, _, _ in CASES} == set(TASKS)
    assert len({key for _, key, _ in CASES}) >= 30 and len(CASES) >= 150  # the count is reported in the notes


@pytest.mark.parametrize(("task", "key", "value"), CASES)
def test_a_bad_value_of_any_knob_is_one_line_naming_it(task: str, key: str, value: str) -> None:
    cfg = compose(task, [*TASKS[task], f"{key}={value}"])
    with pytest.raises(ConfigError) as raised:
        check_config(cfg)
    message = str(raised.value)
    assert message.startswith(f"{key}=") and "\n" not in message, message


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_passes_as_shipped(experiment: str) -> None:
    check_config(compose("train", [f"experiment={experiment}"]))


@pytest.mark.parametrize("task", TASKS)
def test_every_task_passes_as_shipped(task: str) -> None:
    check_config(compose(task, TASKS[task]))


@pytest.mark.parametrize(
    ("script", "args", "line"),
    [
        ("train", ["data.batch_size=0"], "error: data.batch_size=0 is not an integer >= 1: images per device per step"),
        ("train", ["data.num_workers=-1"], "error: data.num_workers=-1 is not an integer >= 0: loader processes"),
        (
            "eval",
            [],
            "error: ckpt_path is required: give ckpt_path=VALUE (a .ckpt file or gs:// URL; train also takes last)",
        ),
        ("predict", ["ckpt_path=x.ckpt", "input=pics", "top_k=0"], "error: top_k=0 is not an integer >= 1"),
        ("predict", ["ckpt_path=x.ckpt", "input=pics", "top_k=abc"], "error: top_k=abc is not an integer >= 1"),
        ("prepare", ["data=imagefolder"], "error: data.root is required: give data.root=VALUE (the folder of images"),
    ],
)
def test_the_commands_stop_before_any_work_with_one_line(
    script: str, args: list[str], line: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    command = [MLPROJ, script] if script == "prepare" else [sys.executable, str(ROOT / f"{script}.py")]
    result = subprocess.run([*command, *args, f"hydra.run.dir={run_dir}"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(line) and result.stderr.strip().count("\n") == 0, result.stderr
    assert not run_dir.exists(), "nothing written"
