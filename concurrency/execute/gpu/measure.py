"""Measured timelines: per-kernel start and end from CUPTI, as LACE's `Timeline` value.

CUPTI's activity API (cupti-python) records every kernel's device start and end (ns), its
CUDA-graph node id and its launch's correlation id. Records map to graph nodes two ways:

* eager runs push an external correlation id (node index + 1) around each node's launches,
  and CUPTI pairs it with the correlation id of every kernel launched meanwhile;
* graph replays carry the graph node id of each kernel; stream capture creates the kernel
  nodes in launch order, so sorting a replay's kernels by graph node id gives the launch
  order, split per graph node with the kernel counts the eager recording saw (a cuBLASLt
  matmul may launch more than one kernel). Kernel names are checked against the launch plan
  either way, so a wrong mapping is an error, never a silently wrong timeline.

A node's span runs from its first kernel's start to its last kernel's end; its stream is the
schedule's stream (CUPTI reports the stream a graph was launched on). Times are µs from the
first kernel of the run. CUPTI's callbacks are process-wide: one recorder is active at a time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from concurrency.errors import LaceError
from concurrency.execute.gpu import backend
from concurrency.execute.gpu.launch import KernelLaunch, LaunchPlan
from concurrency.timing.timeline import KernelSpan, RunMeta, Timeline

_BUFFER_BYTES = 8 << 20


@dataclass(frozen=True)
class KernelRecord:
    """One kernel execution as CUPTI reports it."""

    name: str
    start_ns: int
    end_ns: int
    stream_id: int
    graph_node_id: int
    correlation_id: int


@dataclass
class _Hub:
    """The process-wide CUPTI callback registration and the recorder it feeds."""

    registered: bool = False
    active: KernelRecorder | None = None


_HUB = _Hub()


@dataclass
class KernelRecorder:
    """Collects kernel and external-correlation records between `start()` and `stop()`."""

    kernels: list[KernelRecord] = field(default_factory=list)
    external: dict[int, int] = field(default_factory=dict)
    _kinds: tuple = ()

    def start(self) -> None:
        cupti = backend.cupti()
        if _HUB.active is not None:
            raise LaceError("a CUPTI recording is already running; stop it first")
        if not _HUB.registered:
            cupti.activity_register_callbacks(_buffer_requested, _buffer_completed)
            _HUB.registered = True
        kinds = cupti.ActivityKind
        self._kinds = (
            kinds.CONCURRENT_KERNEL,
            kinds.EXTERNAL_CORRELATION,
            kinds.RUNTIME,
            kinds.DRIVER,
        )
        _HUB.active = self
        for kind in self._kinds:
            cupti.activity_enable(kind)

    def stop(self) -> None:
        cupti = backend.cupti()
        try:
            cupti.activity_flush_all(1)
        finally:
            for kind in self._kinds:
                cupti.activity_disable(kind)
            _HUB.active = None

    def push(self, external_id: int) -> None:
        cupti = backend.cupti()
        cupti.activity_push_external_correlation_id(
            cupti.ExternalCorrelationKind.CUSTOM0, int(external_id)
        )

    def pop(self) -> None:
        cupti = backend.cupti()
        cupti.activity_pop_external_correlation_id(cupti.ExternalCorrelationKind.CUSTOM0)


def _buffer_requested() -> tuple[int, int]:
    return _BUFFER_BYTES, 0


def _buffer_completed(activities: Sequence[Any]) -> None:
    rec = _HUB.active
    if rec is None:
        return
    cupti = backend.cupti()
    kinds = cupti.ActivityKind
    for a in activities:
        if a.kind == kinds.CONCURRENT_KERNEL:
            rec.kernels.append(
                KernelRecord(
                    str(a.name),
                    int(a.start),
                    int(a.end),
                    int(a.stream_id),
                    int(a.graph_node_id),
                    int(a.correlation_id),
                )
            )
        elif a.kind == kinds.EXTERNAL_CORRELATION:
            rec.external[int(a.correlation_id)] = int(a.external_id)


# ---------------------------------------------------------------------------- mapping
def _expected_name(launch: object) -> str | None:
    return launch.kernel if isinstance(launch, KernelLaunch) else None


def _check_names(lp: LaunchPlan, node_index: int, records: Sequence[KernelRecord]) -> None:
    """Our own kernels' records must carry their kernel's name (cuBLASLt's are not checked)."""
    ours = [name for launch in lp.nodes[node_index].launches if (name := _expected_name(launch))]
    seen = [r.name for r in records]
    for name in ours:
        if not any(name == s or s.startswith(name + "(") for s in seen):
            raise LaceError(
                f"CUPTI records of node {lp.nodes[node_index].node!r} are {seen}, expected "
                f"{name!r} among them: the kernel-to-node mapping failed"
            )


def eager_records(
    run: Any, recorder: KernelRecorder | None = None
) -> dict[int, list[KernelRecord]]:
    """Run the plan eagerly under CUPTI; node index → its kernels' records."""
    rec = recorder or KernelRecorder()

    def bracket(index: int, entering: bool) -> None:
        if entering:
            rec.push(index + 1)
        else:
            rec.pop()

    rec.start()
    try:
        run.run_eager(on_node=bracket)
    finally:
        rec.stop()
    by_node: dict[int, list[KernelRecord]] = defaultdict(list)
    for k in rec.kernels:
        ext = rec.external.get(k.correlation_id)
        if ext is None:
            continue
        by_node[ext - 1].append(k)
    for index, records in by_node.items():
        records.sort(key=lambda r: r.start_ns)
        _check_names(run.lp, index, records)
    launched = [n.index for n in run.lp.nodes if n.launches]
    missing = [run.lp.nodes[i].node for i in launched if i not in by_node]
    if missing:
        raise LaceError(f"CUPTI recorded no kernel for nodes {missing[:5]} of the eager run")
    return dict(by_node)


def graph_records(
    run: Any, counts: Mapping[int, int], graph_exec: Any | None = None
) -> dict[int, list[KernelRecord]]:
    """Replay the plan's CUDA graph once under CUPTI (capturing it inside the recording unless
    `graph_exec` is given, so CUPTI sees its nodes created); node index → its kernels' records,
    assigned in capture order using the per-node kernel `counts` of an eager recording."""
    rec = KernelRecorder()
    rec.start()
    try:
        exec_ = run.capture() if graph_exec is None else graph_exec
        run.replay(exec_)
    finally:
        rec.stop()
    kernels = sorted((k for k in rec.kernels if k.graph_node_id), key=lambda k: k.graph_node_id)
    order = [n.index for n in run.lp.nodes if n.launches]
    expected = sum(counts.get(i, 0) for i in order)
    if len(kernels) != expected:
        raise LaceError(
            f"the graph replay ran {len(kernels)} kernels with a graph node id, the eager run "
            f"{expected}; cannot map them to nodes"
        )
    by_node: dict[int, list[KernelRecord]] = {}
    pos = 0
    for index in order:
        n = counts.get(index, 0)
        by_node[index] = sorted(kernels[pos : pos + n], key=lambda r: r.start_ns)
        pos += n
        _check_names(run.lp, index, by_node[index])
    return by_node


def to_timeline(
    lp: LaunchPlan, by_node: Mapping[int, Sequence[KernelRecord]], launch: str, device: str
) -> Timeline:
    """Spans per node (first start → last end, µs from the run's first kernel)."""
    starts = [r.start_ns for records in by_node.values() for r in records]
    if not starts:
        raise LaceError("no kernel records to build a timeline from")
    t0 = min(starts)
    spans = []
    for index, records in sorted(by_node.items()):
        if not records:
            continue
        node = lp.nodes[index]
        names = [r.name for r in records]
        kernel = names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1})"
        spans.append(
            KernelSpan(
                node=node.node,
                kernel=kernel,
                stream=node.stream,
                start_us=(min(r.start_ns for r in records) - t0) / 1000.0,
                end_us=(max(r.end_ns for r in records) - t0) / 1000.0,
                source="measured",
            )
        )
    m = lp.graph.meta
    meta = RunMeta(
        device=device,
        model=m.model,
        layer=m.layer,
        mode=m.mode,
        batch=m.batch,
        tokens=m.tokens,
        policy=lp.plan.policy,
        streams=lp.n_streams,
        launch=launch,
        source="measured",
        notes=(
            f"weights {lp.weight_dtype}, matmul {lp.matmul}, gdn {lp.gdn}",
            "stream = the schedule's stream of the node; times from CUPTI (µs)",
        ),
    )
    return Timeline(tuple(spans), meta)


def measure_timeline(run: Any, launch: str = "graph", graph_exec: Any | None = None) -> Timeline:
    """A measured Timeline of one run of `run`'s plan: eager, or one replay of its CUDA graph
    (captured here unless given). Inputs must already be uploaded; states change."""
    by_eager = eager_records(run)
    device = backend.device_name()
    if launch == "eager":
        return to_timeline(run.lp, by_eager, "eager", device)
    if launch != "graph":
        raise LaceError(f"launch must be 'graph' or 'eager', not {launch!r}")
    counts = {i: len(r) for i, r in by_eager.items()}
    return to_timeline(run.lp, graph_records(run, counts, graph_exec), "graph", device)
