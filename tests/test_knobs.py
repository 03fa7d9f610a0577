"""Every knob of every Hydra task, walked with bad values of its kind (mlproj.knobs.KNOBS, the description the tasks
check before any work): each is refused in one line naming the key. New knobs are covered by adding them there.

Paths are relative to the folder each test runs in (`inputs`), which holds a file `x.ckpt` and a folder `pics`: the
bad paths are a missing one, one of the wrong kind, and an output below a regular file (tests run as root here, so a
mode bit cannot make a folder unwritable; a file in the way can, for anyone).
"""

import copy
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from mlproj.composition import CONFIG_DIR, compose
from mlproj.errors import ConfigError
from mlproj.knobs import KNOBS, Knob, check_config, select

from conftest import ROOT

MLPROJ = str(Path(sys.executable).with_name("mlproj"))

# The least each task needs to compose with its required values given (paths are made by `inputs`).
TASKS = {
    "train": [],
    "eval": ["ckpt_path=x.ckpt"],
    "predict": ["ckpt_path=x.ckpt", "input=pics"],
    "export": ["ckpt_path=x.ckpt"],
    "prepare": ["data=imagefolder", "data.root=pics"],
}
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
# Bad paths of each rule, as `inputs` lays the folder out.
BAD_PATHS = {
    "file": ["nosuch.ckpt", "pics"],
    "folder": ["nosuch", "x.ckpt"],
    "file_or_folder": ["nosuch"],
    "output": ["x.ckpt", "x.ckpt/below"],
    "output_file": ["pics", "x.ckpt/below.csv"],
}


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory of a test: a file x.ckpt and a folder pics/ that the task overrides name."""
    (tmp_path / "x.ckpt").write_bytes(b"not read: the knobs check paths, the tasks read them")
    (tmp_path / "pics").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def bad_values(knob: Knob) -> list[str]:
    """Override values of the wrong kind, out of range or naming the wrong path, as a user would type them."""
    values = [] if knob.nullable else ["null"]
    if knob.path:
        return [*values, *BAD_PATHS[knob.path]]
    if knob.choices:
        return [*values, "nosuch"]
    if knob.kind in (str, Path):  # free text: nothing but a missing value is wrong
        return values
    values.append("abc")
    if knob.low is not None:
        values.append(str(knob.low if knob.exclusive else knob.low - 1 if knob.kind is int else knob.low - 0.5))
    if knob.high is not None:
        values.append(str(knob.high if knob.exclusive else knob.high + 1))
    if knob.kind is int:
        values.append("1.5")
    return values


@cache
def shipped(task: str) -> Any:
    """The task's config as composed with TASKS' overrides (composing takes 0.2 s; the table sets one key on a copy)."""
    return compose(task, TASKS[task])


def with_override(task: str, key: str, value: str) -> Any:
    """The task's config with `key=value` as the command line would set it: the value parsed by Hydra's grammar."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    cfg = copy.deepcopy(shipped(task))
    OmegaConf.update(cfg, key, OverridesParser.create().parse_override(f"{key}={value}").value(), merge=False)
    return cfg


def cases() -> list[tuple[str, str, str]]:
    """Each bad value of each knob each task's config holds; not the paths a task does not check there (train's
    digits writes its own data.root: prepare's folder of images checks it)."""
    from omegaconf import DictConfig, OmegaConf

    found = []
    for task in TASKS:
        cfg = shipped(task)
        for key, knob in KNOBS.items():
            # The key, even where its value is Hydra's run dir, which resolves in a run only (export's output_dir).
            parent, _, name = key.rpartition(".")
            node = OmegaConf.select(cfg, parent) if parent else cfg
            if not (isinstance(node, DictConfig) and name in node):
                continue
            found += [
                (task, key, value)
                for value in bad_values(knob)
                if not (knob.path and knob.unless and knob.unless(cfg, value) and value in BAD_PATHS[knob.path])
            ]
    return found


CASES = cases()


def test_the_table_covers_every_task_and_most_knobs() -> None:
    assert {task for task, _, _ in CASES} == set(TASKS)
    assert {key for _, key, _ in CASES} == set(KNOBS), "every knob is walked by some task"
    assert len(CASES) >= 200  # the count is reported in the notes


@pytest.mark.parametrize(("task", "key", "value"), CASES)
def test_a_bad_value_of_any_knob_is_one_line_naming_it(task: str, key: str, value: str, inputs: Path) -> None:
    before = sorted(inputs.rglob("*"))
    with pytest.raises(ConfigError) as raised:
        check_config(with_override(task, key, value))
    message = str(raised.value)
    assert message.startswith(f"{key}=") and "\n" not in message, message
    assert sorted(inputs.rglob("*")) == before, "nothing written"


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["data=imagefolder", "data.root=nosuch"], "data.root=nosuch does not exist: the folder of images"),
        (["data=imagefolder", "data.root=x.ckpt"], "data.root=x.ckpt is a file, not a folder: the folder of images"),
        (["paths.log_dir=x.ckpt/logs"], "paths.log_dir=x.ckpt/logs cannot be written ({inputs}/x.ckpt is a file)"),
        (["ckpt_path=pics"], "ckpt_path=pics is a folder, not a file: a .ckpt file or gs:// URL"),
        (["data.root=123"], "data.root=123 is not a path to an existing folder: the folder of images"),
    ],
)
def test_paths_are_refused_in_words_that_say_why(overrides: list[str], line: str, inputs: Path) -> None:
    with pytest.raises(ConfigError, match="^" + line.format(inputs=inputs).replace("(", r"\(").replace(")", r"\)")):
        check_config(compose("train", overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        ["data.root=nosuch"],  # digits writes its own folder
        ["data=cifar10", "data.root=nosuch"],  # downloaded when missing
        ["data=imagefolder", "data.root=nosuch", "data.shards=gs://bucket/shards"],  # streamed, root unread
        ["ckpt_path=last"],  # the newest checkpoint of the experiment, found by train
        ["ckpt_path=gs://bucket/run/last.ckpt", "paths.checkpoint_dir=gs://bucket/run"],  # read and written there
        ["paths.log_dir=new/logs", "paths.cache_dir=new/cache"],  # made by the run
    ],
)
def test_paths_a_task_makes_or_finds_itself_pass(overrides: list[str], inputs: Path) -> None:
    check_config(compose("train", overrides))


@pytest.mark.parametrize(
    ("task", "overrides", "line"),
    [
        ("train", ["data=cifar10", "data.download=false", "data.root=nosuch"], "data.root=nosuch does not exist"),
        ("eval", ["ckpt_path=last"], "ckpt_path=last does not exist"),  # only train resumes
    ],
)
def test_the_exceptions_are_narrow(task: str, overrides: list[str], line: str, inputs: Path) -> None:
    with pytest.raises(ConfigError, match=f"^{line}"):
        check_config(compose(task, overrides))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_passes_as_shipped(experiment: str, inputs: Path) -> None:
    """With its data in place (`dvc pull` fetches what the experiment names), in a folder the run may write in."""
    cfg = compose("train", [f"experiment={experiment}"])
    Path(select(cfg, "data.root")).mkdir(parents=True, exist_ok=True)
    check_config(cfg)


@pytest.mark.parametrize("task", TASKS)
def test_every_task_passes_as_shipped(task: str, inputs: Path) -> None:
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
        ("eval", ["ckpt_path=nosuch.ckpt"], "error: ckpt_path=nosuch.ckpt does not exist: a .ckpt file or gs:// URL"),
        ("predict", ["ckpt_path=x.ckpt", "input=pics", "top_k=0"], "error: top_k=0 is not an integer >= 1"),
        ("predict", ["ckpt_path=x.ckpt", "input=pics", "top_k=abc"], "error: top_k=abc is not an integer >= 1"),
        ("predict", ["ckpt_path=x.ckpt", "input=nosuch"], "error: input=nosuch does not exist: an image file or"),
        ("export", ["ckpt_path=x.ckpt", "output_dir=x.ckpt/out"], "error: output_dir=x.ckpt/out cannot be written ("),
        ("prepare", ["data=imagefolder"], "error: data.root is required: give data.root=VALUE (the folder of images"),
        ("prepare", ["data=imagefolder", "data.root=x.ckpt"], "error: data.root=x.ckpt is a file, not a folder: the"),
    ],
)
def test_the_commands_stop_before_any_work_with_one_line(script: str, args: list[str], line: str, inputs: Path) -> None:
    run_dir = inputs / "run"
    before = sorted(inputs.rglob("*"))
    command = [MLPROJ, script] if script in ("prepare", "export") else [sys.executable, str(ROOT / f"{script}.py")]
    result = subprocess.run([*command, *args, f"hydra.run.dir={run_dir}"], cwd=inputs, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(line) and result.stderr.strip().count("\n") == 0, result.stderr
    assert sorted(inputs.rglob("*")) == before, "nothing written, no run dir"
