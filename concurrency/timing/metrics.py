"""Timeline metrics, named after Holistic Trace Analysis (HTA) where it has a name.

All times are in microseconds and work on simulated and measured timelines alike.

- makespan: from the first kernel's start to the last kernel's end (HTA's span of a rank's
  kernels; launch latency before the first kernel is not counted).
- busy time (per stream): the length of the union of that stream's kernel intervals
  (HTA's temporal breakdown calls this compute time; idle = makespan − busy).
- active time: the union of every kernel interval on any stream: the device is doing
  something (HTA's per-device compute time).
- concurrency time: the time with at least two kernels running at once.
- overlap ratio: concurrency time ÷ active time, in [0, 1]: the share of the time the GPU is
  working in which two or more streams work together. It is the between-streams analogue of
  HTA's computation–communication overlap percentage (0: the streams never overlap; 1: every
  busy instant has company).
- speedup: one timeline's makespan ÷ another's (serial over parallel).
- critical path: the longest chain of dependent kernels, each at its isolated time (alone on
  the GPU) plus its launch gap: the bound no schedule of the same graph on the same GPU beats.
- closeness: critical path ÷ makespan, in (0, 1]; 1 means the schedule reached the bound.
- work bound: the GPU's total work at full rate, max(all bytes ÷ bandwidth, Σ FLOPs ÷ peak of
  each kernel's unit): the other bound no schedule beats, and the one that bites when the
  kernels are large enough to fill the GPU on their own (the simulator never exceeds the
  bandwidth or the SMs, so its makespans respect it).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from concurrency.errors import LaceError
from concurrency.graph.deps import node_dependencies
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.timing.cost import graph_costs
from concurrency.timing.gpus import GpuSpec, get_gpu
from concurrency.timing.simulate import check_schedule, isolated_us, launch_model
from concurrency.timing.timeline import KernelSpan, Timeline


def makespan_us(timeline: Timeline) -> float:
    """First kernel start to last kernel end (0 for an empty timeline)."""
    if not timeline.spans:
        return 0.0
    return max(s.end_us for s in timeline.spans) - min(s.start_us for s in timeline.spans)


@dataclass(frozen=True)
class StreamOverlap:
    """Two consecutive kernels of one stream whose spans overlap: the later one starts
    `overlap_us` before the earlier one ends. A stream runs its kernels in order, so in a
    measured timeline this is timer skew or a wrong record-to-node mapping, never real."""

    stream: int
    first_node: str
    second_node: str
    overlap_us: float


#: How far CUPTI's stamps may put a kernel's end past the start of the next kernel of its stream.
#: A stream runs its kernels one after another (the captured graph has the edge, checked on the
#: GPU by tests/test_gpu_timeline.py), yet on the H200 the stamps of dependent kernels in a graph
#: replay disagree with their order by up to 0.8 µs (tiny stack prompt, 20 replays: data/
#: <recording>/diagnostics/cupti-order.json) and 1.09 µs (a 27B stack timeline at B = 8 of the
#: recording committed in 5d3d0d0): the stamps, not the kernels, are out of order.
CUPTI_ORDER_SLACK_US = 2.0


def stream_overlaps(timeline: Timeline, slack_us: float = 0.0) -> list[StreamOverlap]:
    """Every pair of consecutive same-stream kernels (by start time) that overlap by more than
    `slack_us`, largest first."""
    by_stream: dict[int, list[KernelSpan]] = {}
    for span in timeline.spans:
        by_stream.setdefault(span.stream, []).append(span)
    found = []
    for stream, spans in by_stream.items():
        ordered = sorted(spans, key=lambda s: (s.start_us, s.end_us))
        for a, b in itertools.pairwise(ordered):
            if a.end_us - b.start_us > slack_us:
                found.append(StreamOverlap(stream, a.node, b.node, a.end_us - b.start_us))
    return sorted(found, key=lambda o: -o.overlap_us)


def _union_us(spans: Iterable[KernelSpan]) -> float:
    total, reach = 0.0, float("-inf")
    for s in sorted(spans, key=lambda s: (s.start_us, s.end_us)):
        if s.end_us <= reach:
            continue
        total += s.end_us - max(s.start_us, reach)
        reach = s.end_us
    return total


def busy_us(timeline: Timeline) -> dict[int, float]:
    """Per stream, the time at least one of its kernels runs (union of its intervals)."""
    return {k: _union_us(s for s in timeline.spans if s.stream == k) for k in timeline.streams}


def active_us(timeline: Timeline) -> float:
    """The time at least one kernel runs on any stream (union of every interval)."""
    return _union_us(timeline.spans)


def concurrency_us(timeline: Timeline, at_least: int = 2) -> float:
    """The time at least `at_least` kernels run at once (a sweep over starts and ends)."""
    events = sorted(
        [(s.start_us, 1) for s in timeline.spans] + [(s.end_us, -1) for s in timeline.spans],
        key=lambda e: (e[0], e[1]),  # ends before starts at the same instant
    )
    total, running, last = 0.0, 0, 0.0
    for t, step in events:
        if running >= at_least:
            total += t - last
        running += step
        last = t
    return total


def overlap_ratio(timeline: Timeline) -> float:
    """concurrency_us ÷ active_us: the share of the GPU's busy time with ≥ 2 kernels running."""
    active = active_us(timeline)
    return concurrency_us(timeline) / active if active > 0 else 0.0


def speedup(serial: Timeline, parallel: Timeline) -> float:
    """makespan(serial) ÷ makespan(parallel): above 1 when the parallel schedule is faster."""
    denominator = makespan_us(parallel)
    if denominator <= 0:
        raise LaceError("the parallel timeline is empty; simulate or record kernels first")
    return makespan_us(serial) / denominator


@dataclass(frozen=True)
class CriticalPath:
    """The longest dependency chain: its length and its kernels, first to last."""

    length_us: float
    nodes: tuple[str, ...]


def critical_path(
    graph: Graph,
    schedule: Schedule | None,
    gpu: str | GpuSpec,
    *,
    launch: str = "graph",
    weight_bytes_per_param: float = 2,
) -> CriticalPath:
    """The longest chain of isolated kernel times plus launch gaps over the graph's data (and
    view-write) dependencies, measured like makespan from the first kernel's start.

    With a `schedule`, its waits count as edges too (a join waits for a whole branch), which
    gives the bound for that schedule's dependency structure; with None, the bound for any
    schedule of the graph. Stream order is never an edge: it is what a schedule chooses.
    In eager mode no kernel starts before its host launch (graph order, one per gap).
    """
    spec = get_gpu(gpu)
    if schedule is not None:
        check_schedule(graph, schedule)
    costs = graph_costs(graph, weight_bytes_per_param)
    model = launch_model(spec, costs, launch)
    deps = node_dependencies(graph)
    n = len(costs)
    finish = [0.0] * n
    via: list[int | None] = [None] * n
    first_start = float("inf")
    for i in range(n):
        edges = set(deps[i]) | set(schedule.waits[i] if schedule is not None else ())
        prev = max(edges, key=lambda j: (finish[j], j), default=None)
        ready = finish[prev] if prev is not None else 0.0
        via[i] = prev
        if costs[i].launches:
            start = max(ready + model.gap_us, model.issue_us[i])
            first_start = min(first_start, start)
            finish[i] = start + isolated_us(costs[i], spec)
        else:
            finish[i] = ready
    kernels = [i for i in range(n) if costs[i].launches]
    if not kernels:
        return CriticalPath(0.0, ())
    last = max(kernels, key=lambda i: (finish[i], -i))
    chain = []
    node: int | None = last
    while node is not None:
        if costs[node].launches:
            chain.append(graph.nodes[node])
        node = via[node]
    return CriticalPath(finish[last] - first_start, tuple(reversed(chain)))


def critical_path_us(
    graph: Graph,
    schedule: Schedule | None,
    gpu: str | GpuSpec,
    *,
    launch: str = "graph",
    weight_bytes_per_param: float = 2,
) -> float:
    """The critical-path bound in µs (see `critical_path`)."""
    return critical_path(
        graph, schedule, gpu, launch=launch, weight_bytes_per_param=weight_bytes_per_param
    ).length_us


def work_bound_us(graph: Graph, gpu: str | GpuSpec, *, weight_bytes_per_param: float = 2) -> float:
    """max(total bytes ÷ bandwidth, Σ FLOPs ÷ unit peak): the GPU's work at full rate (µs)."""
    spec = get_gpu(gpu)
    costs = graph_costs(graph, weight_bytes_per_param)
    memory = sum(c.bytes_moved for c in costs) / spec.bytes_per_us
    compute = sum(c.flops / spec.flops_per_us("bf16" if c.tensor_cores else "fp32") for c in costs)
    return max(memory, compute)


def closeness(critical_path_us: float, timeline: Timeline) -> float:
    """critical path ÷ makespan: 1 means the timeline reached the bound."""
    span = makespan_us(timeline)
    return critical_path_us / span if span > 0 else 0.0


@dataclass(frozen=True)
class KernelError:
    """One node's duration in both timelines; relative error = (simulated − measured) ÷
    measured."""

    node: str
    simulated_us: float
    measured_us: float

    @property
    def relative_error(self) -> float:
        if self.measured_us <= 0:
            return 0.0 if self.simulated_us <= 0 else float("inf")
        return (self.simulated_us - self.measured_us) / self.measured_us


@dataclass(frozen=True)
class Comparison:
    """A simulated timeline against a measured one: the calibration hook."""

    kernels: tuple[KernelError, ...]
    simulated_makespan_us: float
    measured_makespan_us: float
    only_simulated: tuple[str, ...]
    only_measured: tuple[str, ...]

    @property
    def makespan_error(self) -> float:
        """(simulated − measured) ÷ measured makespan."""
        if self.measured_makespan_us <= 0:
            return 0.0
        return (self.simulated_makespan_us - self.measured_makespan_us) / (
            self.measured_makespan_us
        )

    @property
    def median_abs_error(self) -> float:
        """The median of |relative error| over the kernels in both timelines."""
        errors = sorted(abs(k.relative_error) for k in self.kernels)
        if not errors:
            return 0.0
        mid = len(errors) // 2
        return errors[mid] if len(errors) % 2 else (errors[mid - 1] + errors[mid]) / 2

    def rows(self) -> list[dict[str, object]]:
        return [
            {
                "node": k.node,
                "simulated_us": k.simulated_us,
                "measured_us": k.measured_us,
                "relative_error": k.relative_error,
            }
            for k in self.kernels
        ]


def compare(simulated: Timeline, measured: Timeline) -> Comparison:
    """Match kernels by node name and compare durations and makespans."""
    sim, meas = simulated.by_node, measured.by_node
    both = [n for n in sim if n in meas]
    return Comparison(
        kernels=tuple(KernelError(n, sim[n].duration_us, meas[n].duration_us) for n in both),
        simulated_makespan_us=makespan_us(simulated),
        measured_makespan_us=makespan_us(measured),
        only_simulated=tuple(n for n in sim if n not in meas),
        only_measured=tuple(n for n in meas if n not in sim),
    )


def summary(
    timeline: Timeline,
    *,
    critical_path_us: float | None = None,
    serial: Timeline | None = None,
) -> dict[str, object]:
    """One table row: the run, its metrics, and (given) the bound and the serial baseline."""
    m = timeline.meta
    span = makespan_us(timeline)
    active = active_us(timeline)
    row: dict[str, object] = {
        "device": m.device,
        "model": m.model,
        "layer": m.layer,
        "mode": m.mode,
        "batch": m.batch,
        "streams": m.streams,
        "launch": m.launch,
        "source": m.source,
        "kernels": len(timeline),
        "makespan_us": span,
        "active_us": active,
        "idle_us": span - active,
        "concurrency_us": concurrency_us(timeline),
        "overlap_ratio": overlap_ratio(timeline),
    }
    if critical_path_us is not None:
        row["critical_path_us"] = critical_path_us
        row["closeness"] = closeness(critical_path_us, timeline)
    if serial is not None:
        row["speedup"] = speedup(serial, timeline)
    return row


def measured_critical_path_us(graph: Graph, schedule: Schedule, timeline: Timeline) -> float:
    """The longest chain of the timeline's own kernel durations over the graph's dependencies
    and the schedule's waits (no launch gaps): how long the step would take if every kernel
    ran as long as it did in this run and started the moment its inputs were ready. A
    measured multi-stream makespan over this is the time lost to gaps and to kernels slowing
    each other down."""
    check_schedule(graph, schedule)
    took: dict[str, float] = {}
    for s in timeline.spans:
        took[s.node] = took.get(s.node, 0.0) + (s.end_us - s.start_us)
    deps = node_dependencies(graph)
    finish = [0.0] * len(graph.nodes)
    for i, name in enumerate(graph.nodes):
        ready = max((finish[j] for j in (*deps[i], *schedule.waits[i])), default=0.0)
        finish[i] = ready + took.get(name, 0.0)
    return max(finish, default=0.0)
