"""The `lace` command line (also `python -m concurrency`).

Every command prints its result on stdout and nothing else (`--format json`: exactly one JSON
document; whatever a library writes while the command runs goes to stderr), progress of work
that lasts more than two seconds on stderr, and any problem as one line on stderr
(`lace: error: …`) with a non-zero exit status: a bad name, value or file never ends in a
traceback.

Startup is fast: the top-level parser knows each command only by its name and summary
(`COMMANDS`); a command's module — its options, and through them the registries it offers — is
imported only when that command is run or its help is asked for, and the heavy libraries
(NumPy, the engine probe, the notebook tooling) only inside the functions that run the work.
Each command module defines `add_arguments(parser)` and `run(args, progress) -> Result`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from types import ModuleType

from concurrency import __version__
from concurrency.cli.common import LaceParser
from concurrency.cli.output import Result, stdout_to_stderr
from concurrency.cli.progress import Progress
from concurrency.errors import LaceError


@dataclass(frozen=True)
class Command:
    """A `lace` subcommand: its name, its one-line summary, and the module that defines it."""

    name: str
    summary: str

    @property
    def module(self) -> str:
        return f"concurrency.cli.cmd_{self.name}"

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


COMMANDS: tuple[Command, ...] = (
    Command("models", "list the model presets (--help: the config file keys)"),
    Command("graph", "build a layer graph: JSON, DOT or SVG"),
    Command("branches", "the fork regions a detector finds, and the forks it turns down"),
    Command("plan", "plan memory under allocator policies; count races and uses after reuse"),
    Command("hazards", "list the hazards (races, uses after reuse) of policies' plans"),
    Command("run", "execute plans on the CPU and compare with float64"),
    Command("fidelity", "compare LACE's plans with ggml-alloc itself, or with the running engine"),
    Command("simulate", "predict a timeline on a GPU spec: streams vs one"),
    Command("calibrate", "fit the simulator on a recording; held-out error; a calibrated spec"),
    Command("sweep", "plan and simulate a grid of cases on a Dask cluster, into Parquet"),
    Command("record", "on a GPU: the race experiment and replay timings, written under data/"),
    Command("bench", "one stream vs the schedule's streams on a GPU, or --from-data without one"),
    Command("report", "execute every notebook headless and write HTML into reports/"),
    Command("slides", "notebooks as reveal.js slides for design reviews, offline, into slides/"),
)
_BY_NAME = {c.name: c for c in COMMANDS}


def build_parser(with_options: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The `lace` parser. Only the commands in `with_options` (default: all) get their
    options; the others are listed by name and summary. Running one command (or `lace --help`)
    so imports one command's module (or none)."""
    parser = LaceParser(
        prog="lace",
        description="LACE, the Linear-Attention Concurrency Explorer. Results go to stdout "
        "(--format json: JSON only); progress and errors to stderr.",
    )
    parser.add_argument("--version", action="version", version=f"lace {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.summary, description=command.summary)
        if with_options is None or command.name in with_options:
            command.load().add_arguments(p)
            p.add_argument(
                "-q",
                "--quiet",
                action="store_true",
                help="no progress lines on stderr (errors are still printed)",
            )
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The command `argv` runs: its first word that is not an option (the top-level options,
    -h and --version, take no value)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in _BY_NAME else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run `lace` with `argv` (default: the process's arguments); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    name = _command_in(argv)
    args = build_parser(with_options=[name] if name else []).parse_args(argv)
    command = _BY_NAME[args.command].load()
    progress = Progress(sys.stderr, enabled=not args.quiet)
    try:
        with stdout_to_stderr() as stdout:
            result: Result = command.run(args, progress)
    except LaceError as exc:
        progress.close()
        print(f"lace: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        progress.close()
        print("lace: interrupted", file=sys.stderr)
        return 130
    finally:
        progress.close()
    try:
        stdout.write(result.render())
        stdout.flush()
    except BrokenPipeError:  # `lace … | head`: the reader has what it wanted
        _silence_stdout()
    return result.status


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush does not
    print a second error."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


__all__ = ["COMMANDS", "build_parser", "main"]
