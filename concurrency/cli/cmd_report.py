"""`lace report`: execute every notebook headless and write HTML (`concurrency.report`).

The notebook tooling is imported only when the report runs; `--format json` prints the list
of pages written (the kernels' own output never reaches stdout)."""

from __future__ import annotations

import argparse
from pathlib import Path

from concurrency.cli.common import add_format_arg
from concurrency.cli.output import Result
from concurrency.cli.progress import Progress
from concurrency.report import add_report_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_report_arguments(p)
    add_format_arg(p, ("text", "json"))


def run(args: argparse.Namespace, progress: Progress) -> Result:
    from concurrency.report import build_report, check_timeout, report_parameters

    check_timeout(args.timeout)

    def on_notebook(i: int, n: int, path: Path) -> None:
        progress.update(f"running notebook {i}/{n}: {path.name}")

    pages = build_report(
        args.notebooks,
        args.out,
        args.timeout,
        on_notebook=on_notebook,
        parameters=report_parameters(args),
    )
    if args.format == "json":
        return Result.json(
            {
                "pages": [str(p) for p in pages],
                "notebooks": [str(p.with_suffix(".ipynb")) for p in pages],
            }
        )
    return Result.lines([f"wrote {page}" for page in pages])
