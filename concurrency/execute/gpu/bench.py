"""Timing CUDA-graph replays of a planned graph: one stream against the schedule's streams.

`replay_time` builds the launch plan, fills weights and caches with random values drawn ON the
device (a 27B layer's weights never pass through the host), captures the whole graph once and
times `replays` back-to-back replays with CUDA events; the median is the figure. `hbm_floor_us`
is the bytes the step must move (every weight once, every state read and written) over a
bandwidth (the H200's measured device-to-device copy rate by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from concurrency.execute.gpu.launch import LaunchPlan, build_launch_plan
from concurrency.execute.numpy_arena import make_graph_inputs
from concurrency.graph.branches import detect_branches
from concurrency.graph.ir import Graph, TensorKind
from concurrency.graph.schedule import serial_schedule, stream_schedule
from concurrency.memory.policies import plan_memory

#: H200 device-to-device copy rate measured on the lent machine (gdn-reference §6.3), bytes/s.
H200_COPY_BYTES_PER_S = 4.23e12


@dataclass(frozen=True)
class ReplayTiming:
    """Median and spread of CUDA-graph replay times (µs) for one configuration."""

    label: str
    streams: int
    policy: str
    weight_dtype: str
    median_us: float
    p10_us: float
    p90_us: float
    replays: int
    floor_us: float


def hbm_floor_us(lp: LaunchPlan, bytes_per_s: float = H200_COPY_BYTES_PER_S) -> float:
    """µs to move the bytes a step cannot avoid at `bytes_per_s`: every weight once, every
    recurrent/conv state read and written, and the KV-cache rows attention reads."""
    graph = lp.graph
    total = sum(spec.nbytes for spec in lp.buffers.values() if spec.kind == "weight")
    kv_caches = set()
    for name in graph.nodes:
        if graph[name].op == "FLASH_ATTN_EXT":
            for src in graph[name].srcs[1:3]:  # the K and V views
                kv_caches.add(graph.base(src))
                total += lp.tensors[src].nbytes
    for spec in lp.buffers.values():
        if spec.kind == "state" and spec.tensor not in kv_caches:
            total += 2 * spec.nbytes
    return total / bytes_per_s * 1e6


def random_device_inputs(run: Any, seed: int = 0) -> None:
    """Fill `run`'s leaves: graph inputs from `make_graph_inputs` (host, small); weights and
    states drawn on the device with `make_inputs`' distributions, cast to their storage type."""
    cp = run.cp
    graph: Graph = run.lp.graph
    run.fill_arena()
    for name, value in make_graph_inputs(graph, seed).items():
        run.upload_leaf(name, value)
    rs = cp.random.RandomState(seed)
    for name in graph.leafs:
        t = graph[name]
        ref = run.lp.tensors.get(name)
        if ref is None or not t.external:
            continue
        shape = t.shape[::-1]
        label = t.ggml_name or name
        if t.kind is TensorKind.STATE:
            x = rs.normal(0.0, 0.1, shape, dtype=cp.float32)
        elif label.endswith("norm.weight"):
            x = 1.0 + rs.normal(0.0, 0.1, shape, dtype=cp.float32)
        elif label.endswith("ssm_a"):
            x = -cp.exp(rs.normal(0.0, 0.5, shape, dtype=cp.float32))
        elif label.endswith("ssm_dt.bias"):
            x = rs.normal(0.0, 0.5, shape, dtype=cp.float32)
        else:
            x = rs.normal(0.0, 1.0 / np.sqrt(t.shape[0]), shape, dtype=cp.float32)
        run.upload_device(name, _device_storage(cp, x.astype(cp.float32), ref.dtype))
    cp.cuda.Device().synchronize()


def _device_storage(cp: Any, x: Any, dtype: str) -> Any:
    if dtype == "f32":
        return x
    if dtype == "f16":
        return x.astype(cp.float16)
    if dtype == "bf16":  # round to nearest even, as storage.to_bf16_bits does on the host
        u = x.view(cp.uint32).astype(cp.uint64)
        return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(cp.uint16)
    return x.astype({"i32": cp.int32, "i64": cp.int64}[dtype])


def replay_time(
    graph: Graph,
    *,
    streams: str = "multi",
    policy: str = "happens_before",
    weight_dtype: str = "bf16",
    replays: int = 200,
    label: str = "",
    seed: int = 0,
) -> ReplayTiming:
    """Median GPU time of `replays` CUDA-graph replays of `graph` on one stream ("one", with
    the serial schedule) or on the schedule's streams ("multi")."""
    from concurrency.execute.gpu.runner import DeviceRun

    report = detect_branches(graph)
    schedule = stream_schedule(graph, report) if streams == "multi" else serial_schedule(graph)
    plan = plan_memory(graph, schedule, report, policy)
    lp = build_launch_plan(graph, schedule, plan, weight_dtype=weight_dtype)
    run = DeviceRun(lp)
    try:
        random_device_inputs(run, seed)
        run.run_eager()
        exec_ = run.capture()
        times = run.replay_times_us(exec_, replays)
    finally:
        run.free()
    return ReplayTiming(
        label=label or graph.meta.model,
        streams=lp.n_streams,
        policy=policy,
        weight_dtype=weight_dtype,
        median_us=float(np.median(times)),
        p10_us=float(np.percentile(times, 10)),
        p90_us=float(np.percentile(times, 90)),
        replays=replays,
        floor_us=hbm_floor_us(lp),
    )
