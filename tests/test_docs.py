"""Every command line the docs show works as written.

The code blocks of README.md and docs/*.md are read line by line; a line starting `python train.py`, `python eval.py`,
`python predict.py` or `mlproj COMMAND` (after `$ ` or `VAR=value` prefixes, `\\` continuations joined) is checked:
Hydra tasks compose with the line's overrides, as `--cfg job` would, and every `mlproj` command answers `--help`
and knows the flags the line passes. `mkdocs build --strict` (links and anchors) runs in `make test` itself.
"""

import contextlib
import functools
import importlib
import io
import itertools
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from hydra.errors import HydraException

import mlproj

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIG_DIR = Path(mlproj.__file__).resolve().parent / "configs"

PYTHONS = {"python", "python3", ".venv/bin/python"}
MLPROJS = {"mlproj", ".venv/bin/mlproj"}
SCRIPTS = {"train.py": "train", "eval.py": "eval", "predict.py": "predict"}
# Hydra tasks: `mlproj NAME` and the scripts; each composes the config of its name.
HYDRA_TASKS = {"train", "eval", "predict", "prepare", "export"}
# Utilities whose KEY=VALUE arguments are overrides of a Hydra task (the one `--task` names, when given).
FORWARDS_OVERRIDES = {"vertex": "train"}
# Hydra's own command-line flags, and whether each takes a value.
HYDRA_FLAGS = {
    "-m": False,
    "--multirun": False,
    "--cfg": True,
    "-c": True,
    "--resolve": False,
    "--package": True,
    "-p": True,
    "--help": False,
    "-h": False,
    "--hydra-help": False,
    "--info": False,
    "-i": False,
}
CONTROL_OPERATORS = {"|", "||", "&&", ";", "&"}
OUTPUT_REDIRECTS = {">", ">>"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
FENCE = re.compile(r"^\s*(```|~~~)")
MENTIONS_A_COMMAND = re.compile(
    r"((python3?|\.venv/bin/python)\s+(train|eval|predict)\.py|(^|[\s;&|])(\.venv/bin/)?mlproj)(\s|$)"
)
MAX_JOBS = 32  # combinations composed per multirun line


@dataclass(frozen=True)
class Command:
    """One command as a doc shows it."""

    where: str  # README.md:12
    line: str
    program: str | None  # a Hydra task or an mlproj command
    args: tuple[str, ...]
    via_mlproj: bool

    def __str__(self) -> str:
        return f"{self.where}: {self.line}"


def code_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(first line number, text) of every line in the file's code blocks, `\\` continuations joined."""
    in_block, pending = False, None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(raw):
            in_block, pending = not in_block, None
            continue
        if not in_block:
            continue
        start, text = (pending[0], f"{pending[1]} {raw.strip()}") if pending else (number, raw.strip())
        if text.endswith("\\"):
            pending = (start, text[:-1].rstrip())
            continue
        pending = None
        yield start, text


def commands_in(text: str, where: str) -> list[Command]:
    """The mlproj commands of one shell line: `a && b | c` holds up to three."""
    text = re.sub(r"\s+#\s.*$", "", text.removeprefix("$ "))  # a trailing comment is no part of the command
    if not MENTIONS_A_COMMAND.search(text):
        return []
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    try:
        for token in lexer:
            if token in CONTROL_OPERATORS:
                segments.append([])
            else:
                segments[-1].append(token)
    except ValueError as error:  # an unclosed quote: not a line a shell would run
        raise ValueError(f"{where}: {error}: {text}") from None
    commands = []
    for tokens in segments:
        while tokens and ENV_ASSIGNMENT.match(tokens[0]):
            tokens = tokens[1:]
        if len(tokens) >= 2 and tokens[0] in PYTHONS and tokens[1] in SCRIPTS:
            commands.append(Command(where, text, SCRIPTS[tokens[1]], tuple(tokens[2:]), via_mlproj=False))
        elif tokens and tokens[0] in MLPROJS:
            program = tokens[1] if len(tokens) > 1 and not tokens[1].startswith("-") else None
            args = tokens[2:] if program else tokens[1:]
            commands.append(Command(where, text, program, tuple(args), via_mlproj=True))
    return commands


def shown_commands() -> list[Command]:
    commands = []
    for path in DOC_FILES:
        for number, text in code_lines(path):
            commands.extend(commands_in(text, f"{path.relative_to(ROOT)}:{number}"))
    return commands


SHOWN = shown_commands()


def shell_words(args: tuple[str, ...]) -> list[str]:
    """The arguments the program receives: `$HOME` expanded, `> FILE` taken away, `<` refused."""
    words, tokens = [], iter(args)
    for token in tokens:
        if token in OUTPUT_REDIRECTS:
            next(tokens, None)
        elif "<" in token or token.startswith(">"):
            raise AssertionError(f"{token!r}: the shell reads `<`/`>` as a redirection; write placeholders as RUN, DIR")
        else:
            words.append(os.path.expandvars(token))
    return words


def hydra_overrides(words: list[str]) -> tuple[list[str], bool]:
    """The overrides of a Hydra task's arguments, and whether it runs as a multirun."""
    overrides, multirun, tokens = [], False, iter(words)
    for word in tokens:
        if word in HYDRA_FLAGS:
            multirun = multirun or word in ("-m", "--multirun")
            if HYDRA_FLAGS[word]:
                next(tokens, None)
        elif word.startswith("-"):
            raise AssertionError(f"{word}: not a flag of Hydra's command line")
        else:
            overrides.append(word)
    # hparams_search configs set hydra.mode: MULTIRUN themselves.
    return overrides, multirun or any(o.partition("=")[0] == "hparams_search" for o in overrides)


def jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists of the runs a line starts: one, or each combination of a multirun's sweeps."""
    if not multirun:
        return [overrides]
    choices = []
    for text, parsed in zip(overrides, OverridesParser.create().parse_overrides(overrides), strict=True):
        if not parsed.is_sweep_override():
            choices.append([text])
            continue
        sweep = parsed.value()
        values = [str(sweep.start)] if isinstance(sweep, IntervalSweep) else list(parsed.sweep_string_iterator())
        choices.append([f"{parsed.get_key_element()}={value}" for value in values])
    return [list(job) for job in itertools.islice(itertools.product(*choices), MAX_JOBS)]


def compose_task(task: str, overrides: list[str], multirun: bool) -> None:
    """Compose as the entry point does before any work (what `--cfg job` prints); raises when it cannot."""
    importlib.import_module(f"mlproj.{task}")  # whatever the entry point registers with Hydra on import
    for job in jobs(overrides, multirun):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name=task):
            compose(config_name=task, overrides=job, return_hydra_config=True)


@functools.cache
def help_of(program: str | None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "mlproj.cli", *([program] if program else []), "--help"]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=180)


def check_utility(program: str | None, words: list[str]) -> None:
    """`mlproj PROGRAM --help` answers; a utility's help names every flag the line uses, and a parser its module
    exposes (`parse_args`) accepts the line. The flags of Hydra tasks are Hydra's own (`hydra_overrides`)."""
    answer = help_of(program)
    assert answer.returncode == 0, f"mlproj {program} --help: exit {answer.returncode}\n{answer.stderr[-2000:]}"
    if program is None or program in HYDRA_TASKS:
        return
    for flag in (word.partition("=")[0] for word in words if word.startswith("-")):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", answer.stdout), (
            f"mlproj {program} --help does not know {flag}"
        )
    from mlproj.cli import MODULES

    parse_args = getattr(importlib.import_module(MODULES.get(program, f"mlproj.{program}")), "parse_args", None)
    if parse_args is not None:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                parse_args(words)
        except SystemExit as stop:  # --help exits 0; a refused line exits 2 with argparse's message
            if stop.code not in (0, None):
                raise AssertionError(f"mlproj {program} refuses the line: {stderr.getvalue().strip()}") from None
    if program in FORWARDS_OVERRIDES:
        overrides = [word for word in words if "=" in word and not word.startswith("-")]
        task = words[words.index("--task") + 1] if "--task" in words else FORWARDS_OVERRIDES[program]
        compose_task(task, overrides, multirun=False)


def check(command: Command) -> None:
    words = shell_words(command.args)
    if command.via_mlproj:
        check_utility(command.program, words)
    if command.program in HYDRA_TASKS:
        compose_task(command.program, *hydra_overrides(words))


@pytest.mark.parametrize("command", SHOWN, ids=str)
def test_command_shown_in_the_docs_works(command: Command) -> None:
    check(command)


def test_the_docs_show_commands_of_every_kind() -> None:
    programs = {command.program for command in SHOWN}
    assert len(SHOWN) >= 40
    assert {"train", "eval", "predict", "prepare", "export", "runs", "serve", "drift", "report", "vertex"} <= programs


@pytest.mark.parametrize(
    "line",
    [
        "python train.py data.no_such_key=1",
        "python train.py experiment=no_such_experiment",
        "python train.py data.root=~/pics",
        "python train.py -m model.optimizer.lr=1e-3,3e-3 data.no_such_key=1,2",
        "python eval.py ckpt_path=logs/train/runs/<time>/checkpoints/best.ckpt",
        "mlproj runs --no-such-flag",
        "mlproj vertex submit experiment=digits --gpus 1 --dry-run",  # --output-dir is required
        "mlproj vertex submit experiment=digits data.no_such_key=1 --output-dir gs://B/P --dry-run",
        "mlproj no_such_command",
    ],
)
def test_a_command_that_would_fail_is_caught(line: str) -> None:
    (command,) = commands_in(line, "example")
    with pytest.raises((AssertionError, HydraException)):
        check(command)


def test_continuations_prompts_pipes_and_environment_are_read_as_the_shell_does(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\n"
        "$ WANDB_MODE=offline python train.py \\\n"
        "    trainer.max_epochs=2   # a comment\n"
        "mlproj runs --json | jq '.[0]' && mlproj vertex submit --output-dir gs://B/P --dry-run > job.yaml\n"
        "```\n"
        "`python train.py not=checked` outside code blocks\n"
    )
    commands = [command for number, text in code_lines(page) for command in commands_in(text, str(number))]
    assert [(c.where, c.program, c.args) for c in commands] == [
        ("2", "train", ("trainer.max_epochs=2",)),
        ("4", "runs", ("--json",)),
        ("4", "vertex", ("submit", "--output-dir", "gs://B/P", "--dry-run", ">", "job.yaml")),
    ]


def section(text: str, heading: str) -> str:
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0].strip()


@pytest.mark.parametrize("heading", ["Two commands", "A five-minute tour", "Experiments"])
def test_readme_and_the_docs_home_say_the_same(heading: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    home = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert section(readme, heading) == section(home, heading)


def test_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)", readme))
    pages = {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")} - {"docs/index.md"}
    assert linked == pages
