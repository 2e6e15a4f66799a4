"""A stand-in for the parts of CuPy the GPU runner uses, over host memory and the emulated kernels.

It lets the CPU tests drive `concurrency.execute.gpu.runner.DeviceRun` end to end — binding,
argument conversion, uploads, reads, the per-stream enqueue with events, stream capture and
replay — without a GPU. Streams run work immediately (in enqueue order, which the schedule
allows); a capture records the launches and a graph launch replays them. It checks the runner's
own logic, not CuPy's behaviour.
"""

from __future__ import annotations

import ctypes
import sys
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from concurrency.execute.gpu import kernels as kernel_files

from .emulator import library

_CAPTURING: list[list[Callable[[], None]]] = []


class FakeCupti:
    """The activity records a real CUPTI would deliver for the emulated launches: a kernel
    record per execution (start/end from a counter, graph node id for graph replays) and an
    external-correlation record per launch made while an external id is pushed."""

    def __init__(self) -> None:
        self.enabled: set[int] = set()
        self.callbacks: tuple | None = None
        self.pending: list[object] = []
        self.pushed: list[int] = []
        self.clock = 1000
        self.correlation = 0
        self.node = 7  # graph node ids: unique, increasing in creation order

    def launched(self, name: str) -> int:
        self.correlation += 1
        if self.pushed and 2 in self.enabled:
            self.pending.append(
                types.SimpleNamespace(
                    kind=2, correlation_id=self.correlation, external_id=self.pushed[-1]
                )
            )
        return self.correlation

    def new_graph_node(self) -> int:
        self.node += 3
        return self.node

    def ran(self, name: str, run: Callable[[], None], correlation: int, node_id: int) -> None:
        start = self.clock
        run()
        self.clock += 50
        if 1 in self.enabled:
            self.pending.append(
                types.SimpleNamespace(
                    kind=1,
                    name=name,
                    start=start,
                    end=self.clock,
                    stream_id=3,
                    graph_node_id=node_id,
                    correlation_id=correlation,
                )
            )
        self.clock += 10

    def module(self) -> types.ModuleType:
        m = types.ModuleType("cupti")
        m.ActivityKind = types.SimpleNamespace(
            CONCURRENT_KERNEL=1, EXTERNAL_CORRELATION=2, RUNTIME=3, DRIVER=4
        )
        m.ExternalCorrelationKind = types.SimpleNamespace(CUSTOM0=0)

        def register(requested, completed):
            assert self.callbacks is None, "callbacks registered twice"
            assert requested()[0] > 0
            self.callbacks = (requested, completed)

        def flush(flag):
            records, self.pending = self.pending, []
            self.callbacks[1](records)

        m.activity_register_callbacks = register
        m.activity_enable = self.enabled.add
        m.activity_disable = self.enabled.discard
        m.activity_push_external_correlation_id = lambda kind, i: self.pushed.append(i)
        m.activity_pop_external_correlation_id = lambda kind: self.pushed.pop()
        m.activity_flush_all = flush
        return m


CUPTI = FakeCupti()


class CompileException(Exception):
    pass


class _Memory:
    def __init__(self, nbytes: int) -> None:
        self._raw = np.zeros(nbytes + 512, dtype=np.uint8)
        start = (-self._raw.ctypes.data) % 256
        self.buf = self._raw[start : start + nbytes]
        self.ptr = int(self.buf.ctypes.data)


def _alloc(nbytes: int) -> _Memory:
    return _Memory(nbytes)


def _memset(ptr: int, value: int, nbytes: int) -> None:
    ctypes.memset(ptr, value, nbytes)


def _memcpy(dst: int, src: int, nbytes: int, kind: int) -> None:
    ctypes.memmove(dst, src, nbytes)


class Stream:
    def __init__(self, non_blocking: bool = False) -> None:
        self.ptr = id(self)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def wait_event(self, event: Event) -> None:
        assert event.recorded, "a stream waits for an event nobody recorded"

    def synchronize(self) -> None:
        return None

    def begin_capture(self, mode: int | None = None) -> None:
        _CAPTURING.append([])

    def end_capture(self) -> Graph:
        return Graph(_CAPTURING.pop())


class Event:
    def __init__(
        self, block: bool = False, disable_timing: bool = False, interprocess: bool = False
    ) -> None:
        self.recorded = False

    def record(self, stream: Stream | None = None) -> None:
        self.recorded = True


class Graph:
    def __init__(self, work: list[Callable[[], None]]) -> None:
        self.work = work

    def launch(self, stream: Stream | None = None) -> None:
        for item in self.work:
            item()


class _Function:
    def __init__(self, source: str, name: str) -> None:
        self.lib, kinds = library(source)
        self.name = name
        self.kinds = kinds[name]
        self.max_dynamic_shared_size_bytes = 0

    def __call__(self, grid, block, args, shared_mem: int = 0) -> None:
        assert len(args) == len(self.kinds), (self.name, len(args), len(self.kinds))
        packed = np.zeros(max(len(args), 1), dtype=np.uint64)
        for i, (arg, kind) in enumerate(zip(args, self.kinds, strict=True)):
            expected = {
                "ptr": np.uint64,
                "i64": np.int64,
                "i32": np.int32,
                "f32": np.float32,
                "f64": np.float64,
            }[kind]
            assert isinstance(arg, expected), (self.name, i, type(arg), kind)
            packed[i : i + 1].view(expected)[0] = arg
        if shared_mem > 48 * 1024:
            assert self.max_dynamic_shared_size_bytes >= shared_mem, (
                "dynamic shared memory not raised"
            )
        fn = getattr(self.lib, f"emu_{self.name}")
        fn.restype = None

        def run() -> None:
            fn(
                ctypes.c_void_p(packed.ctypes.data),
                *(ctypes.c_uint(g) for g in grid),
                *(ctypes.c_uint(b) for b in block),
                ctypes.c_ulong(shared_mem),
            )

        correlation = CUPTI.launched(self.name)
        if _CAPTURING:
            node_id = CUPTI.new_graph_node()
            _CAPTURING[-1].append(lambda: CUPTI.ran(self.name, run, correlation, node_id))
        else:
            CUPTI.ran(self.name, run, correlation, 0)


class RawModule:
    def __init__(self, code: str, options: tuple[str, ...] = ()) -> None:
        self.source = next(
            s
            for s in kernel_files.sources()
            if (kernel_files.kernel_dir() / s).read_text(encoding="utf-8") == code
        )

    def get_function(self, name: str) -> _Function:
        return _Function(self.source, name)


def module() -> types.ModuleType:
    """A `cupy` module object with the attributes the runner touches."""
    cp = types.ModuleType("cupy")
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1,
        memset=_memset,
        memcpy=_memcpy,
        memcpyAsync=lambda dst, src, nbytes, kind, stream: _memcpy(dst, src, nbytes, kind),
        memcpyHostToDevice=1,
        memcpyDeviceToHost=2,
        memcpyDeviceToDevice=3,
        streamCaptureModeRelaxed=2,
        getDeviceProperties=lambda i: {
            "name": b"emulated",
            "major": 9,
            "minor": 0,
            "multiProcessorCount": 1,
        },
    )
    device = types.SimpleNamespace(synchronize=lambda: None, id=0)
    cp.cuda = types.SimpleNamespace(
        runtime=runtime,
        alloc=_alloc,
        Stream=Stream,
        Event=Event,
        get_elapsed_time=lambda start, end: 0.0,  # no clock: timings read 0 here
        Device=lambda *a: device,
        compiler=types.SimpleNamespace(CompileException=CompileException),
    )
    cp.RawModule = RawModule
    return cp


def use_in_place_of_cupy(monkeypatch: Any, probe_source: str = "elementwise.cu") -> None:
    """Put this stand-in in sys.modules as `cupy` (undone by `monkeypatch`) with a fresh kernel
    cache, after building `probe_source` on the host; skip the test where that build fails."""
    import pytest

    try:
        library(probe_source)
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"the host C++ build of the kernels failed (needs g++ with C++20): {exc}")
    monkeypatch.setitem(sys.modules, "cupy", module())
    kernel_files.module.cache_clear()
