"""Timing CUDA-graph replays of a planned graph: one stream against the schedule's streams.

`replay_time` builds the launch plan, fills weights and caches with random values drawn ON the
device (a 27B layer's weights never pass through the host), captures the whole graph once and
times `replays` back-to-back replays with CUDA events; the median is the figure.
`alternating_times` times several captured runs in rounds whose order changes from round to
round (the first run of a process is slower, and a fixed order once showed a false gain), so
one-stream and multi-stream replays are measured side by side. `hbm_floor_bytes` is what the
step must move (every weight once, every state read and written, the KV rows attention reads)
and `hbm_floor_us` that over a bandwidth (the H200's measured device-to-device copy rate by
default). `bench_rows` pairs each multi-stream row of a replay table with its one-stream row
(speedup, achieved bandwidth, ratio to the floor) for `lace bench`, live or from recordings.

`compare_streams` times the one-stream and the multi-stream graph of the same layer in
alternating rounds (one/multi, then multi/one, …): a fixed order once showed a false 3–5 %
gain (gdn-reference §6.3). `hbm_floor_us` is the bytes the step must move (every weight once,
every state read and written) over a bandwidth (the H200's measured device-to-device copy rate
by default). `kernel_table` turns a measured timeline into per-node rows with the bytes each
node moves (`node_bytes`) and the bandwidth it achieved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from concurrency.errors import LaceError
from concurrency.execute.gpu.launch import STORAGE_BYTES, LaunchPlan, build_launch_plan
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
    """µs to move the bytes a step cannot avoid at `bytes_per_s` (`hbm_floor_bytes`)."""
    return hbm_floor_bytes(lp) / bytes_per_s * 1e6


def hbm_floor_bytes(lp: LaunchPlan) -> int:
    """The bytes a step cannot avoid moving: every weight once (in its stored type), every
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
    return total


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
    gdn: str = "auto",
) -> ReplayTiming:
    """Median GPU time of `replays` CUDA-graph replays of `graph` on one stream ("one", with
    the serial schedule) or on the schedule's streams ("multi"); `gdn` picks the gated delta
    rule's kernels (launch.GDN_FORMS)."""
    from concurrency.execute.gpu.runner import DeviceRun

    lp = timed_plan(graph, streams, policy, weight_dtype, gdn)
    run = DeviceRun(lp)
    try:
        random_device_inputs(run, seed)
        run.run_eager()
        exec_ = run.capture()
        times = run.replay_times_us(exec_, replays)
    finally:
        run.free()
    return _timing(label or graph.meta.model, lp, policy, times)


def timed_plan(
    graph: Graph, streams: str, policy: str, weight_dtype: str, gdn: str = "auto"
) -> LaunchPlan:
    """The launch plan the timings run: the serial schedule ("one") or the multi-stream one."""
    report = detect_branches(graph)
    schedule = stream_schedule(graph, report) if streams == "multi" else serial_schedule(graph)
    plan = plan_memory(graph, schedule, report, policy)
    return build_launch_plan(graph, schedule, plan, weight_dtype=weight_dtype, gdn=gdn)


def _timing(label: str, lp: LaunchPlan, policy: str, times: Any) -> ReplayTiming:
    t = np.asarray(times, dtype=float)
    return ReplayTiming(
        label=label,
        streams=lp.n_streams,
        policy=policy,
        weight_dtype=lp.weight_dtype,
        median_us=float(np.median(t)),
        p10_us=float(np.percentile(t, 10)),
        p90_us=float(np.percentile(t, 90)),
        replays=len(t),
        floor_us=hbm_floor_us(lp),
    )


# ---------------------------------------------------------------------------- alternating rounds
def round_orders(n_runs: int, rounds: int) -> list[list[int]]:
    """The order of `n_runs` runs in each of `rounds` rounds: round r starts with run r mod n
    and goes forward on even rounds, backward on odd ones, so each run is first, last and in
    between as often as the rounds allow (two runs: AB, BA, AB, …)."""
    if n_runs < 1 or rounds < 1:
        raise LaceError(f"need at least one run and one round, got {n_runs} and {rounds}")
    orders = []
    for r in range(rounds):
        start = r % n_runs
        forward = [(start + k) % n_runs for k in range(n_runs)]
        orders.append(forward if r % 2 == 0 else [forward[0], *reversed(forward[1:])])
    return orders


def alternating_times(
    runs: Sequence[tuple[Any, Any]], rounds: int = 5, per_round: int = 20
) -> list[np.ndarray]:
    """Replay times (µs, CUDA events) of each (DeviceRun, captured graph) in `runs`: `rounds`
    rounds of `per_round` back-to-back replays each, in `round_orders`."""
    times: list[list[float]] = [[] for _ in runs]
    for order in round_orders(len(runs), rounds):
        for i in order:
            run, graph_exec = runs[i]
            times[i].extend(run.replay_times_us(graph_exec, per_round).tolist())
    return [np.asarray(t) for t in times]


@dataclass(frozen=True)
class ReplayStats:
    """Median and spread of a run's replay times (µs) and what it moved."""

    median_us: float
    p10_us: float
    p90_us: float
    replays: int
    floor_bytes: int
    floor_us: float

    @classmethod
    def of(
        cls, times_us: np.ndarray, floor_bytes: int, bytes_per_s: float = H200_COPY_BYTES_PER_S
    ) -> ReplayStats:
        return cls(
            median_us=float(np.median(times_us)),
            p10_us=float(np.percentile(times_us, 10)),
            p90_us=float(np.percentile(times_us, 90)),
            replays=len(times_us),
            floor_bytes=int(floor_bytes),
            floor_us=floor_bytes / bytes_per_s * 1e6,
        )

    @property
    def bandwidth_gb_s(self) -> float:
        """The floor's bytes over the median time (GB/s): the bandwidth the step achieved."""
        return self.floor_bytes / self.median_us / 1e3 if self.median_us > 0 else math.nan

    @property
    def floor_ratio(self) -> float:
        """Median time ÷ HBM floor: 1 is as fast as the bytes allow."""
        return self.median_us / self.floor_us if self.floor_us > 0 else math.nan


# ---------------------------------------------------------------------------- the bench table
#: What identifies one graph of a replay table (its one-stream and multi-stream rows share it).
GRAPH_KEYS = ("model", "config", "layer", "layers", "batch")
BENCH_COLUMNS = (
    "model",
    "layer",
    "layers",
    "batch",
    "policy",
    "streams",
    "one_us",
    "multi_us",
    "speedup",
    "bandwidth_gb_s",
    "floor_us",
    "floor_ratio",
    "replays",
    "device",
    "source",
)


def bench_rows(
    rows: Sequence[Mapping[str, Any]], policies: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """One row per multi-stream replay row (of `policies`, default all) that has a one-stream
    row for the same graph (and device and file, when the rows carry them): both medians, the
    speedup (one ÷ multi), the multi-stream run's achieved bandwidth and ratio to the floor.
    Rows whose status is not "ok" are left out."""
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    where = ("device", "file")

    def key(r: Mapping[str, Any]) -> tuple:
        return tuple(r.get(k) for k in (*GRAPH_KEYS, *where))

    one = {key(r): r for r in ok if r["schedule"] == "one"}
    out = []
    for r in ok:
        if r["schedule"] != "multi" or (policies is not None and r["policy"] not in policies):
            continue
        base = one.get(key(r))
        if base is None:
            continue
        out.append(
            {
                "model": r["model"],
                "layer": r["layer"],
                "layers": int(r["layers"]),
                "batch": int(r["batch"]),
                "policy": r["policy"],
                "streams": int(r["streams"]),
                "one_us": float(base["median_us"]),
                "multi_us": float(r["median_us"]),
                "speedup": float(base["median_us"]) / float(r["median_us"]),
                "bandwidth_gb_s": float(r["bandwidth_gb_s"]),
                "floor_us": float(r["floor_us"]),
                "floor_ratio": float(r["floor_ratio"]),
                "replays": int(r["replays"]),
                "device": str(r.get("device", "")),
                "source": str(r.get("source", "measured")),
            }
        )
    return out


def bench_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """`bench_rows` as aligned text lines."""
    head = (
        f"{'model':<14} {'graph':<9} {'B':>3} {'policy':<19} {'str':>3} {'one µs':>9} "
        f"{'multi µs':>9} {'speedup':>7} {'GB/s':>7} {'floor µs':>8} {'×floor':>6}"
    )
    lines = [head]
    for r in rows:
        graph = f"stack×{r['layers']}" if r["layer"] == "stack" else r["layer"]
        lines.append(
            f"{r['model'][:14]:<14} {graph:<9} {r['batch']:>3} {r['policy'][:19]:<19} "
            f"{r['streams']:>3} {r['one_us']:>9.1f} {r['multi_us']:>9.1f} {r['speedup']:>7.3f} "
            f"{r['bandwidth_gb_s']:>7.0f} {r['floor_us']:>8.1f} {r['floor_ratio']:>6.2f}"
        )
    return lines


def compare_streams(
    graph: Graph,
    *,
    weight_dtype: str = "bf16",
    policy: str = "happens_before",
    rounds: int = 6,
    replays: int = 50,
    label: str = "",
    seed: int = 0,
) -> tuple[ReplayTiming, ReplayTiming]:
    """The one-stream (serial schedule) and multi-stream graphs of `graph`, both captured
    first, then timed in `rounds` alternating rounds of `replays` replays each (one/multi on
    even rounds, multi/one on odd ones); medians over every replay of each."""
    from concurrency.execute.gpu.runner import DeviceRun

    order = ("one", "multi")
    runs: dict[str, Any] = {}
    plans: dict[str, LaunchPlan] = {}
    execs: dict[str, Any] = {}
    times: dict[str, list[float]] = {k: [] for k in order}
    try:
        for streams in order:
            plans[streams] = timed_plan(graph, streams, policy, weight_dtype)
            run = runs[streams] = DeviceRun(plans[streams])
            random_device_inputs(run, seed)
            run.run_eager()
            execs[streams] = run.capture()
        for r in range(rounds):
            for streams in order if r % 2 == 0 else order[::-1]:
                times[streams].extend(runs[streams].replay_times_us(execs[streams], replays))
    finally:
        for run in runs.values():
            run.free()
    label = label or graph.meta.model
    one, multi = (_timing(label, plans[k], policy, times[k]) for k in order)
    return one, multi


def node_bytes(lp: LaunchPlan, index: int) -> int:
    """The bytes node `index` must move at least, in device storage sizes: its result written
    once and every source read once — GET_ROWS reads only the rows it gathers, SET_ROWS writes
    only its rows, CPY's second source is the destination (written, not read). Views and
    nodes that launch nothing move 0. Strided views count their span (first to last byte)."""
    node = lp.nodes[index]
    if not node.launches:
        return 0
    t = lp.graph[node.node]
    refs = lp.tensors

    def size(name: str) -> int:
        ref = refs.get(name)
        return ref.nbytes if ref is not None else 0

    if t.op == "GET_ROWS":
        d, s = refs[t.name], refs[t.srcs[0]]
        rows = d.nbytes // STORAGE_BYTES[d.dtype] * STORAGE_BYTES[s.dtype]
        return d.nbytes + rows + size(t.srcs[1])
    if t.op == "SET_ROWS":
        d, s = refs[t.name], refs[t.srcs[0]]
        rows = s.nbytes // STORAGE_BYTES[s.dtype] * STORAGE_BYTES[d.dtype]
        return s.nbytes + rows + size(t.srcs[1])
    reads = t.srcs[:1] if t.op == "CPY" else t.srcs
    return size(t.name) + sum(size(n) for n in dict.fromkeys(reads))


@dataclass(frozen=True)
class KernelRow:
    """One node of a measured timeline: its kernel, time and the bytes it moves."""

    node: str
    kernel: str
    stream: int
    duration_us: float
    bytes_moved: int

    @property
    def gb_per_s(self) -> float:
        return self.bytes_moved / self.duration_us / 1e3 if self.duration_us > 0 else 0.0


def kernel_table(lp: LaunchPlan, timeline: Any) -> tuple[KernelRow, ...]:
    """Every span of a measured `timeline` of `lp` as a KernelRow, longest first."""
    index = {n.node: n.index for n in lp.nodes}
    rows = [
        KernelRow(
            s.node,
            s.kernel,
            s.stream,
            s.end_us - s.start_us,
            node_bytes(lp, index[s.node]),
        )
        for s in timeline.spans
    ]
    return tuple(sorted(rows, key=lambda r: -r.duration_us))
