"""`lace sweep`: plan and simulate a grid of cases — models × layer kinds × batches × policies ×
GPUs × … — on a local Dask cluster (default), an existing one (--scheduler), or in this
process (--in-process), into one Parquet file of rows (`concurrency.sweep`).

A failed case is a row with its error, and the sweep goes on; running the same command again
skips the cases the file holds (--rerun-failed retries the failed ones). The exit status is 1
when any case of the grid has failed (as `lace fidelity` when a check fails), else 0. --bench
runs the grid in one process and on a local cluster and prints cases per second each way.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from concurrency.cli.common import (
    ALL,
    add_format_arg,
    positive_float,
    positive_int,
)
from concurrency.cli.output import Result
from concurrency.cli.progress import Progress
from concurrency.errors import LaceError

if TYPE_CHECKING:
    from concurrency.cli.progress import Meter
    from concurrency.sweep import BenchRow, SweepCase, SweepSummary

DEFAULT_OUT = Path("sweeps") / "sweep.parquet"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from concurrency.graph.branches import DETECTORS
    from concurrency.graph.builders import DEFAULT_PREFILL_TOKENS, LAYER_KINDS, MODES
    from concurrency.graph.schedule import DEFAULT_MAX_STREAMS
    from concurrency.memory.engine_flow import DEFAULT_N_CTX, DEFAULT_N_UBATCH
    from concurrency.memory.policies import DEFAULT_ALIGNMENT, POLICIES
    from concurrency.timing.gpus import ALIASES, GPUS

    p.description = (
        "Plan and simulate every case of a grid (models × layer kinds × batches × policies × "
        "GPUs × …) on a local Dask cluster, an existing one or this process, into one Parquet "
        "file (a row per case). A failed case is a row with its error (exit status 1); the "
        "same command again skips the cases already in the file."
    )
    grid = p.add_argument_group("the grid (each option takes one value or several)")
    grid.add_argument(
        "--models",
        nargs="+",
        required=True,
        metavar="MODEL",
        help="presets or .json / .yaml config files (`lace models` lists the presets)",
    )
    grid.add_argument(
        "--layer-kinds",
        nargs="+",
        choices=LAYER_KINDS,
        default=["gdn"],
        metavar="KIND",
        help=f"layer kinds: {', '.join(LAYER_KINDS)} (default: gdn)",
    )
    grid.add_argument(
        "--layers",
        nargs="+",
        type=positive_int,
        default=[None],
        metavar="N",
        help="layers in a stack, as `lace plan --layers` (default: all of the model's)",
    )
    grid.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=["decode"],
        metavar="MODE",
        help=f"{', '.join(MODES)} (default: decode)",
    )
    grid.add_argument(
        "--tokens",
        nargs="+",
        type=positive_int,
        default=[None],
        metavar="T",
        help=f"tokens per sequence in prefill (default {DEFAULT_PREFILL_TOKENS})",
    )
    grid.add_argument(
        "--batches",
        nargs="+",
        type=positive_int,
        default=[1],
        metavar="B",
        help="sequences (default: 1)",
    )
    grid.add_argument(
        "--policies",
        nargs="+",
        choices=[*POLICIES, ALL],
        default=[ALL],
        metavar="POLICY",
        help=f"{', '.join(POLICIES)}, or {ALL} (default: {ALL})",
    )
    grid.add_argument(
        "--gpus",
        nargs="+",
        default=["h100"],
        metavar="GPU",
        help=f"GPU specs to simulate on: {', '.join([*ALIASES, *GPUS])} (default: h100)",
    )
    grid.add_argument(
        "--max-streams",
        nargs="+",
        type=positive_int,
        default=[DEFAULT_MAX_STREAMS],
        metavar="N",
        help=f"streams including the main one (default {DEFAULT_MAX_STREAMS} as ggml)",
    )
    fixed = p.add_argument_group("the same for every case")
    fixed.add_argument(
        "--flow",
        choices=("engine", "graph"),
        default=None,
        help="as `lace plan` (default: engine for stacks, graph for single layers)",
    )
    fixed.add_argument(
        "--detector",
        choices=DETECTORS,
        default="general",
        help="fork-region detector (default: general)",
    )
    fixed.add_argument(
        "--n-ctx",
        type=positive_int,
        default=DEFAULT_N_CTX,
        help=f"context size in tokens (default {DEFAULT_N_CTX})",
    )
    fixed.add_argument(
        "--n-ubatch",
        type=positive_int,
        default=DEFAULT_N_UBATCH,
        help=f"the engine flow's reserve ubatch (default {DEFAULT_N_UBATCH})",
    )
    fixed.add_argument(
        "--alignment",
        type=positive_int,
        default=DEFAULT_ALIGNMENT,
        help=f"buffer alignment in bytes (default {DEFAULT_ALIGNMENT})",
    )
    fixed.add_argument(
        "--launch",
        choices=("graph", "eager"),
        default="graph",
        help="simulated launches: CUDA graph replay or eager (default: graph)",
    )
    fixed.add_argument(
        "--weight-bytes",
        type=positive_float,
        default=2.0,
        help="bytes per weight parameter (2 = bf16, ~0.6 = Q4_K_M)",
    )
    files = p.add_argument_group("results")
    files.add_argument(
        "--out",
        type=_results_file,
        default=None,
        metavar="FILE",
        help=f"the .parquet results file; rows already in it are skipped (default: {DEFAULT_OUT})",
    )
    files.add_argument(
        "--rerun-failed", action="store_true", help="run the cases the file records as failed again"
    )
    where = p.add_argument_group("where the cases run (default: a local Dask cluster)")
    one = where.add_mutually_exclusive_group()
    one.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="worker processes of the local cluster (default: one per CPU)",
    )
    one.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDR",
        help="a running Dask scheduler (tcp://host:port) instead of a local cluster; its "
        "workers need lace-kit installed",
    )
    one.add_argument(
        "--in-process",
        action="store_true",
        help="every case in this process, one after another (no Dask)",
    )
    where.add_argument(
        "--scheduler-timeout",
        type=positive_float,
        default=10.0,
        metavar="S",
        help="seconds to reach --scheduler (default 10)",
    )
    where.add_argument(
        "--bench",
        action="store_true",
        help="run the grid in one process, then on a local cluster of --workers, into "
        "temporary files; print cases per second each way (--out untouched)",
    )
    add_format_arg(p)


def _results_file(text: str) -> Path:
    from concurrency.cli.common import output_file

    path = output_file(text)
    if path.suffix.lower() != ".parquet":
        raise argparse.ArgumentTypeError(f"results go to a .parquet file, got {text}")
    return path


def run(args: argparse.Namespace, progress: Progress) -> Result:
    from concurrency.sweep import expand_grid

    progress.update("expanding the grid")
    cases = expand_grid(
        args.models,
        layer_kinds=args.layer_kinds,
        layers=args.layers,
        modes=args.modes,
        tokens=args.tokens,
        batches=args.batches,
        policies=args.policies,
        gpus=args.gpus,
        max_streams=args.max_streams,
        flow=args.flow,
        detector=args.detector,
        n_ctx=args.n_ctx,
        n_ubatch=args.n_ubatch,
        alignment=args.alignment,
        launch=args.launch,
        weight_bytes_per_param=args.weight_bytes,
    )
    if args.bench:
        if args.in_process or args.scheduler is not None:
            raise LaceError(
                "--bench compares one process with a local cluster of --workers; "
                "leave out --in-process and --scheduler"
            )
        return _bench(args, cases, progress)
    return _sweep(args, cases, progress)


def _sweep(args: argparse.Namespace, cases: tuple[SweepCase, ...], progress: Progress) -> Result:
    from concurrency.sweep import run_sweep

    out = args.out
    if out is None:
        out = DEFAULT_OUT
        out.parent.mkdir(parents=True, exist_ok=True)
    meter: list[Meter] = []  # made once the sweep knows how many cases it will run
    summary = run_sweep(
        cases,
        out,
        backend="process" if args.in_process else "dask",
        workers=args.workers,
        scheduler=args.scheduler,
        scheduler_timeout_s=args.scheduler_timeout,
        rerun_failed=args.rerun_failed,
        command=_command(args),
        on_status=progress.update,
        on_start=lambda n: meter.append(progress.meter("sweep", n, "cases")),
        on_done=lambda k: meter[0].advance(k),
    )
    status = 1 if summary.errors else 0
    if args.format == "json":
        return Result.json(summary.to_dict(), status)
    return Result.lines(_summary_lines(summary), status)


def _summary_lines(s: SweepSummary) -> list[str]:
    lines = [
        f"{s.out}: {s.cases} cases in this grid, {s.ok} finished, {s.errors} failed",
    ]
    if s.ran:
        lines.append(
            f"ran {s.ran} cases in {s.groups} groups on {_where(s)}: {s.sweep_s:.2f} s, "
            f"{s.cases_per_s:.1f} cases/s (start-up {s.start_s:.2f} s); "
            f"{s.skipped} were already in the file"
        )
    else:
        lines.append(f"nothing to run: all {s.skipped} cases were already in the file")
    if s.failures:
        lines.append("failed (every error is in the file's error column):")
        for error, count, example in s.failures:
            lines.append(f"  {count} case(s), e.g. {example}: {error}")
        lines.append("--rerun-failed runs them again")
    return lines


def _where(s: SweepSummary) -> str:
    if s.backend == "one process":
        return "one process"
    return f"a {s.backend} of {s.workers} worker(s)"


def _bench(args: argparse.Namespace, cases: tuple[SweepCase, ...], progress: Progress) -> Result:
    from concurrency.sweep import bench_sweep, cpu_count, group_by_context

    rows = bench_sweep(cases, args.workers, on_status=progress.update)
    base = rows[0].cases_per_s
    speedups = [r.cases_per_s / base if base else 0.0 for r in rows]
    groups = len(group_by_context(cases))
    if args.format == "json":
        doc = {
            "cases": len(cases),
            "groups": groups,
            "cpus": cpu_count(),
            "runs": [
                r.to_dict() | {"speedup": round(x, 3)} for r, x in zip(rows, speedups, strict=True)
            ],
        }
        return Result.json(doc)
    return Result.lines(_bench_lines(rows, speedups, len(cases), groups, cpu_count()))


def _bench_lines(
    rows: list[BenchRow], speedups: list[float], cases: int, groups: int, cpus: int
) -> list[str]:
    lines = [
        f"{cases} cases in {groups} groups, each way into a fresh file; this machine: "
        f"{cpus} CPU(s), 1-minute load average {rows[0].load_before:.1f} before, "
        f"{rows[-1].load_after:.1f} after",
        f"{'how':22} {'workers':>7} {'start-up s':>10} {'sweep s':>8} {'cases/s':>8} "
        f"{'with start-up':>13} {'speed-up':>8}",
    ]
    for r, x in zip(rows, speedups, strict=True):
        lines.append(
            f"{r.backend:22} {r.workers:>7} {r.start_s:>10.2f} {r.sweep_s:>8.2f} "
            f"{r.cases_per_s:>8.1f} {r.cases_per_s_with_start:>13.1f} {x:>8.2f}"
        )
    lines.append(
        "cases/s: cases over the sweep's time (start-up excluded); speed-up: against one process"
    )
    if any(r.errors for r in rows):
        lines.append(f"{rows[0].errors} case(s) of the grid fail (they are timed too)")
    return lines


def _command(args: argparse.Namespace) -> str:
    """The sweep's grid as a `lace sweep` command line (every option spelled out), recorded
    in each row's `command` column."""
    words = ["lace", "sweep", "--models", *args.models, "--layer-kinds", *args.layer_kinds]
    if args.layers != [None]:
        words += ["--layers", *map(str, args.layers)]
    words += ["--modes", *args.modes]
    if args.tokens != [None]:
        words += ["--tokens", *map(str, args.tokens)]
    words += ["--batches", *map(str, args.batches), "--policies", *args.policies]
    words += ["--gpus", *args.gpus, "--max-streams", *map(str, args.max_streams)]
    if args.flow is not None:
        words += ["--flow", args.flow]
    words += [
        "--detector", args.detector,
        "--n-ctx", str(args.n_ctx),
        "--n-ubatch", str(args.n_ubatch),
        "--alignment", str(args.alignment),
        "--launch", args.launch,
        "--weight-bytes", f"{args.weight_bytes:g}",
    ]  # fmt: skip
    return shlex.join(words)
