"""The CuPy arena executor: a `LaunchPlan` on the device, eagerly or as one CUDA graph.

`DeviceRun(launch_plan)` allocates one device buffer per `BufferSpec` — the arena in ONE
allocation of the plan's size, every planned tensor a view at its planned offset — plus the
weight, state and scratch buffers; binds every launch once (kernel function, resolved argument
values, nvmath matmuls planned once); and then:

* `upload(values)` fills the arena with 0xFF bytes (NaN as f32, so a read of bytes nobody wrote
  shows) and copies every leaf (inputs into the arena, weights and states into their buffers),
* `run_eager()` launches node by node on the schedule's streams with fork/join events,
* `capture()` records the same launches into one CUDA graph (stream capture across streams:
  the side streams wait for a fork event and are joined back before capture ends), and
  `replay(graph)` launches it — no host work inside a replay,
* graph inputs are set before every replay, as the engine sets them before every step
  (llama.cpp's set_inputs): a plan may hand an input's arena bytes to a later tensor (ggml
  frees inputs like any tensor), so without it every replay after the first would read what
  that tensor left (the attention mask: every KV cell read). `upload` keeps a device copy of
  each input; `replay` and `replay_times_us` copy them back first, outside the timed span,
* `read()` copies the results back as float64 NumPy arrays (outputs and states, the keys of
  `numpy_arena.reference_run`).

Nothing here decides anything: streams, waits, kernels and addresses are the launch plan's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from concurrency.errors import LaceError
from concurrency.execute.gpu import backend, kernels
from concurrency.execute.gpu.launch import (
    ARENA,
    KernelLaunch,
    LaunchPlan,
    MatmulLaunch,
    Ptr,
    TensorRef,
)
from concurrency.execute.gpu.storage import HOST_TYPES, to_float64, to_storage
from concurrency.graph.ir import TensorKind

DEFAULT_SHARED_LIMIT = 48 * 1024


@dataclass(frozen=True)
class _BoundKernel:
    fn: Any
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared: int
    args: tuple

    def __call__(self, stream: Any) -> None:
        self.fn(self.grid, self.block, self.args, shared_mem=self.shared)


class DeviceRun:
    """Device memory, streams, events and bound launches for one launch plan."""

    def __init__(self, launch_plan: LaunchPlan) -> None:
        cp = backend.cupy()
        self.cp = cp
        self.lp = launch_plan
        self.mem = {
            name: cp.cuda.alloc(max(spec.nbytes, 1)) for name, spec in launch_plan.buffers.items()
        }
        self.base = {name: int(m.ptr) for name, m in self.mem.items()}
        self.streams = [cp.cuda.Stream(non_blocking=True) for _ in range(launch_plan.n_streams)]
        self.events = {
            n.index: cp.cuda.Event(disable_timing=True) for n in launch_plan.nodes if n.record
        }
        self.fork = cp.cuda.Event(disable_timing=True)
        self.joins = {s: cp.cuda.Event(disable_timing=True) for s in launch_plan.side_streams}
        self._shared_set: dict[int, int] = {}
        # the graph inputs' values as uploaded, restored before each replay (module doc)
        self.input_names = tuple(
            n
            for n in launch_plan.graph.leafs
            if launch_plan.graph[n].kind is TensorKind.INPUT and n in launch_plan.tensors
        )
        self.input_copy_at: dict[str, int] = {}
        total = 0
        for n in self.input_names:
            self.input_copy_at[n] = total
            total += -(-launch_plan.tensors[n].nbytes // 256) * 256
        self.input_copy = cp.cuda.alloc(max(total, 1))
        self.calls: tuple[tuple[Callable[[Any], None], ...], ...] = tuple(
            tuple(self._bind(launch) for launch in node.launches) for node in launch_plan.nodes
        )

    # ------------------------------------------------------------------ binding
    def address(self, ptr: Ptr) -> int:
        """The device address of a launch-plan pointer."""
        return self.base[ptr.buffer] + ptr.offset_bytes

    def _bind(self, launch: KernelLaunch | MatmulLaunch) -> Callable[[Any], None]:
        if isinstance(launch, MatmulLaunch):
            from concurrency.execute.gpu.matmul import BoundMatmul

            return BoundMatmul(self, launch)
        fn = kernels.module(launch.source).get_function(launch.kernel)
        if launch.shared_bytes > DEFAULT_SHARED_LIMIT:
            key = id(fn)
            if self._shared_set.get(key, 0) < launch.shared_bytes:
                fn.max_dynamic_shared_size_bytes = launch.shared_bytes
                self._shared_set[key] = launch.shared_bytes
        return _BoundKernel(fn, launch.grid, launch.block, launch.shared_bytes, self._args(launch))

    def _args(self, launch: KernelLaunch) -> tuple:
        out: list[object] = []
        for kind, value in launch.args:
            if kind == "ptr":
                assert isinstance(value, Ptr)
                out.append(np.uint64(self.address(value)))
            elif kind == "i64":
                out.append(np.int64(value))
            elif kind == "i32":
                out.append(np.int32(value))
            elif kind == "f32":
                out.append(np.float32(value))
            elif kind == "f64":
                out.append(np.float64(value))
            else:
                raise LaceError(f"unknown kernel argument kind {kind!r} in {launch.kernel}")
        return tuple(out)

    # ------------------------------------------------------------------ data
    def fill_arena(self) -> None:
        """Every arena byte 0xFF (NaN as f32): a read of bytes nobody wrote shows up."""
        self.cp.cuda.runtime.memset(self.base[ARENA], 0xFF, self.lp.buffers[ARENA].nbytes)

    def upload_leaf(self, name: str, value: np.ndarray) -> None:
        """Copy a leaf's host value (NumPy order, any float/int type) to its device location."""
        ref = self.lp.tensors.get(name)
        if ref is None:
            return
        host = to_storage(np.asarray(value).reshape(ref.shape[::-1]), ref.dtype)
        if host.nbytes != ref.nbytes:
            raise LaceError(f"leaf {name!r}: {host.nbytes} bytes for a {ref.nbytes}-byte tensor")
        self.cp.cuda.runtime.memcpy(
            self.address(ref.ptr),
            host.ctypes.data,
            host.nbytes,
            self.cp.cuda.runtime.memcpyHostToDevice,
        )
        self._keep_input(name)

    def _keep_input(self, name: str) -> None:
        """Copy a just-uploaded graph input into the run's copy of the inputs."""
        at = self.input_copy_at.get(name)
        if at is None:
            return
        ref = self.lp.tensors[name]
        self.cp.cuda.runtime.memcpy(
            int(self.input_copy.ptr) + at,
            self.address(ref.ptr),
            ref.nbytes,
            self.cp.cuda.runtime.memcpyDeviceToDevice,
        )

    def restore_inputs(self, stream: Any | None = None) -> None:
        """Set every graph input to its uploaded value again, on `stream` (default: main),
        in order with the work queued there."""
        stream = self.streams[0] if stream is None else stream
        rt = self.cp.cuda.runtime
        for name, at in self.input_copy_at.items():
            ref = self.lp.tensors[name]
            rt.memcpyAsync(
                self.address(ref.ptr),
                int(self.input_copy.ptr) + at,
                ref.nbytes,
                rt.memcpyDeviceToDevice,
                stream.ptr,
            )

    def upload(self, values: Mapping[str, np.ndarray], *, fill_arena: bool = True) -> None:
        """Fill the arena with 0xFF (NaN) and copy every leaf's value to its device location."""
        cp = self.cp
        cp.cuda.Device().synchronize()
        if fill_arena:
            self.fill_arena()
        for leaf in self.lp.graph.leafs:
            if leaf in self.lp.tensors and leaf not in values:
                raise LaceError(f"no value for leaf {leaf!r}; make_inputs(graph) builds them all")
            if leaf in values:
                self.upload_leaf(leaf, values[leaf])
        cp.cuda.Device().synchronize()

    def upload_device(self, name: str, array: Any) -> None:
        """Copy a device array (already in the leaf's storage type) to a leaf's location."""
        ref = self.lp.tensors[name]
        if array.nbytes != ref.nbytes:
            raise LaceError(f"leaf {name!r}: {array.nbytes} bytes for a {ref.nbytes}-byte tensor")
        self.cp.cuda.runtime.memcpy(
            self.address(ref.ptr),
            int(array.data.ptr),
            ref.nbytes,
            self.cp.cuda.runtime.memcpyDeviceToDevice,
        )
        self._keep_input(name)

    def read_buffer(self, name: str) -> np.ndarray:
        """A host copy (uint8) of one whole device buffer of the plan (e.g. the scratch)."""
        self.cp.cuda.Device().synchronize()
        buf = np.empty(self.lp.buffers[name].nbytes, dtype=np.uint8)
        self.cp.cuda.runtime.memcpy(
            buf.ctypes.data, self.base[name], buf.nbytes, self.cp.cuda.runtime.memcpyDeviceToHost
        )
        return buf

    def read(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """float64 copies (NumPy order) of `names` (default: outputs and states)."""
        cp = self.cp
        cp.cuda.Device().synchronize()
        keys = tuple(self.lp.result_keys() if names is None else names)
        host: dict[str, np.ndarray] = {}
        out: dict[str, np.ndarray] = {}
        for name in keys:
            t = self.lp.graph[name]
            ref = self.lp.tensors.get(name)
            if ref is None:
                out[name] = np.zeros(t.shape[::-1])
                continue
            buf = host.get(ref.ptr.buffer)
            if buf is None:
                buf = np.empty(self.lp.buffers[ref.ptr.buffer].nbytes, dtype=np.uint8)
                cp.cuda.runtime.memcpy(
                    buf.ctypes.data,
                    self.base[ref.ptr.buffer],
                    buf.nbytes,
                    cp.cuda.runtime.memcpyDeviceToHost,
                )
                host[ref.ptr.buffer] = buf
            out[name] = to_float64(host_view(buf, ref), ref.dtype)
        return out

    # ------------------------------------------------------------------ launching
    def _enqueue(self, on_node: Callable[[int, bool], None] | None = None) -> None:
        """Every node's launches on its stream, with the fork, the waits, the records and the
        joins; `on_node(index, entering)` brackets each node (CUPTI correlation)."""
        main = self.streams[0]
        self.fork.record(main)
        for s in self.lp.side_streams:
            self.streams[s].wait_event(self.fork)
        for node, calls in zip(self.lp.nodes, self.calls, strict=True):
            stream = self.streams[node.stream]
            for j in node.waits:
                stream.wait_event(self.events[j])
            if calls:
                if on_node is not None:
                    on_node(node.index, True)
                with stream:
                    for call in calls:
                        call(stream)
                if on_node is not None:
                    on_node(node.index, False)
            if node.record:
                self.events[node.index].record(stream)
        for s in self.lp.side_streams:
            self.joins[s].record(self.streams[s])
            main.wait_event(self.joins[s])

    def run_eager(self, on_node: Callable[[int, bool], None] | None = None) -> None:
        """Launch every node now (Python per launch, ≈ 10 µs each) and wait for the end."""
        self._enqueue(on_node)
        self.streams[0].synchronize()

    def capture(self, on_node: Callable[[int, bool], None] | None = None) -> Any:
        """One CUDA graph of the whole launch plan (run it eagerly once first: nvmath allocates
        its workspace on the first execution, which stream capture cannot do); `on_node`
        brackets each node's launches as in `run_eager` (a test maps graph nodes with it)."""
        main = self.streams[0]
        mode = getattr(self.cp.cuda.runtime, "streamCaptureModeRelaxed", None)
        self.cp.cuda.Device().synchronize()
        if mode is None:
            main.begin_capture()
        else:
            main.begin_capture(mode)
        try:
            self._enqueue(on_node)
        except BaseException:
            with contextlib.suppress(Exception):  # leave the stream usable; report the first error
                main.end_capture()
            raise
        return main.end_capture()

    def replay(self, graph: Any, *, sync: bool = True, set_inputs: bool = True) -> None:
        """One step: the graph inputs set to their uploaded values (`set_inputs`), then the
        graph launched on the main stream."""
        if set_inputs:
            self.restore_inputs()
        graph.launch(self.streams[0])
        if sync:
            self.streams[0].synchronize()

    def replay_times_us(self, graph: Any, count: int) -> np.ndarray:
        """GPU time of `count` replays, each bracketed by CUDA events (µs); before each, outside
        its bracket, the graph inputs are set again (module doc)."""
        cp = self.cp
        main = self.streams[0]
        starts = [cp.cuda.Event() for _ in range(count)]
        ends = [cp.cuda.Event() for _ in range(count)]
        self.restore_inputs(main)
        graph.launch(main)  # warm-up
        for i in range(count):
            self.restore_inputs(main)
            starts[i].record(main)
            graph.launch(main)
            ends[i].record(main)
        main.synchronize()
        return np.array(
            [cp.cuda.get_elapsed_time(starts[i], ends[i]) * 1000.0 for i in range(count)]
        )

    def free(self) -> None:
        self.cp.cuda.Device().synchronize()
        self.mem.clear()
        self.input_copy = None


def host_view(buf: np.ndarray, ref: TensorRef) -> np.ndarray:
    """A tensor's elements inside a host copy of its device buffer (NumPy order, ggml strides)."""
    dtype = HOST_TYPES[ref.dtype]
    try:
        return np.ndarray(
            ref.shape[::-1],
            dtype=dtype,
            buffer=buf,
            offset=ref.ptr.offset_bytes,
            strides=ref.strides_bytes[::-1],
        )
    except (TypeError, ValueError) as exc:
        raise LaceError(f"tensor {ref.name!r} does not fit its buffer ({exc})") from None
