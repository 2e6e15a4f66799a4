"""A brute-force oracle for the plan checker, written apart from it.

It shares no helper with `concurrency.memory.check`, `Graph.memory_touches` or `Schedule`'s
bitsets: happens-before is the transitive closure, with plain sets, of the schedule's raw
`stream` (a stream runs its nodes in index order) and `waits`; accesses and their byte
ranges come from the tensors and the plan's offsets directly; and every verdict is taken per
byte (or per elementary segment: a run of bytes where every access either covers all or none,
which gives the same answer) by looking at every access, in the style of ggml's test-alloc
`check_no_overlap`.

The semantics (the module docstring of `concurrency.memory.check` says them in prose):

* the host writes each graph input, one after another in leaf order, before every node, and
  reads each output after every node; a non-view node writes its own tensor and reads each
  distinct source; only tensors whose memory (the tensor, or a view's `view_src`) has an
  offset in the plan and that are not empty take part;
* race: two node accesses to a common byte, one a write, neither node before the other;
* use after reuse: a read of object X at byte b, X's latest write of b before the read (in
  event order) happens before a write of another object at b, which happens before the read;
  or a node's write and one of its reads of another object share a byte and the node is not a
  legal in-place op (INPLACE_OPS, same bytes, same shape, strides and dtype).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from concurrency.graph.ir import Graph
from concurrency.graph.ops import INPLACE_OPS
from concurrency.graph.schedule import Schedule
from concurrency.memory.plan import MemoryPlan

VIEWS = ("RESHAPE", "VIEW", "TRANSPOSE", "PERMUTE")
ELEMENT_BYTES = {"f32": 4, "f16": 2, "i32": 4, "i64": 8}
HOST = "(host)"

#: (kind, access kind or None, first node, second node, first tensor, second tensor,
#:  first stream, second stream, start, end)
Key = tuple[str, str | None, str, str, str, str, int, int, int, int]


@dataclass(frozen=True)
class _Touch:
    time: int  # host input writes: -m … -1 in leaf order; node i: i; host output reads: n
    tensor: str
    memory: str  # the base tensor whose bytes these are
    lo: int
    hi: int
    write: bool


def span_bytes(t) -> int:  # type: ignore[no-untyped-def]
    """Bytes a tensor spans (ggml_nbytes): 0 when a dimension is 0."""
    if 0 in t.shape:
        return 0
    return ELEMENT_BYTES[t.dtype] + sum(
        (n - 1) * s for n, s in zip(t.shape, t.strides_bytes, strict=True)
    )


def happened_before(schedule: Schedule) -> list[set[int]]:
    """before[b]: every node index that finishes before node b starts."""
    before: list[set[int]] = []
    for b, stream in enumerate(schedule.stream):
        direct = {a for a in range(b) if schedule.stream[a] == stream} | set(schedule.waits[b])
        closed = set(direct)
        for a in direct:
            closed |= before[a]
        before.append(closed)
    return before


def _touches(graph: Graph, plan: MemoryPlan) -> list[_Touch]:
    def where(name: str) -> tuple[str, int, int] | None:
        t = graph.tensors[name]
        memory = t.view_src if t.view_src is not None else name
        size = span_bytes(t)
        if memory not in plan.offsets or size == 0 or graph.tensors[memory].external:
            return None
        lo = plan.offsets[memory] + (t.view_offset_bytes if t.view_src is not None else 0)
        return memory, lo, lo + size

    out: list[_Touch] = []
    inputs = [x for x in graph.leafs if graph.tensors[x].is_input and where(x)]
    for k, name in enumerate(inputs):
        memory, lo, hi = where(name)  # type: ignore[misc]
        out.append(_Touch(k - len(inputs), name, memory, lo, hi, True))
    for i, name in enumerate(graph.nodes):
        t = graph.tensors[name]
        if t.op in VIEWS:
            continue
        for tensor, write in [(name, True)] + [(s, False) for s in sorted(set(t.srcs))]:
            got = where(tensor)
            if got:
                out.append(_Touch(i, tensor, got[0], got[1], got[2], write))
    n = len(graph.nodes)
    for name in graph.tensors:
        if graph.tensors[name].is_output and where(name):
            memory, lo, hi = where(name)  # type: ignore[misc]
            out.append(_Touch(n, name, memory, lo, hi, False))
    return out


def oracle_hazards(
    plan: MemoryPlan, schedule: Schedule | None = None, *, per_byte: bool = False
) -> set[Key]:
    """Every race and use after reuse of `plan` under `schedule` (default: its own)."""
    graph = plan.graph
    schedule = plan.schedule if schedule is None else schedule
    n = len(graph.nodes)
    before = happened_before(schedule)

    def hb(a: int, b: int) -> bool:
        if a < 0 or b == n:  # the host's writes come first (in order), its reads last
            return a < b
        return b >= 0 and a in before[b]

    def node(time: int) -> str:
        return graph.nodes[time] if 0 <= time < n else HOST

    def stream(time: int) -> int:
        return schedule.stream[time] if 0 <= time < n else -1

    position = {name: k for k, name in enumerate(plan.order)}
    rank = [position.get(name, len(position) + i) for i, name in enumerate(graph.nodes)]
    touches = _touches(graph, plan)
    found: set[Key] = set()

    # races: every pair of node accesses
    on_nodes = [x for x in touches if 0 <= x.time < n]
    for i, x in enumerate(on_nodes):
        for y in on_nodes[i + 1 :]:
            if x.time == y.time or not (x.write or y.write):
                continue
            lo, hi = max(x.lo, y.lo), min(x.hi, y.hi)
            if lo >= hi or hb(x.time, y.time) or hb(y.time, x.time):
                continue
            a, b = (x, y) if rank[x.time] < rank[y.time] else (y, x)
            access = (
                "write-after-write"
                if a.write and b.write
                else ("read-after-write" if a.write else "write-after-read")
            )
            found.add(
                ("race", access, node(a.time), node(b.time), a.tensor, b.tensor,
                 stream(a.time), stream(b.time), lo, hi)
            )  # fmt: skip

    # uses after reuse: per byte (or elementary segment), each read against every write
    if per_byte:
        cuts = sorted(range(min((x.lo for x in touches), default=0),
                            max((x.hi for x in touches), default=0) + 1))  # fmt: skip
    else:
        cuts = sorted({x.lo for x in touches} | {x.hi for x in touches})
    hull: dict[tuple[int, int, str, str], list[int]] = {}
    for p, q in pairwise(cuts):
        here = [x for x in touches if x.lo <= p and q <= x.hi]
        for r in here:
            if r.write:
                continue
            own = [w for w in here if w.write and w.memory == r.memory and w.time < r.time]
            if not own:
                continue
            latest = max(own, key=lambda w: w.time)
            for w in here:
                other = w.write and w.memory != r.memory
                if other and hb(latest.time, w.time) and hb(w.time, r.time):
                    span = hull.setdefault((w.time, r.time, w.tensor, r.tensor), [p, q])
                    span[0], span[1] = min(span[0], p), max(span[1], q)
    for (wt, rt, wn, rn), (lo, hi) in hull.items():
        found.add(
            ("use after reuse", None, node(wt), node(rt), wn, rn, stream(wt), stream(rt), lo, hi)
        )

    # a node writing over a source of another memory object
    for w in touches:
        if not w.write or not 0 <= w.time < n:
            continue
        for r in touches:
            if r.time != w.time or r.write or r.memory == w.memory:
                continue
            lo, hi = max(w.lo, r.lo), min(w.hi, r.hi)
            if lo >= hi:
                continue
            tw, tr = graph.tensors[w.tensor], graph.tensors[r.tensor]
            in_place = (
                tw.op in INPLACE_OPS
                and (w.lo, w.hi) == (r.lo, r.hi)
                and (tw.shape, tw.strides_bytes, tw.dtype) == (tr.shape, tr.strides_bytes, tr.dtype)
            )
            if not in_place:
                found.add(
                    ("use after reuse", None, node(w.time), node(r.time), w.tensor, r.tensor,
                     stream(w.time), stream(r.time), lo, hi)
                )  # fmt: skip
    return found


def hazard_key(h) -> Key:  # type: ignore[no-untyped-def]
    """A checker's Hazard as an oracle key (every field but the sentence)."""
    return (
        h.kind,
        h.access,
        h.first_node,
        h.second_node,
        h.first_tensor,
        h.second_tensor,
        h.first_stream,
        h.second_stream,
        h.start,
        h.end,
    )
