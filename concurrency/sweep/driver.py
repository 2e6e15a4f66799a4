"""Running a sweep: the cases not yet in the results file, on a backend, into the file.

`run_sweep` reads the results file (if any), leaves out the cases it already holds (finished
or failed; `rerun_failed` retries the failed ones), groups the rest by graph context, sends
the groups to the backend largest first (so a deep stack does not start last and hold up the
end), and adds each group's rows to the file as they come, checkpointing it atomically. An
interrupted sweep (Ctrl-C, a killed process) keeps every row written by its last checkpoint,
and running it again does only what is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from concurrency.errors import LaceError
from concurrency.sweep.backends import DaskCluster, InProcess
from concurrency.sweep.cases import SweepCase, group_by_context
from concurrency.sweep.store import ResultFile
from concurrency.sweep.work import ERROR, OK

BACKENDS = ("dask", "process")


@dataclass(frozen=True)
class SweepSummary:
    """What a sweep did: how many of the grid's cases it ran and skipped, how many of the
    grid's cases are finished and failed in the file now, and how fast it ran them.

    `start_s` is the backend's start-up (a local cluster's worker processes); `sweep_s` the
    time from the first group submitted to the last row in; `cases_per_s` = ran / sweep_s.
    `failures` sums up the grid's failed cases by error: (error, how many, one case's label),
    most frequent first (the file has every failed row)."""

    out: str
    backend: str
    workers: int
    cases: int
    ran: int
    skipped: int
    ok: int
    errors: int
    groups: int
    start_s: float
    sweep_s: float
    failures: tuple[tuple[str, int, str], ...] = ()

    @property
    def cases_per_s(self) -> float:
        return self.ran / self.sweep_s if self.sweep_s > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "out": self.out,
            "backend": self.backend,
            "workers": self.workers,
            "cases": self.cases,
            "ran": self.ran,
            "skipped": self.skipped,
            "ok": self.ok,
            "errors": self.errors,
            "groups": self.groups,
            "start_s": round(self.start_s, 3),
            "sweep_s": round(self.sweep_s, 3),
            "cases_per_s": round(self.cases_per_s, 3),
            "failures": [
                {"error": error, "cases": n, "example": label} for error, n, label in self.failures
            ],
        }


def run_sweep(
    cases: Sequence[SweepCase],
    out: str | Path,
    *,
    backend: str = "dask",
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    scheduler_timeout_s: float = 10.0,
    rerun_failed: bool = False,
    command: str = "",
    checkpoint_s: float = 5.0,
    on_status: Callable[[str], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    on_done: Callable[[int], None] | None = None,
) -> SweepSummary:
    """Run the cases of `cases` that `out` does not hold yet; return what was done.

    backend: "dask" (a LocalCluster of `workers` processes, default one per CPU; or the
    cluster of `scheduler`, an address such as tcp://host:port; or `client`, a
    distributed.Client you already have) or "process" (every case in this process, one after
    another). `command` is recorded in each new row. Callbacks: `on_status(message)` before a
    stage, `on_start(n)` with the number of cases to run, `on_done(k)` after each k cases.
    A case that fails is a row with status "error" (the sweep goes on); an existing `out`
    that is not a sweep file of this schema is a LaceError before anything runs."""
    if backend not in BACKENDS:
        from concurrency.errors import UnknownNameError

        raise UnknownNameError("sweep backend", backend, BACKENDS)
    if backend == "process" and (workers, scheduler, client) != (None, None, None):
        raise LaceError(
            "workers, scheduler and client apply to the Dask backend; the process backend "
            "runs every case in this process"
        )
    status = on_status or (lambda message: None)
    cases = list({c.id: c for c in cases}.values())
    store = ResultFile(out, checkpoint_s=checkpoint_s)

    def done(case: SweepCase) -> bool:
        state = store.status_of(case.id)
        return state == OK or (state == ERROR and not rerun_failed)

    todo = [c for c in cases if not done(c)]
    groups = sorted(group_by_context(todo), key=_estimated_cost, reverse=True)
    runner = (
        InProcess()
        if backend == "process"
        else DaskCluster(workers, scheduler, client, scheduler_timeout_s, on_status=status)
    )
    start_s = sweep_s = 0.0
    ran = 0
    t0 = time.perf_counter()
    try:
        if todo:
            with runner:
                start_s = time.perf_counter() - t0
                if on_start is not None:
                    on_start(len(todo))
                t1 = time.perf_counter()
                try:
                    for rows in runner.run(groups, command):
                        store.add(rows)
                        store.flush()
                        ran += len(rows)
                        if on_done is not None:
                            on_done(len(rows))
                finally:
                    sweep_s = time.perf_counter() - t1
    finally:
        store.order_new(c.id for c in cases)
        store.flush(force=True)
    states = [store.status_of(c.id) for c in cases]
    failed = [c for c, s in zip(cases, states, strict=True) if s == ERROR]
    return SweepSummary(
        out=str(out),
        backend=runner.description or backend,
        workers=runner.workers,
        cases=len(cases),
        ran=ran,
        skipped=len(cases) - len(todo),
        ok=states.count(OK),
        errors=len(failed),
        groups=len(groups),
        start_s=start_s,
        sweep_s=sweep_s,
        failures=_failures(store, failed),
    )


def _estimated_cost(group: tuple[SweepCase, ...]) -> float:
    """A group's work, roughly: its graph's size (layers × tokens per step, which sets the
    node count and the tensors' sizes only weakly) times its plans and simulations."""
    first = group[0]
    plans = len({c.policy for c in group})
    sims = len({(c.gpu, c.launch, c.weight_bytes_per_param) for c in group})
    return (first.layers or 1) * (1 + 0.01 * first.batch * (first.tokens or 1)) * (plans + 3 * sims)


def _failures(store: ResultFile, failed: Sequence[SweepCase]) -> tuple[tuple[str, int, str], ...]:
    """(error, count, example case label) for each distinct error, most frequent first."""
    if not failed:
        return ()
    import pyarrow as pa
    import pyarrow.compute as pc

    table = store.table()
    ids = pa.array([c.id for c in failed])
    wanted = table.filter(pc.is_in(table.column("id"), value_set=ids))
    error_of = dict(
        zip(wanted.column("id").to_pylist(), wanted.column("error").to_pylist(), strict=True)
    )
    by_error: dict[str, list[SweepCase]] = {}
    for case in failed:
        by_error.setdefault(str(error_of.get(case.id, "")), []).append(case)
    ranked = sorted(by_error.items(), key=lambda item: -len(item[1]))
    return tuple((error, len(cases), cases[0].label) for error, cases in ranked)


__all__ = ["BACKENDS", "SweepSummary", "run_sweep"]
