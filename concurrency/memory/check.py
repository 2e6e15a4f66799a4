"""Memory hazards: arena accesses that overlap in bytes but that a schedule leaves unordered.

ggml's allocator reuses memory assuming nodes run one after another in its planning order.
Once a schedule spreads nodes over streams, two nodes may touch the same bytes with nothing
ordering them; if one of them writes, the result depends on timing. `check_hazards` finds
every such pair by sweeping the accesses in byte order (only accesses that overlap are ever
compared), so it stays fast on the 3,750-node 64-layer stack.

ggml-cuda's own run-time check, `is_valid()`, is ported apart in
`concurrency.memory.ggml.cuda_is_valid`, so notebooks can show which hazards it misses.
"""

from __future__ import annotations

from dataclasses import dataclass
from heapq import heappop, heappush

from concurrency.errors import ConfigError
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.plan import MemoryPlan

RAW, WAR, WAW = "read-after-write", "write-after-read", "write-after-write"
KINDS = (RAW, WAR, WAW)


@dataclass(frozen=True)
class Access:
    """One node reading or writing the bytes [start, end) of a tensor in the arena."""

    node: int  # index in graph.nodes
    tensor: str
    start: int
    end: int
    write: bool


@dataclass(frozen=True)
class Hazard:
    """Two overlapping accesses, at least one a write, that the schedule does not order.

    `first_*` is the access that comes first in the plan's order (`MemoryPlan.order`), the
    order the allocator assumed; `kind` names the pair in that order (a read planned before
    a write that may now overtake it is write-after-read). [start, end) is the overlap.
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


def node_accesses(graph: Graph, plan: MemoryPlan) -> list[Access]:
    """Every arena access of every node, in node order.

    A compute node (op not in VIEW_OPS) writes its own tensor's bytes (for CPY, SET_ROWS and
    in-place SCALE that is the destination view) and reads each source's bytes. View ops
    access nothing. External and empty tensors have no arena range and are skipped; graph
    inputs are written by the host before the graph runs, so they are only ever read.
    """
    out: list[Access] = []
    offsets = plan.offsets
    for i, tensor, base, offset, nbytes, write in graph.memory_touches:
        start = offsets.get(base)
        if start is not None:
            out.append(Access(i, tensor, start + offset, start + offset + nbytes, write))
    return out


def check_hazards(graph: Graph, schedule: Schedule, plan: MemoryPlan) -> list[Hazard]:
    """All hazards of running `graph` under `schedule` with memory laid out by `plan`.

    One hazard per (node pair, tensor pair), sorted by byte start, then node indices.
    Accesses are swept in order of their first byte while a heap retires those that have
    ended; open accesses are kept as bitsets of their nodes, so a new access meets only the
    open ones whose nodes the schedule leaves unordered with its own (one AND with that node's
    concurrency bitset). The cost grows with the racing pairs, not with the square of the node
    count nor with the pairs that reuse bytes safely.
    """
    if tuple(schedule.nodes) != tuple(graph.nodes):
        raise ConfigError("the schedule was made for a different graph; rebuild it for this one")
    plan.bound_to(graph, schedule)  # another graph is an error
    accesses = sorted(node_accesses(graph, plan), key=lambda a: (a.start, a.end, a.node))
    concurrent = schedule.unordered_sets
    position = _plan_positions(graph, plan)
    n = len(graph.nodes)
    open_by_node: list[list[Access]] = [[] for _ in range(n)]
    n_open = [[0] * n, [0] * n]  # per node: open reads, open writes
    open_mask = [0, 0]  # nodes with an open read / an open write
    ending: list[tuple[int, int, Access]] = []
    found: list[tuple[Access, Access]] = []
    for seq, x in enumerate(accesses):
        while ending and ending[0][0] <= x.start:
            y = heappop(ending)[2]
            open_by_node[y.node].remove(y)
            n_open[y.write][y.node] -= 1
            if not n_open[y.write][y.node]:
                open_mask[y.write] ^= 1 << y.node
        mask = concurrent[x.node] & (open_mask[1] | open_mask[0] if x.write else open_mask[1])
        while mask:
            low = mask & -mask
            mask ^= low
            for y in open_by_node[low.bit_length() - 1]:
                if (x.write or y.write) and not schedule.ordered(x.node, y.node):
                    found.append((y, x) if position[y.node] < position[x.node] else (x, y))
        open_by_node[x.node].append(x)
        n_open[x.write][x.node] += 1
        open_mask[x.write] |= 1 << x.node
        heappush(ending, (x.end, seq, x))
    hazards = [_hazard(graph, schedule, a, b) for a, b in found]
    index = graph.index
    hazards.sort(
        key=lambda h: (
            h.start,
            index[h.first_node],
            index[h.second_node],
            h.first_tensor,
            h.second_tensor,
        )
    )
    return hazards


def _plan_positions(graph: Graph, plan: MemoryPlan) -> list[int]:
    """Position of each node index in the plan's order; nodes the order lacks go after it,
    in graph order."""
    where = {n: k for k, n in enumerate(plan.order)}
    return [where.get(n, len(where) + i) for i, n in enumerate(graph.nodes)]


def _hazard(graph: Graph, schedule: Schedule, a: Access, b: Access) -> Hazard:
    """The hazard between access `a` (first in plan order) and access `b`."""
    kind = WAW if a.write and b.write else (RAW if a.write else WAR)
    start, end = max(a.start, b.start), min(a.end, b.end)
    na, nb = graph.nodes[a.node], graph.nodes[b.node]
    sa, sb = schedule.stream[a.node], schedule.stream[b.node]
    span = f"bytes {start}–{end - 1}"
    if kind == WAR:
        text = (
            f"`{nb}` (stream {sb}) overwrites {span} of `{a.tensor}` "
            f"while `{na}` on stream {sa} may still read it"
        )
    elif kind == RAW:
        text = (
            f"`{nb}` (stream {sb}) reads {span} as `{b.tensor}` while `{na}` on stream {sa}, "
            f"planned earlier, may still be writing `{a.tensor}` there"
        )
    else:
        text = (
            f"`{na}` (stream {sa}) and `{nb}` (stream {sb}) both write {span} "
            f"(`{a.tensor}`, `{b.tensor}`) with nothing ordering them"
        )
    return Hazard(kind, na, nb, a.tensor, b.tensor, sa, sb, start, end, text)
