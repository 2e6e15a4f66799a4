"""`lace slides`: notebooks as reveal.js decks for design reviews, offline
(`concurrency.slides`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from concurrency.cli.common import add_format_arg
from concurrency.cli.output import Result
from concurrency.cli.progress import Progress
from concurrency.report import add_report_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_report_arguments(p)
    p.description = (
        "Execute notebooks/NN_*.py headless and write each as NN_*.slides.html, a reveal.js "
        "deck that opens offline (each Markdown cell starts a slide; code is hidden)."
    )
    p.set_defaults(out=Path("slides"))
    for action in p._actions:
        if action.dest == "out":
            action.help = "folder to write the decks into (default: slides)"
    p.add_argument(
        "only",
        nargs="*",
        metavar="NN",
        help="only the notebooks whose names start with these (e.g. 01 05); default all",
    )
    add_format_arg(p, ("text", "json"))


def run(args: argparse.Namespace, progress: Progress) -> Result:
    from concurrency.report import check_timeout, report_parameters
    from concurrency.slides import build_slides

    check_timeout(args.timeout)

    def on_notebook(i: int, n: int, path: Path) -> None:
        progress.update(f"running notebook {i}/{n}: {path.name}")

    decks = build_slides(
        args.notebooks,
        args.out,
        args.timeout,
        only=args.only,
        parameters=report_parameters(args),
        on_notebook=on_notebook,
    )
    if args.format == "json":
        return Result.json({"decks": [str(d) for d in decks]})
    return Result.lines([f"wrote {d}" for d in decks])
