"""Where a sweep's groups run: in this process, or on a Dask cluster.

Both backends run the same function (`concurrency.sweep.work.run_group`) on the same groups and
yield each group's rows as it finishes, so their results are the same row for row (apart from
the volatile columns: timings, worker, date).

`InProcess` runs the groups one after another: the baseline, and what a machine without
Dask can do. `DaskCluster` sends them to Dask `distributed` workers: a `LocalCluster` of
worker processes on this machine (planning is pure Python, so threads would share one GIL and
not help; their profiler is off, see LOCAL_WORKER_CONFIG), an existing scheduler's cluster
(`scheduler="tcp://host:port"`: the workers need lace-kit installed), or a `Client` the
caller already has (a notebook's). Dask is imported only here, and only when a Dask backend
starts.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from concurrency.errors import LaceError, MissingToolError
from concurrency.sweep.cases import SweepCase
from concurrency.sweep.work import ERROR

Group = tuple[SweepCase, ...]
Rows = list[dict[str, object]]
INSTALL_HINT = "pip install 'dask[distributed]'"
#: Dask settings for the workers of a local cluster. The statistical profiler samples every
#: worker's Python stack every 10 ms; on planning work (deep pure-Python stacks) it slowed a
#: 27B stack's group from 0.9 s to 1.4–2.3 s a worker on the 2-core development machine.
LOCAL_WORKER_CONFIG = {"distributed.worker.profile.enabled": False}


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class InProcess:
    """Every group in this process, one after another (after one warm-up case, as each
    Dask worker gets, so that the two compare like with like)."""

    workers = 1
    description = "one process"

    def __enter__(self) -> InProcess:
        from concurrency.sweep.work import warm_up

        warm_up()
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run(self, groups: Sequence[Group], command: str) -> Iterator[Rows]:
        from concurrency.sweep import work

        for group in groups:
            yield work.run_group(group, command)  # looked up per call: tests count the calls


class DaskCluster:
    """Groups on Dask workers, yielded as they complete.

    With neither `scheduler` nor `client`, starts a LocalCluster of `workers` processes
    (default: this machine's CPUs), one thread each, no dashboard, and shuts it down on exit.
    `scheduler`: the address of a running scheduler (`tcp://host:port`), reached within
    `timeout_s`. `client`: a `distributed.Client` to use as it is (left open on exit).
    `on_status` hears what is being started."""

    def __init__(
        self,
        workers: int | None = None,
        scheduler: str | None = None,
        client: Any = None,
        timeout_s: float = 10.0,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        if workers is not None and (isinstance(workers, bool) or workers <= 0):
            raise LaceError(f"workers must be a positive integer, got {workers!r}")
        if workers is not None and (scheduler is not None or client is not None):
            raise LaceError(
                "workers applies to a local cluster; a scheduler's or a client's cluster has "
                "its own workers (leave workers out)"
            )
        if scheduler is not None and client is not None:
            raise LaceError("give a scheduler address or a client, not both")
        if timeout_s <= 0:
            raise LaceError(f"the scheduler timeout must be > 0 s, got {timeout_s}")
        self._workers = workers
        self._scheduler = scheduler
        self._client = client
        self._own_client = client is None
        self._cluster: Any = None
        self._timeout_s = timeout_s
        self._on_status = on_status or (lambda message: None)
        self.workers = 0
        self.description = ""

    def __enter__(self) -> DaskCluster:
        distributed = _import_distributed()
        import dask

        if self._client is None and self._scheduler is not None:
            self._on_status(f"connecting to the Dask scheduler at {self._scheduler}")
            self._client = _connect(distributed, self._scheduler, self._timeout_s)
            self.description = f"Dask cluster at {self._scheduler}"
        elif self._client is None:
            n = self._workers or cpu_count()
            self._on_status(f"starting a local Dask cluster of {n} worker processes")
            try:
                with _children_ignore_ctrl_c(), dask.config.set(LOCAL_WORKER_CONFIG):
                    self._cluster = distributed.LocalCluster(
                        n_workers=n,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                        silence_logs=logging.ERROR,
                    )
                self._client = distributed.Client(self._cluster)
            except Exception as exc:
                self._close()
                raise LaceError(
                    f"could not start a local Dask cluster of {n} workers "
                    f"({' '.join(str(exc).split())})"
                ) from None
            self.description = "local Dask cluster"
        else:
            self.description = "Dask client's cluster"
        self.workers = self._count_workers()
        if self.workers:
            from concurrency.sweep.work import warm_up

            self._on_status(f"importing LACE on {self.workers} workers")
            try:
                self._client.run(warm_up)
            except Exception as exc:
                self._close()
                raise LaceError(
                    f"the Dask workers cannot run LACE ({' '.join(str(exc).split())}); install "
                    "lace-kit (this version) where they run"
                ) from None
        return self

    def _count_workers(self) -> int:
        """The cluster's workers, waiting up to the timeout for a first one (a scheduler may
        have none yet); none by then is an error, since the sweep would wait forever."""
        workers = len(self._client.scheduler_info().get("workers", {}))
        if workers:
            return workers
        self._on_status(f"waiting up to {self._timeout_s:g} s for a Dask worker")
        try:
            self._client.wait_for_workers(1, timeout=self._timeout_s)
        except (TimeoutError, OSError):
            self._close()
            raise LaceError(
                f"the {self.description} has no workers; start some there "
                "(`dask worker ADDRESS` where lace-kit is installed)"
            ) from None
        return len(self._client.scheduler_info().get("workers", {}))

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()

    def _close(self) -> None:
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def run(self, groups: Sequence[Group], command: str) -> Iterator[Rows]:
        """Submit every group (in the order given: Dask starts earlier ones first), then yield
        rows as groups complete. A group whose task itself fails (a worker that died) comes
        back as error rows; interrupting the loop cancels what has not run."""
        from distributed import as_completed

        from concurrency.sweep import work
        from concurrency.sweep.work import error_text

        client = self._client
        futures = {}
        for group in groups:
            future = client.submit(work.run_group, group, command, pure=False)
            futures[future] = group
        pending = set(futures)
        try:
            for future in as_completed(futures):
                pending.discard(future)
                try:
                    rows = future.result()
                except Exception as exc:
                    message = f"the Dask task failed: {error_text(exc)}"
                    rows = [_failed(case, message) for case in futures[future]]
                yield rows
        finally:
            if pending:
                client.cancel(list(pending))


@contextmanager
def _children_ignore_ctrl_c() -> Iterator[None]:
    """While the block runs, ignore SIGINT, so that the worker processes started meanwhile
    inherit that: Ctrl-C in a terminal reaches the whole process group, and the workers should
    not each print a traceback but be shut down by this process, which does hear it. Only the
    main thread can set a handler; elsewhere (and off POSIX) this does nothing."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGINT"):
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _failed(case: SweepCase, message: str) -> dict[str, object]:
    return {"id": case.id, "status": ERROR, "error": message, **case.fields(), "device": case.gpu}


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise MissingToolError(
            f"a Dask sweep needs Dask's distributed scheduler: {INSTALL_HINT} (or run the "
            "sweep in this process: --in-process)"
        ) from None
    return distributed


def _connect(distributed: Any, address: str, timeout_s: float) -> Any:
    try:
        return distributed.Client(address, timeout=f"{timeout_s}s")
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        reason = " ".join(str(exc).split())
        raise LaceError(
            f"cannot reach the Dask scheduler at {address} within {timeout_s:g} s ({reason}); "
            "check the address (tcp://host:port) and that `dask scheduler` runs there, or "
            "leave --scheduler out to start a local cluster"
        ) from None


__all__ = ["INSTALL_HINT", "DaskCluster", "InProcess", "cpu_count"]
