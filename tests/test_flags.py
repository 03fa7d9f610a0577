"""Every flag of every mlproj utility, walked with bad values of its kind: each is refused before any work, in one
line naming the flag, with exit status 2 and nothing written.

The cases are read from the commands' own parsers (each flag's type is a Knob, mlproj.knobs), so a new flag is
walked as soon as it exists, and a new utility fails `test_every_utility_is_in_the_table` until it is added here.
"""

import argparse
import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_knobs import bad_values

from mlproj.cli import COMMANDS
from mlproj.flags import check_paths
from mlproj.knobs import Knob

MLPROJ = str(Path(sys.executable).with_name("mlproj"))
HYDRA_TASKS = {"prepare", "train", "eval", "predict", "export"}  # walked by test_knobs.py
# Each utility's module, the least command line it accepts (positionals first; paths as `inputs` lays them out), and
# for a flag that cannot go with that line, the least line it goes with.
UTILITIES: dict[str, tuple[str, list[str], dict[str, list[str]]]] = {
    "serve": ("mlproj.serve.command", ["x.ckpt"], {}),
    "demo": ("mlproj.serve.demo", ["x.ckpt"], {}),
    "vertex": ("mlproj.cloud.vertex", ["submit", "--output-dir", "gs://bucket/runs"], {}),
    "runs": ("mlproj.runs", [], {}),
    "drift": ("mlproj.drift", ["--reference", "pics", "--images", "pics"], {}),
    "report": ("mlproj.reports.run_report", ["pics"], {}),
    "compare": (
        "mlproj.compare",
        ["x.ckpt", "x.ckpt"],
        {"--a": ["--b", "x.ckpt", "x.ckpt"], "--b": ["--a", "x.ckpt", "x.ckpt"]},  # two groups, not two runs
    ),
}


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory: a file x.ckpt and a folder pics/; no $MODEL_PATH or $PORT to stand in for flags."""
    (tmp_path / "x.ckpt").write_bytes(b"not read: flags are checked before any work")
    (tmp_path / "pics").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MODEL_PATH", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    return tmp_path


def module(command: str) -> Any:
    return importlib.import_module(UTILITIES[command][0])


def without(argv: list[str], flag: str) -> list[str]:
    """`argv` less `flag` and its value."""
    if flag not in argv:
        return argv
    at = argv.index(flag)
    return argv[:at] + argv[at + 2 :]


def flag_cases(command: str) -> list[tuple[str, str, str, list[str]]]:
    """(command, what is wrong, the name the line must say, the command line) for each flag of the command."""
    _, least_line, least_lines = UTILITIES[command]
    leading = 1 if command == "vertex" else 0  # `submit`
    found = []
    for action in module(command).parser()._actions:
        if action.nargs == 0:  # --help, --json, --dry-run: no value to get wrong
            continue
        name = action.option_strings[-1] if action.option_strings else action.metavar
        least = least_lines.get(name, least_line)
        knob = action.type
        if isinstance(knob, Knob):
            for value in (v for v in bad_values(knob) if v != "null"):  # a flag is null by being left out
                if action.option_strings:
                    argv = [*without(least, name), name, value]
                else:
                    argv = [*least[:leading], value, *least[leading + 1 :]]
                found.append((command, value, name, argv))
        if action.option_strings:
            found.append((command, "(no value)", name, [*without(least, name), name]))
            if action.required:
                found.append((command, "(left out)", name, without(least, name)))
        elif isinstance(knob, Knob):
            found.append((command, "(left out)", name, [arg for arg in least if arg.startswith("-")]))
    return found


CASES = [case for command in UTILITIES for case in flag_cases(command)]


def parse(command: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | str | None, str, str]:
    """As the command's main() does before any work: the line, then the paths it names; (exit status, out, err)."""
    try:
        check_paths(module(command).parser(), module(command).parse_args(argv))
    except SystemExit as stop:
        out, err = capsys.readouterr()
        return stop.code, out, err
    out, err = capsys.readouterr()
    return 0, out, err


def test_every_utility_is_in_the_table() -> None:
    assert set(COMMANDS) - HYDRA_TASKS == set(UTILITIES)


@pytest.mark.parametrize("command", UTILITIES)
def test_every_flag_that_takes_a_value_is_a_knob_or_free_text(command: str) -> None:
    """A flag parsed by `int`, `float` or a function of its own would escape the table; free text (--host,
    --project) has no bad value but its missing one."""
    for action in module(command).parser()._actions:
        assert action.type is None or isinstance(action.type, Knob), action.option_strings or action.dest
        assert not action.choices, "choices are a Knob's, so the error is one line naming the flag"


@pytest.mark.parametrize("command", UTILITIES)
def test_the_least_command_line_parses(command: str, inputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """So that each case below is refused for its bad value alone."""
    assert parse(command, UTILITIES[command][1], capsys)[0] == 0


def test_the_table_covers_each_kind_of_mistake() -> None:
    assert {"(no value)", "(left out)", "0", "-1", "abc", "1.5", "65536", "nosuch", "x.ckpt/below"} <= {
        wrong for _, wrong, _, _ in CASES
    }
    assert len(CASES) >= 80  # the count is reported in the notes


@pytest.mark.parametrize(("command", "wrong", "name", "argv"), CASES)
def test_a_bad_flag_is_one_line_naming_it(
    command: str, wrong: str, name: str, argv: list[str], inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(inputs.rglob("*"))
    code, out, err = parse(command, argv, capsys)
    assert code == 2, (argv, out, err)
    assert out == "" and err.count("\n") == 1 and err.startswith("error: mlproj ") and name in err, err
    if not wrong.startswith("("):
        named = f" {name} {wrong} " if name.startswith("-") else f" {name}={wrong} "
        assert named in err, err
    assert "Traceback" not in err
    assert sorted(inputs.rglob("*")) == before, "nothing written"


def test_help_still_answers(capsys: pytest.CaptureFixture[str]) -> None:
    for command in UTILITIES:
        code, out, _ = parse(command, ["--help"], capsys)
        assert code == 0 and out.startswith("usage: mlproj "), command


@pytest.mark.parametrize("command", UTILITIES)
def test_a_flag_help_is_its_knobs_meaning_and_default(command: str) -> None:
    """What `--help` says of a flag is what its one-line error says (the Knob's meaning), with the default."""
    for action in module(command).parser()._actions:
        if isinstance(action.type, Knob) and action.option_strings:
            assert action.help.startswith(action.type.meaning.replace("%", "%%")), action.option_strings
            assert action.default in (None, []) or "default: %(default)s" in action.help, action.option_strings


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["serve", "x.ckpt", "--port", "70000"], "mlproj serve --port 70000 is not an integer from 1 to 65535"),
        (["demo", "nosuch.onnx"], "mlproj demo MODEL_PATH=nosuch.onnx does not exist: a .ckpt file (or gs:// URL)"),
        (["vertex", "submit", "--output-dir=gs://b/r", "--nodes", "0"], "mlproj vertex submit --nodes 0 is not an"),
        (["runs", "--status", "finished,done"], "mlproj runs --status done is not one of running, finished,"),
        (["drift", "--images", "pics"], "mlproj drift: the following arguments are required: --reference"),
        (["report", "pics", "--copy-to", "x.ckpt/reports"], "mlproj report --copy-to x.ckpt/reports cannot be"),
        (["compare", "x.ckpt", "x.ckpt", "--alpha", "1"], "mlproj compare --alpha 1 is not a number strictly between"),
    ],
)
def test_the_real_commands_end_with_one_line(argv: list[str], line: str, inputs: Path) -> None:
    before = sorted(inputs.rglob("*"))
    result = subprocess.run([MLPROJ, *argv], cwd=inputs, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: {line}") and result.stderr.count("\n") == 1, result.stderr
    assert sorted(inputs.rglob("*")) == before, "nothing written"


def test_a_default_from_the_environment_is_checked_like_a_flag(
    inputs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORT", "http")
    code, _, err = parse("serve", ["x.ckpt"], capsys)
    assert code == 2 and err.startswith("error: mlproj serve --port http is not an integer from 1 to 65535")
    monkeypatch.setenv("MODEL_PATH", "gs://bucket/model.onnx")  # a URL is read where it is, when the model loads
    monkeypatch.setenv("PORT", "8080")
    args = module("serve").parse_args([])
    assert (args.model_path, args.port) == ("gs://bucket/model.onnx", 8080)


def test_knob_flags_parse_to_their_kind(inputs: Path) -> None:
    args = module("drift").parse_args(["--reference", "pics", "--images", "pics", "--alpha", "0.01", "--workers", "0"])
    assert (args.reference, args.alpha, args.workers, args.max_images) == (Path("pics"), 0.01, 0, 300)
    assert module("runs").parse_args(["--status", "failed, stale"]).status == ("failed", "stale")
    assert isinstance(module("serve").parser(), argparse.ArgumentParser)


def test_a_well_formed_line_parses_wherever_it_is_read(inputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The docs' examples name placeholder paths: parse_args takes them; main() asks the file system next."""
    args = module("report").parse_args(["logs/train/runs/RUN"])
    with pytest.raises(SystemExit):
        check_paths(module("report").parser(), args)
    assert capsys.readouterr().err.startswith("error: mlproj report RUN_DIR=logs/train/runs/RUN does not exist")
