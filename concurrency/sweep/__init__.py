"""Sweeps: planning and simulation over models × layers × batches × policies × GPUs, in one
process or fanned out over a Dask cluster, into one Parquet file of result rows.

From a notebook::

    from concurrency.sweep import expand_grid, run_sweep, load_results

    cases = expand_grid(["tiny", "qwen3.5-9b"], layer_kinds=["gdn", "stack"],
                        batches=[1, 2, 4, 8], policies=["all"], gpus=["h100", "h200"])
    summary = run_sweep(cases, "sweeps/mine.parquet")          # a local Dask cluster
    # run_sweep(cases, path, backend="process")                # or one process
    # run_sweep(cases, path, client=my_dask_client)            # or a cluster you have
    frame = load_results("sweeps/mine.parquet")

The core — `SweepCase`, `expand_grid`, `run_case`/`run_group` and the results file — imports no
Dask; only the Dask backend does, when it starts. `lace sweep` is the same from a shell.
"""

from __future__ import annotations

from concurrency.sweep.backends import DaskCluster, InProcess, cpu_count
from concurrency.sweep.bench import BenchRow, bench_sweep
from concurrency.sweep.cases import SweepCase, expand_grid, group_by_context
from concurrency.sweep.driver import SweepSummary, run_sweep
from concurrency.sweep.store import (
    COLUMN_NAMES,
    SCHEMA,
    VOLATILE_COLUMNS,
    SweepFileError,
    load_results,
    read_table,
)
from concurrency.sweep.work import run_case, run_group

__all__ = [
    "COLUMN_NAMES",
    "SCHEMA",
    "VOLATILE_COLUMNS",
    "BenchRow",
    "DaskCluster",
    "InProcess",
    "SweepCase",
    "SweepFileError",
    "SweepSummary",
    "bench_sweep",
    "cpu_count",
    "expand_grid",
    "group_by_context",
    "load_results",
    "read_table",
    "run_case",
    "run_group",
    "run_sweep",
]
