"""How much a local Dask cluster speeds a sweep up: the same grid in one process and on a
cluster of worker processes on this machine, cases per second each way.

Both runs write into a fresh temporary folder, so neither skips anything, and nothing touches
a real results file. Each row also records the machine's load average before and after, since
a busy machine (other users, other jobs) lowers what the workers can gain.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from concurrency.sweep.backends import cpu_count
from concurrency.sweep.cases import SweepCase
from concurrency.sweep.driver import SweepSummary, run_sweep


@dataclass(frozen=True)
class BenchRow:
    """One way of running the grid: its start-up and sweep times and its throughput."""

    backend: str
    workers: int
    cases: int
    errors: int
    start_s: float
    sweep_s: float
    load_before: float
    load_after: float

    @property
    def cases_per_s(self) -> float:
        """Cases per second once running (start-up excluded)."""
        return self.cases / self.sweep_s if self.sweep_s > 0 else 0.0

    @property
    def cases_per_s_with_start(self) -> float:
        """Cases per second counting the start-up (what one short sweep sees)."""
        total = self.start_s + self.sweep_s
        return self.cases / total if total > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "workers": self.workers,
            "cases": self.cases,
            "errors": self.errors,
            "start_s": round(self.start_s, 3),
            "sweep_s": round(self.sweep_s, 3),
            "cases_per_s": round(self.cases_per_s, 3),
            "cases_per_s_with_start": round(self.cases_per_s_with_start, 3),
            "load_before": round(self.load_before, 2),
            "load_after": round(self.load_after, 2),
        }


def bench_sweep(
    cases: Sequence[SweepCase],
    workers: int | None = None,
    *,
    on_status: Callable[[str], None] | None = None,
) -> list[BenchRow]:
    """Run `cases` in one process, then on a local Dask cluster of `workers` processes
    (default: one per CPU); one BenchRow each, in that order."""
    status = on_status or (lambda message: None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lace-sweep-bench-") as folder:
        for backend, n in (("process", None), ("dask", workers or cpu_count())):
            what = "in one process" if backend == "process" else f"on {n} Dask workers"
            status(f"benchmark: {len(cases)} cases {what}")
            before = _load()
            summary: SweepSummary = run_sweep(
                cases,
                Path(folder) / f"{backend}.parquet",
                backend=backend,
                workers=n,
                on_status=status,
            )
            rows.append(
                BenchRow(
                    backend=summary.backend,
                    workers=summary.workers,
                    cases=summary.ran,
                    errors=summary.errors,
                    start_s=summary.start_s,
                    sweep_s=summary.sweep_s,
                    load_before=before,
                    load_after=_load(),
                )
            )
    return rows


def _load() -> float:
    """The 1-minute load average (NaN where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


__all__ = ["BenchRow", "bench_sweep"]
