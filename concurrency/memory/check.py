"""Plan checking: every corruption a memory plan allows under a schedule.

A plan is correct for a schedule when no node can see bytes that are not the value it
expects. Two ways to break that, both reported by `check_plan`:

* a **race**: two accesses to overlapping arena bytes, at least one a write, by nodes the
  schedule leaves unordered (neither happens before the other). Whether the result is wrong
  depends on timing: some runs are right, some are not. Races are named by the order the
  allocator assumed (`MemoryPlan.order`): read-after-write, write-after-read or
  write-after-write (`Hazard.access`).
* a **use after reuse**: the schedule *orders* a write of another tensor into bytes that a
  tensor still has to be read from. A read r of memory object X (a base tensor, read directly
  or through a view) at byte b is corrupted by a write w of a different memory object Y at b
  when X's latest write to b before r (in node-index order, which every schedule respects; the
  host's write for an input) happens before w, and w happens before r. Every run then reads
  the wrong bytes: this is deterministic corruption, which a single serial run on the CPU
  shows as well as a GPU does. A node that writes its result over bytes of a source of
  another memory object that it reads is a use after reuse too ("writes over its own input"),
  unless it is a legal in-place op: op in INPLACE_OPS, the same byte range and the same layout
  (shape, strides, dtype) as that source.

When the overwrite w and X's latest write are unordered, or w and the read r are unordered,
the pair is a race (reported as one), not a use after reuse: races are the timing-dependent
corruption, uses after reuse the corruption that happens in every run.

Accesses: each non-view node writes its own tensor's bytes (for CPY, SET_ROWS and an in-place
op on a view that is the destination, inside its base) and reads each distinct source's bytes;
only planned (`Graph.planned`), non-empty tensors have arena bytes. The host writes every graph
input before the first node, one after another in leaf order, and reads every output
(`is_output`) after the last node; host accesses are ordered with every node, so they never
race. Hazards that involve the host name it `(host)`, on stream -1.

Races are found by sweeping the accesses in byte order (only overlapping accesses are ever
compared); uses after reuse by walking the accesses in node order over a map of byte segments
to the history of writes into them, which a read consults only back to its own tensor's latest
write. Both stay fast on the 3,750-node 64-layer stack.

ggml-cuda's own run-time check, `is_valid()`, is ported apart in
`concurrency.memory.ggml.cuda_is_valid`, so notebooks can show which hazards it misses.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from heapq import heappop, heappush

from concurrency.errors import LaceError
from concurrency.graph.ir import Graph
from concurrency.graph.ops import INPLACE_OPS
from concurrency.graph.schedule import Schedule
from concurrency.memory.plan import MemoryPlan

RACE, USE_AFTER_REUSE = "race", "use after reuse"
HAZARD_KINDS = (RACE, USE_AFTER_REUSE)
RAW, WAR, WAW = "read-after-write", "write-after-read", "write-after-write"
ACCESS_KINDS = (RAW, WAR, WAW)
#: Node name and stream of the host in hazards: it writes the inputs and reads the outputs.
HOST, HOST_STREAM = "(host)", -1
#: How tables and charts name the host on either side of a hazard: as the first side it is the
#: overwrite (its writes of the inputs), as the second the read (its reads of the outputs).
HOST_WRITES, HOST_READS = "the host, before the first node", "the host, after the last node"


@dataclass(frozen=True, slots=True)
class Hazard:
    """One corruption: two nodes (or a node and the host), the tensors they access and the
    overlapping bytes [start, end) of the arena.

    For a race, `first_*` is the access that comes first in the plan's order, the order the
    allocator assumed, and `access` names the pair in that order (a read planned before a
    write that may now overtake it is write-after-read). For a use after reuse, `first_*` is
    the overwrite (node and the tensor it writes) and `second_*` the read that comes after it
    (node and the tensor it reads); `access` is None. [start, end) is the hull of the bytes
    where the hazard holds.
    """

    kind: str
    first_node: str
    second_node: str
    first_tensor: str
    second_tensor: str
    first_stream: int
    second_stream: int
    start: int
    end: int
    explanation: str
    access: str | None = None

    @property
    def with_host(self) -> bool:
        """Whether one side (or both) is the host rather than a node of the graph."""
        return self.first_node == HOST or self.second_node == HOST

    @property
    def graph_nodes(self) -> tuple[str, ...]:
        """The hazard's sides that are nodes of the graph, first then second (the host left
        out): what a consumer may look up in the graph."""
        return tuple(n for n in (self.first_node, self.second_node) if n != HOST)

    @property
    def first_label(self) -> str:
        """`first_node`, or `HOST_WRITES` when the host's input writes are the overwrite."""
        return HOST_WRITES if self.first_node == HOST else self.first_node

    @property
    def second_label(self) -> str:
        """`second_node`, or `HOST_READS` when the host's output reads are the read."""
        return HOST_READS if self.second_node == HOST else self.second_node


@dataclass(frozen=True)
class PlanCheck:
    """The hazards of one plan under one schedule.

    `note` is None when the schedule is the plan's own, else the sentence saying it is not
    (from `MemoryPlan.bound_to`). `hazards` holds both kinds, sorted by first byte, then kind,
    then the nodes' order.
    """

    plan: MemoryPlan
    graph: Graph
    schedule: Schedule
    hazards: tuple[Hazard, ...]
    note: str | None = None

    @property
    def races(self) -> tuple[Hazard, ...]:
        return tuple(h for h in self.hazards if h.kind == RACE)

    @property
    def uses_after_reuse(self) -> tuple[Hazard, ...]:
        return tuple(h for h in self.hazards if h.kind == USE_AFTER_REUSE)

    @property
    def ok(self) -> bool:
        """No hazard of either kind."""
        return not self.hazards


def check_plan(plan: MemoryPlan, schedule: Schedule | None = None) -> PlanCheck:
    """Every race and every use after reuse of `plan` under `schedule` (default: the schedule
    the plan was made for). Under another schedule of the same graph the plan is re-checked
    and `note` says so; a schedule of another graph is an error."""
    graph = plan.graph
    if schedule is None:
        schedule = plan.schedule
    note = plan.bound_to(graph, schedule)
    events = _Events(graph, schedule, plan)
    found = _races(events) + _uses_after_reuse(events)
    found.sort(key=lambda f: (f[6], f[7], f[0], f[1], f[2], f[3], f[4]))
    n = len(graph.nodes)
    names, streams = (*graph.nodes, HOST), (*schedule.stream, HOST_STREAM)
    hazards = []
    for kind, first, second, first_tensor, second_tensor, access, start, end in found:
        a = first if 0 <= first < n else n  # the host's events all map to n
        b = second if 0 <= second < n else n
        hazards.append(
            _hazard(
                kind, names[a], names[b], streams[a], streams[b], first_tensor, second_tensor,
                access, start, end, first == second,
            )
        )  # fmt: skip
    return PlanCheck(plan, graph, schedule, tuple(hazards), note)


# ---------------------------------------------------------------------------- accesses
# An access is a tuple (event, tensor, memory object, start, end, is_write). Events number
# the moments: the host's input writes are -m … -1 (leaf order), node i is i, the host's
# output reads are n (after the last node).
_Access = tuple[int, str, str, int, int, bool]


class _Events:
    """The accesses of a graph laid out by a plan, and the schedule's order between events."""

    def __init__(self, graph: Graph, schedule: Schedule, plan: MemoryPlan) -> None:
        self.graph, self.schedule, self.plan = graph, schedule, plan
        offsets = plan.offsets
        planned = graph.planned
        missing = [n for n in planned if n not in offsets and graph[n].nbytes]
        if missing:
            raise LaceError(
                f"the {plan.policy} plan gives no offset to {len(missing)} planned tensor(s), "
                f"first {missing[0]!r}: a plan must place every planned tensor "
                "(graph.planned); plan this graph again"
            )
        n = len(graph.nodes)
        self.n = n
        inputs = [x for x in graph.leafs if graph[x].is_input and graph[x].nbytes]
        self.host_writes: list[_Access] = []
        for k, name in enumerate(inputs):
            start, end = offsets[name], offsets[name] + graph[name].nbytes
            self.host_writes.append((k - len(inputs), name, name, start, end, True))
        self.node_accesses: list[_Access] = []
        for i, tensor, base, offset, nbytes, write in graph.memory_touches:
            start = offsets[base] + offset
            self.node_accesses.append((i, tensor, base, start, start + nbytes, write))
        self.host_reads: list[_Access] = []
        for name in (*graph.leafs, *graph.nodes):
            t = graph[name]
            if t.is_output and t.nbytes:
                base = graph.base(name)
                if base in offsets:
                    start = offsets[base] + t.view_offset_bytes
                    self.host_reads.append((n, name, base, start, start + t.nbytes, False))
        self.ancestors = [schedule.ancestors(i) for i in range(n)]

    def happens_before(self, a: int, b: int) -> bool:
        """Event `a` surely ends before event `b` starts."""
        if a < 0:
            return b > a
        if b >= self.n:
            return a < self.n
        return b >= 0 and bool(self.ancestors[b] >> a & 1)


# A finding before it becomes a Hazard: (kind, first event, second event, first tensor,
# second tensor, access, start, end).
_Found = tuple[str, int, int, str, str, str | None, int, int]


# ---------------------------------------------------------------------------- races
def _races(events: _Events) -> list[_Found]:
    """Unordered overlapping node accesses, at least one a write.

    Accesses are swept in order of their first byte while a heap retires those that have
    ended; open accesses are kept as bitsets of their nodes, so a new access meets only the
    open ones whose nodes the schedule leaves unordered with its own (one AND with that node's
    concurrency bitset). The cost grows with the racing pairs, not with the square of the node
    count nor with the pairs that reuse bytes safely.
    """
    graph, schedule, plan = events.graph, events.schedule, events.plan
    concurrent = schedule.unordered_sets
    # a node the schedule orders with every other node can take part in no race
    accesses = [a for a in events.node_accesses if concurrent[a[0]]]
    accesses.sort(key=lambda a: (a[3], a[4], a[0]))
    where = {name: k for k, name in enumerate(plan.order)}
    position = [where.get(name, len(where) + i) for i, name in enumerate(graph.nodes)]
    open_by_node: dict[int, dict[int, _Access]] = {}  # node → its open accesses by sequence
    open_writes: dict[int, int] = {}  # node → how many of its open accesses are writes
    any_mask = write_mask = 0  # nodes with an open access / an open write
    ending: list[tuple[int, int]] = []  # (end, sequence) of the open accesses
    found: list[_Found] = []
    for seq, x in enumerate(accesses):
        node, start, write = x[0], x[3], x[5]
        while ending and ending[0][0] <= start:
            done = heappop(ending)[1]
            y = accesses[done]
            mine = open_by_node[y[0]]
            del mine[done]
            if y[5]:
                open_writes[y[0]] -= 1
                if not open_writes[y[0]]:
                    write_mask ^= 1 << y[0]
            if not mine:
                any_mask ^= 1 << y[0]
        mask = concurrent[node] & (any_mask if write else write_mask)
        while mask:
            low = mask & -mask
            mask ^= low
            for y in open_by_node[low.bit_length() - 1].values():
                if write or y[5]:
                    a, b = (y, x) if position[y[0]] < position[node] else (x, y)
                    access = WAW if a[5] and b[5] else (RAW if a[5] else WAR)
                    found.append(
                        (RACE, a[0], b[0], a[1], b[1], access, max(a[3], b[3]), min(a[4], b[4]))
                    )
        mine = open_by_node.get(node)
        if not mine:
            open_by_node[node] = mine = {}
            any_mask |= 1 << node
        mine[seq] = x
        if write:
            count = open_writes.get(node, 0)
            if not count:
                write_mask |= 1 << node
            open_writes[node] = count + 1
        heappush(ending, (x[4], seq))
    return found


# ---------------------------------------------------------------------------- uses after reuse
def _uses_after_reuse(events: _Events) -> list[_Found]:
    """Ordered overwrites before a read, and nodes writing over their own inputs.

    The arena is cut into segments at every write's first and last byte; each segment keeps
    the writes into it as a linked list, newest first ((event, object, tensor, older)).
    Events are walked in order, a node's reads before its write: a read walks a segment's
    list only back to its own object's latest write (on a correct plan that is the list's
    head), and tests each overwrite newer than that with `happens_before`.
    """
    graph = events.graph
    starts = [0]  # segment k is [starts[k], starts[k + 1]); the last one is unbounded
    lists: list[tuple | None] = [None]
    hull: dict[tuple[int, int, str, str], list[int]] = {}
    hb = events.happens_before

    def cut(at: int) -> int:
        k = bisect_right(starts, at) - 1
        if starts[k] != at:
            k += 1
            starts.insert(k, at)
            lists.insert(k, lists[k - 1])
        return k

    def write(access: _Access) -> None:
        event, tensor, obj, start, end, _ = access
        lo, hi = cut(start), cut(end)
        for k in range(lo, hi):
            lists[k] = (event, obj, tensor, lists[k])

    def read(access: _Access) -> None:
        event, tensor, obj, start, end, _ = access
        k = bisect_right(starts, start) - 1
        last = len(starts) - 1
        while k <= last and starts[k] < end:
            cell = lists[k]
            if cell is not None and cell[1] != obj:
                newer = []
                while cell is not None and cell[1] != obj:
                    newer.append(cell)
                    cell = cell[3]
                if cell is not None:
                    latest = cell[0]
                    lo = max(starts[k], start)
                    hi = end if k == last else min(starts[k + 1], end)
                    for w in newer:
                        if hb(latest, w[0]) and hb(w[0], event):
                            key = (w[0], event, w[2], tensor)
                            span = hull.get(key)
                            if span is None:
                                hull[key] = [lo, hi]
                            else:
                                span[0] = min(span[0], lo)
                                span[1] = max(span[1], hi)
            k += 1

    found: list[_Found] = []
    for access in events.host_writes:
        write(access)
    by_node: list[list[_Access]] = [[] for _ in range(events.n)]
    for access in events.node_accesses:
        by_node[access[0]].append(access)
    for accesses in by_node:
        writes = [a for a in accesses if a[5]]
        reads = [a for a in accesses if not a[5]]
        for r in reads:
            read(r)
        for w in writes:
            for r in reads:
                if r[2] != w[2] and r[3] < w[4] and w[3] < r[4] and not _in_place(graph, w, r):
                    lo, hi = max(w[3], r[3]), min(w[4], r[4])
                    found.append((USE_AFTER_REUSE, w[0], r[0], w[1], r[1], None, lo, hi))
            write(w)
    for r in events.host_reads:
        read(r)
    for (w, r, written, read_tensor), (lo, hi) in hull.items():
        found.append((USE_AFTER_REUSE, w, r, written, read_tensor, None, lo, hi))
    return found


def _in_place(graph: Graph, w: _Access, r: _Access) -> bool:
    """Whether node write `w` may legally take the bytes of its source read `r` in place."""
    t, s = graph[w[1]], graph[r[1]]
    return (
        t.op in INPLACE_OPS
        and (w[3], w[4]) == (r[3], r[4])
        and (t.shape, t.strides_bytes, t.dtype) == (s.shape, s.strides_bytes, s.dtype)
    )


# ---------------------------------------------------------------------------- sentences
def _hazard(
    kind: str,
    na: str,
    nb: str,
    sa: int,
    sb: int,
    first_tensor: str,
    second_tensor: str,
    access: str | None,
    start: int,
    end: int,
    same_node: bool,
) -> Hazard:
    """The hazard between node (or host) `na` on stream `sa` and `nb` on `sb`, in words."""
    span = f"bytes {start}–{end - 1}"
    if kind == USE_AFTER_REUSE:
        text = _reuse_sentence(na, nb, sa, sb, first_tensor, second_tensor, span, same_node)
    elif access == WAR:
        text = (
            f"`{nb}` (stream {sb}) overwrites {span} of `{first_tensor}` "
            f"while `{na}` on stream {sa} may still read it"
        )
    elif access == RAW:
        text = (
            f"`{nb}` (stream {sb}) reads {span} as `{second_tensor}` while `{na}` on stream "
            f"{sa}, planned earlier, may still be writing `{first_tensor}` there"
        )
    else:
        text = (
            f"`{na}` (stream {sa}) and `{nb}` (stream {sb}) both write {span} "
            f"(`{first_tensor}`, `{second_tensor}`) with nothing ordering them"
        )
    return Hazard(kind, na, nb, first_tensor, second_tensor, sa, sb, start, end, text, access)


def _reuse_sentence(
    writer: str,
    reader: str,
    writer_stream: int,
    reader_stream: int,
    written: str,
    read: str,
    span: str,
    same_node: bool,
) -> str:
    if same_node:
        return (
            f"`{writer}` (stream {writer_stream}) writes its result over {span} of `{read}`, "
            "its own input, which is no legal in-place op (same op kind, bytes and layout): "
            "use after reuse in every run"
        )
    if writer == HOST:
        who = f"the host, writing input `{written}`,"
    elif written == writer:
        who = f"`{writer}` (stream {writer_stream})"
    else:
        who = f"`{writer}` (stream {writer_stream}), writing `{written}`,"
    if reader == HOST:
        then = "which the host reads as a graph output after the last node"
    else:
        then = f"which `{reader}` (stream {reader_stream}) reads later"
    return f"{who} overwrites {span} of `{read}`, {then}: use after reuse in every run"
