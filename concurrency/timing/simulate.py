"""Predict a timeline: an event-driven simulation of a schedule's streams on a GPU spec.

The model, and what it assumes:

- **Streams.** Each stream issues its nodes in graph order. A node may start once the node
  before it on its stream has finished and every node it waits for (`schedule.waits`: fork,
  joins, cross-stream edges) has finished. Views and empty tensors launch nothing: they finish
  the moment they are ready and cost no launch gap.
- **Launch gaps.** `launch="graph"` (CUDA-graph replay): a kernel starts
  `gpu.launch_gap_graph_us` after it became ready; streams pay their gaps side by side.
  `launch="eager"`: one host thread launches every kernel in graph order, one every
  `gpu.launch_gap_eager_us` whatever its stream, so kernel k (counting from 1) cannot start
  before k·gap; the GPU-side gap of graph mode applies as well.
- **Sharing the GPU.** A running kernel asks for min(grid_blocks, sm_count) SMs; when the
  requests add up to more than the GPU has, every request is scaled down by the same factor.
  Its compute rate is the peak of its unit (bf16 tensor cores for MUL_MAT, MUL_MAT_ID and
  FLASH_ATTN_EXT, fp32 CUDA cores for the rest) times its share of the SMs. A kernel on few
  SMs cannot pull the whole memory bandwidth: it reaches at most
  min(1, SMs / (BANDWIDTH_SATURATING_SM_FRACTION · sm_count)) of it. The bandwidth is then
  shared max-min fairly: each kernel asks for what keeps pace with its compute (all it can
  reach when it does no arithmetic); small askers get theirs, the rest split what is left
  equally.
- **Roofline per kernel.** Under a given share a kernel needs max(flops / compute rate,
  bytes / bandwidth share) in all; it progresses at the inverse of that rate, piecewise
  constant between events (a start or a finish), so a kernel slows down while others run.
- **Peaks.** Datasheet peaks times the spec's efficiency fractions (see concurrency.timing.gpus).
- **Calibrated specs.** A spec with a `kernel_model` (`lace calibrate`) replaces the roofline
  and the SM/bandwidth sharing above by measured curves per kernel family and a fitted
  sharing rule (concurrency.timing.kernel_model); streams, waits and launch gaps stay as here.
- **Left out.** Caches (every byte comes from DRAM), occupancy and wave quantisation,
  tail effects, clock changes, host work other than launching, and event-record costs.

The simulation is deterministic: the same inputs give the same timeline, bit for bit.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from concurrency.errors import ConfigError, UnknownNameError
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.timing.cost import OpCost, graph_costs
from concurrency.timing.gpus import GpuSpec, get_gpu
from concurrency.timing.timeline import LAUNCH_MODES, KernelSpan, RunMeta, Timeline

#: Fraction of the SMs a memory-bound kernel needs to reach the full bandwidth.
BANDWIDTH_SATURATING_SM_FRACTION = 0.5
_EPS_US = 1e-9


@dataclass(frozen=True)
class LaunchModel:
    """When kernels may start: a GPU-side gap after readiness and a host issue time each."""

    gap_us: float
    issue_us: tuple[float, ...]  # per node index (0 for nodes that launch nothing)


def launch_model(gpu: GpuSpec, costs: Sequence[OpCost], launch: str) -> LaunchModel:
    """The launch gap and host issue times for `launch` ("graph" or "eager")."""
    if launch not in LAUNCH_MODES:
        raise UnknownNameError("launch mode", launch, LAUNCH_MODES)
    issue = [0.0] * len(costs)
    if launch == "eager":
        rank = 0
        for i, c in enumerate(costs):
            if c.launches:
                rank += 1
                issue[i] = rank * gpu.launch_gap_eager_us
    return LaunchModel(gpu.launch_gap_graph_us, tuple(issue))


def shared_durations(costs: Sequence[OpCost], gpu: GpuSpec) -> list[float]:
    """How long each of `costs` would take in all if they ran together for their whole life
    (µs); the simulator uses it between two events, as a rate."""
    if gpu.kernel_model is not None:
        return gpu.kernel_model.shared_durations(costs, gpu)
    sm = gpu.sm_count
    demand = [min(c.grid_blocks, sm) for c in costs]
    scale = min(1.0, sm / sum(demand)) if demand else 1.0
    bandwidth = gpu.bytes_per_us
    compute, need = [], []
    for c, d in zip(costs, demand, strict=True):
        sms = d * scale
        rate = gpu.flops_per_us("bf16" if c.tensor_cores else "fp32") * sms / sm
        reach = bandwidth * min(1.0, sms / (BANDWIDTH_SATURATING_SM_FRACTION * sm))
        compute.append(rate)
        need.append(min(reach, c.bytes_moved * rate / c.flops) if c.flops > 0 else reach)
    share = _max_min_fair(need, bandwidth)
    out = []
    for c, rate, bw in zip(costs, compute, share, strict=True):
        t_compute = c.flops / rate if c.flops > 0 else 0.0
        t_memory = c.bytes_moved / bw if c.bytes_moved > 0 else 0.0
        out.append(max(t_compute, t_memory))
    return out


def isolated_us(cost: OpCost, gpu: GpuSpec) -> float:
    """A kernel's time alone on the GPU (0 for a node that launches nothing)."""
    return shared_durations([cost], gpu)[0] if cost.launches else 0.0


def _max_min_fair(need: list[float], total: float) -> list[float]:
    """Water-filling: everyone gets min(need, an equal split of what is left)."""
    share = [0.0] * len(need)
    left = total
    order = sorted(range(len(need)), key=lambda i: (need[i], i))
    for pos, i in enumerate(order):
        give = min(need[i], left / (len(order) - pos))
        share[i] = give
        left -= give
    return share


def simulate(
    graph: Graph,
    schedule: Schedule,
    gpu: str | GpuSpec,
    *,
    launch: str = "graph",
    weight_bytes_per_param: float = 2,
) -> Timeline:
    """The predicted timeline of `schedule` on `gpu` (see the module docstring for the model)."""
    spec = get_gpu(gpu)
    check_schedule(graph, schedule)
    costs = graph_costs(graph, weight_bytes_per_param)
    model = launch_model(spec, costs, launch)
    start, end = _run(schedule, costs, model, spec)
    spans = tuple(
        KernelSpan(name, graph[name].label, schedule.stream[i], start[i], end[i], "simulated")
        for i, name in enumerate(graph.nodes)
        if costs[i].launches
    )
    m = graph.meta
    meta = RunMeta(
        device=spec.name,
        model=m.model,
        layer=m.layer,
        mode=m.mode,
        batch=m.batch,
        tokens=m.tokens,
        streams=schedule.n_streams,
        launch=launch,
        source="simulated",
        notes=(
            f"weights at {weight_bytes_per_param:g} bytes per parameter",
            f"{spec.name}: kernel times from curves fitted on measured kernels "
            f"({len(spec.kernel_model.curves)} families), launch gap "
            f"{spec.launch_gap_graph_us:.2f} µs"
            if spec.kernel_model is not None
            else f"{spec.name}: {spec.bandwidth_efficiency:.0%} of {spec.mem_bandwidth_gbps:g} "
            f"GB/s, {spec.compute_efficiency:.0%} of peak FLOP/s",
        ),
    )
    return Timeline(spans, meta)


def check_schedule(graph: Graph, schedule: Schedule) -> None:
    """The schedule must be one made for this graph."""
    if schedule.nodes != graph.nodes:
        raise ConfigError(
            "the schedule was made for another graph; build it from this graph "
            "(stream_schedule(graph, detect_branches(graph)) or serial_schedule(graph))"
        )


def _run(
    schedule: Schedule, costs: Sequence[OpCost], model: LaunchModel, gpu: GpuSpec
) -> tuple[list[float], list[float]]:
    """The event loop: per node index, its start and finish times (µs)."""
    n = len(costs)
    queues: list[list[int]] = [[] for _ in range(schedule.n_streams)]
    for i, s in enumerate(schedule.stream):
        queues[s].append(i)
    head = [0] * len(queues)
    busy = [False] * len(queues)  # a launched kernel at the head has not finished
    start = [0.0] * n
    finish: list[float | None] = [None] * n
    pending: list[tuple[float, int]] = []
    running: dict[int, float] = {}  # node → fraction of its work left
    durations: dict[int, float] = {}
    now = 0.0
    while True:
        _issue_ready(schedule, costs, model, queues, head, busy, finish, pending)
        if not pending and not running:
            break
        ends = {i: now + left * durations[i] for i, left in running.items()}
        t_next = min([*ends.values(), pending[0][0] if pending else float("inf")])
        done = [i for i, e in ends.items() if e <= t_next + _EPS_US]
        for i in list(running):
            if i in done:
                del running[i]
                finish[i] = t_next
                s = schedule.stream[i]
                busy[s] = False
                head[s] += 1
            elif durations[i] > 0:
                running[i] -= (t_next - now) / durations[i]
        now = t_next
        while pending and pending[0][0] <= now + _EPS_US:
            _, i = heapq.heappop(pending)
            start[i] = now
            running[i] = 1.0
        if running:
            order = sorted(running)
            durations = dict(
                zip(order, shared_durations([costs[i] for i in order], gpu), strict=True)
            )
    if any(f is None for f in finish):
        stuck = next(i for i, f in enumerate(finish) if f is None)
        raise ConfigError(
            f"node {schedule.nodes[stuck]!r} never became ready: its stream or waits form a "
            "cycle; waits must name earlier nodes"
        )
    return start, [float(f) for f in finish]  # type: ignore[arg-type]


def _issue_ready(
    schedule: Schedule,
    costs: Sequence[OpCost],
    model: LaunchModel,
    queues: list[list[int]],
    head: list[int],
    busy: list[bool],
    finish: list[float | None],
    pending: list[tuple[float, int]],
) -> None:
    """Move every stream forward as far as finished work allows: retire nodes that launch
    nothing, and give the next kernel of each idle stream its start time."""
    moved = True
    while moved:
        moved = False
        for s, queue in enumerate(queues):
            while not busy[s] and head[s] < len(queue):
                i = queue[head[s]]
                deps = list(schedule.waits[i])
                if head[s]:
                    deps.append(queue[head[s] - 1])
                times = [finish[j] for j in deps]
                if any(t is None for t in times):
                    break
                ready = max((t for t in times if t is not None), default=0.0)
                if not costs[i].launches:
                    finish[i] = ready
                    head[s] += 1
                    moved = True
                    continue
                at = max(ready + model.gap_us, model.issue_us[i])
                heapq.heappush(pending, (at, i))
                busy[s] = True
