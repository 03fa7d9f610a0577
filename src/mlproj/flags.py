"""The argument parser of the mlproj utilities (serve, demo, vertex, runs, drift, report, compare): their flags take
Knobs (mlproj.knobs) as argparse types, and a mistake ends the way every mlproj command ends on one, in one line.

argparse's own ending is two lines (the usage, then `prog: error: ...`); here it is `error: mlproj serve --port
70000 is not an integer from 1 to 65535: the port to listen on` and exit status 2, before any work. A command's
main() parses its line, then `check_paths` asks the file system about the paths it names. `--help` is argparse's.
Light (the standard library and mlproj.knobs), so `mlproj runs` and `--help` answer at once.
"""

import argparse
import re
import sys
from typing import Any, NoReturn

from mlproj.knobs import Knob, path_problem

# argparse's message about one argument: "argument --port: MESSAGE" (or "argument -h/--help: ...").
ABOUT_ONE = re.compile(r"argument (?:\S+/)?(?P<name>\S+): (?P<message>.*)", re.DOTALL)


class FlagParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the flag (`--port 70000 ...`) or the positional
    (`RUN_DIR=x ...`), its value and the fix; the Knob that refused a value supplies the value and the fix."""

    def add_argument(self, *names: str, note: str | None = None, **options: Any) -> argparse.Action:
        """A flag whose type is a Knob says what it means in one place, the Knob: its help is the Knob's meaning,
        then its default (when it has one: not None, not an empty list) and `note`, what else a user should know. An
        explicit `help` is kept."""
        knob = options.get("type")
        if isinstance(knob, Knob) and "help" not in options:
            said = [] if options.get("default") in (None, []) else ["default: %(default)s"]
            said += [note.replace("%", "%%")] if note else []
            options["help"] = knob.meaning.replace("%", "%%") + (f" ({'; '.join(said)})" if said else "")
        return super().add_argument(*names, **options)

    def error(self, message: str) -> NoReturn:
        about = ABOUT_ONE.fullmatch(message)
        if about is None:  # argparse's about the whole line: "the following arguments are required: --reference"
            line = f"{self.prog}: {message} (see {self.prog} --help)"
        else:
            name, message = about["name"], about["message"]
            line = f"{self.prog} {name}{' ' if name.startswith('-') else '='}{message}"
            if ": " not in message:  # argparse's own words ("expected one argument"), not a Knob's "VALUE ...: MEANING"
                line += f" (see {self.prog} --help)"
        print(f"error: {' '.join(line.split())}", file=sys.stderr)
        raise SystemExit(2)


def check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """`args` once every path its flags name is what their Knob says (exists, is a folder, can be written); else
    `parser`'s one-line error. Apart from parsing, so that a well-formed line parses anywhere (the docs' examples)
    and the file system is asked once, before any work."""
    for action in parser._actions:  # argparse's list of the arguments the parser takes
        knob = action.type
        if not (isinstance(knob, Knob) and knob.path):
            continue
        given = getattr(args, action.dest)
        for value in given if isinstance(given, list) else [given]:
            problem = None if value is None else path_problem(str(value), knob.path, knob.urls)
            if problem is not None:
                name = action.option_strings[-1] if action.option_strings else action.metavar or action.dest
                parser.error(f"argument {name}: {value} {problem}: {knob.meaning}")
    return args
