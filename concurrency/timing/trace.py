"""Chrome trace JSON (opens in Perfetto UI and chrome://tracing) from a timeline.

One process for the run and one thread track per stream ("stream 0", "stream 1", …);
kernels are complete events ("X", ts/dur in µs) with the node, op, bytes and FLOPs in args;
every cross-stream wait of a schedule becomes a flow arrow ("s" on the kernel whose event is
recorded, "f" with "bp": "e" on the kernel that waits); with a memory plan, a counter track
("C") shows the arena's live bytes, a tensor being live from its writer's start to its last
reader's end (with several named plans, one counter track per plan).

`validate_trace` checks what the tests (and Perfetto) rely on: known phases, the fields each
phase needs, non-decreasing timestamps per track and counter, and every flow start matched by
one finish no earlier than it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from concurrency.errors import LaceError
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.plan import MemoryPlan
from concurrency.timing.cost import graph_costs
from concurrency.timing.timeline import KernelSpan, Timeline

PHASES = frozenset({"M", "X", "s", "f", "C"})
PID = 1
COUNTER_NAME = "arena live bytes"


class TraceError(LaceError):
    """A trace document that Perfetto would misread or reject."""


def to_chrome_trace(
    timeline: Timeline,
    schedule: Schedule | None = None,
    plan: MemoryPlan | None = None,
    graph: Graph | None = None,
    *,
    weight_bytes_per_param: float = 2,
    plans: Mapping[str, MemoryPlan] | None = None,
) -> dict[str, object]:
    """The Chrome trace document of `timeline` (flows need `schedule`; the live-bytes counter
    needs `plan` and `graph`; op, bytes and FLOPs in args need `graph`). `plans` (name → plan,
    e.g. per policy) adds one counter track per plan, "arena live bytes (name)"."""
    if (plan is not None or plans) and graph is None:
        raise TraceError("a live-bytes counter needs the graph too: pass graph=… with plan=…")
    events: list[dict[str, object]] = _metadata(timeline)
    events += _kernel_events(timeline, graph, weight_bytes_per_param)
    if schedule is not None:
        events += _flow_events(timeline, schedule)
    if plan is not None and graph is not None:
        events += _counter_events(timeline, plan, graph)
    for name, named_plan in (plans or {}).items():
        assert graph is not None
        events += _counter_events(timeline, named_plan, graph, f"{COUNTER_NAME} ({name})")
    return {
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {"lace": timeline.meta.to_dict()},
    }


def save_trace(path: str | Path, timeline: Timeline, **kwargs: object) -> Path:
    """Write `to_chrome_trace(timeline, **kwargs)` as JSON; return the path."""
    path = Path(path)
    doc = to_chrome_trace(timeline, **kwargs)  # type: ignore[arg-type]
    validate_trace(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def load_trace(path: str | Path) -> dict[str, object]:
    """Read a trace file and validate it; problems name the file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TraceError(f"trace file {path} not found; check the path") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceError(f"{path}: not valid JSON ({exc})") from None
    try:
        validate_trace(doc)
    except TraceError as exc:
        raise TraceError(f"{path}: {exc}") from None
    return doc  # type: ignore[no-any-return]


def _metadata(timeline: Timeline) -> list[dict[str, object]]:
    m = timeline.meta
    title = f"LACE {m.source} · {m.device} · {m.model} {m.layer} {m.mode} B={m.batch}"
    events: list[dict[str, object]] = [
        {"ph": "M", "name": "process_name", "pid": PID, "tid": 0, "args": {"name": title}}
    ]
    streams = timeline.streams or (0,)
    for k in range(max(streams) + 1):
        track = {"ph": "M", "pid": PID, "tid": k}
        events.append({**track, "name": "thread_name", "args": {"name": f"stream {k}"}})
        events.append({**track, "name": "thread_sort_index", "args": {"sort_index": k}})
    return events


def _kernel_events(
    timeline: Timeline, graph: Graph | None, weight_bytes_per_param: float
) -> list[dict[str, object]]:
    costs = {}
    if graph is not None:
        costs = {c.node: c for c in graph_costs(graph, weight_bytes_per_param)}
    events = []
    for s in sorted(timeline.spans, key=lambda s: (s.stream, s.start_us, s.end_us)):
        args: dict[str, object] = {"node": s.node, "source": s.source}
        if graph is not None and s.node in graph.tensors:
            args["op"] = graph[s.node].op
            c = costs.get(s.node)
            if c is not None:
                args["bytes"] = c.bytes_moved
                args["flops"] = c.flops
        events.append(
            {
                "ph": "X",
                "name": s.kernel,
                "cat": "kernel",
                "ts": s.start_us,
                "dur": s.duration_us,
                "pid": PID,
                "tid": s.stream,
                "args": args,
            }
        )
    return events


def _flow_events(timeline: Timeline, schedule: Schedule) -> list[dict[str, object]]:
    """An arrow per distinct (recording kernel, waiting kernel) pair of the schedule's waits.

    A wait on a node that launched nothing (a view) stands for the last kernel queued before it
    on its stream, since an event records everything queued so far; a waiting node that
    launched nothing hands its wait to the next kernel on its stream."""
    spans = timeline.by_node
    last_before = _last_kernel_at_or_before(schedule, spans)
    next_after = _next_kernel_at_or_after(schedule, spans)
    pairs: dict[tuple[str, str], None] = {}
    for i, waits in enumerate(schedule.waits):
        consumer = next_after[i]
        if consumer is None:
            continue
        for j in waits:
            producer = last_before[j]
            if producer is not None and producer != consumer:
                pairs[(producer, consumer)] = None
    events: list[dict[str, object]] = []
    for flow_id, (producer, consumer) in enumerate(pairs, start=1):
        p, c = spans[producer], spans[consumer]
        common = {"name": "event wait", "cat": "stream-wait", "pid": PID, "id": flow_id}
        events.append({**common, "ph": "s", "ts": p.start_us, "tid": p.stream})
        events.append({**common, "ph": "f", "bp": "e", "ts": c.start_us, "tid": c.stream})
    return events


def _last_kernel_at_or_before(
    schedule: Schedule, spans: Mapping[str, KernelSpan]
) -> list[str | None]:
    out: list[str | None] = []
    last: dict[int, str] = {}
    for i, name in enumerate(schedule.nodes):
        if name in spans:
            last[schedule.stream[i]] = name
        out.append(last.get(schedule.stream[i]))
    return out


def _next_kernel_at_or_after(
    schedule: Schedule, spans: Mapping[str, KernelSpan]
) -> list[str | None]:
    out: list[str | None] = [None] * len(schedule.nodes)
    upcoming: dict[int, str] = {}
    for i in range(len(schedule.nodes) - 1, -1, -1):
        name = schedule.nodes[i]
        if name in spans:
            upcoming[schedule.stream[i]] = name
        out[i] = upcoming.get(schedule.stream[i])
    return out


def live_intervals(
    timeline: Timeline, plan: MemoryPlan, graph: Graph
) -> list[tuple[float, float, int]]:
    """(start µs, end µs, bytes) per placed tensor: from its writer's start to its last
    reader's end. A tensor reusing its parent in place shares the parent's bytes and extends
    the parent's interval instead of adding its own."""
    spans = timeline.by_node
    root = {}
    for name in plan.offsets:
        r = name
        while r in plan.inplace_of:
            r = plan.inplace_of[r]
        root[name] = r
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    for node_index, _tensor, base, _offset, _nbytes, _write in graph.memory_touches:
        span = spans.get(graph.nodes[node_index])
        if span is None or base not in root:
            continue
        r = root[base]
        start[r] = min(start.get(r, span.start_us), span.start_us)
        end[r] = max(end.get(r, span.end_us), span.end_us)
    return [(start[r], end[r], plan.sizes.get(r, graph[r].nbytes)) for r in start]


def _counter_events(
    timeline: Timeline, plan: MemoryPlan, graph: Graph, name: str = COUNTER_NAME
) -> list[dict[str, object]]:
    changes: dict[float, int] = {}
    for start, end, nbytes in live_intervals(timeline, plan, graph):
        changes[start] = changes.get(start, 0) + nbytes
        changes[end] = changes.get(end, 0) - nbytes
    events: list[dict[str, object]] = []
    live = 0
    for ts in sorted(changes):
        live += changes[ts]
        events.append(
            {
                "ph": "C",
                "name": name,
                "ts": ts,
                "pid": PID,
                "tid": 0,
                "args": {"live_bytes": live},
            }
        )
    return events


def validate_trace(doc: object) -> dict[str, int]:
    """Check a Chrome trace document; return event counts per phase or raise TraceError."""
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise TraceError("a trace is a JSON object with a 'traceEvents' list")
    counts: dict[str, int] = {}
    last_ts: dict[tuple[object, ...], float] = {}
    starts: dict[object, float] = {}
    finishes: dict[object, float] = {}
    for n, e in enumerate(doc["traceEvents"]):
        if not isinstance(e, dict):
            raise TraceError(f"event {n} is not an object")
        ph = e.get("ph")
        if ph not in PHASES:
            raise TraceError(f"event {n} has phase {ph!r}; expected one of {sorted(PHASES)}")
        counts[ph] = counts.get(ph, 0) + 1
        for key in ("name", "pid") + (("ts",) if ph != "M" else ()):
            if key not in e:
                raise TraceError(f"event {n} ({ph}) lacks {key!r}")
        if ph == "M":
            continue
        ts = e["ts"]
        if not isinstance(ts, (int, float)):
            raise TraceError(f"event {n} ({ph}) has a non-numeric ts {ts!r}")
        if ph == "X":
            dur = e.get("dur")
            if not isinstance(dur, (int, float)) or dur < 0:
                raise TraceError(f"event {n} (X {e['name']!r}) needs a duration ≥ 0")
            _monotonic(last_ts, ("X", e["pid"], e.get("tid")), ts, n)
        elif ph == "C":
            _monotonic(last_ts, ("C", e["pid"], e["name"]), ts, n)
        else:
            if "id" not in e:
                raise TraceError(f"flow event {n} lacks an 'id'")
            side = starts if ph == "s" else finishes
            if e["id"] in side:
                raise TraceError(f"flow id {e['id']!r} has two {ph!r} events")
            if ph == "f" and e.get("bp") != "e":
                raise TraceError(f'flow finish {n} needs "bp": "e" to bind to its slice')
            side[e["id"]] = ts
    unmatched = sorted(set(starts) ^ set(finishes), key=str)
    if unmatched:
        raise TraceError(f"flow ids {unmatched[:5]} lack a matching start or finish")
    backwards = [i for i in starts if finishes[i] < starts[i]]
    if backwards:
        raise TraceError(f"flow ids {backwards[:5]} finish before they start")
    return counts


def _monotonic(last: dict[tuple[object, ...], float], track: tuple[object, ...], ts: float, n: int):  # type: ignore[no-untyped-def]
    if ts < last.get(track, float("-inf")):
        raise TraceError(f"event {n} goes back in time on track {track[1:]} ({ts} µs)")
    last[track] = ts
