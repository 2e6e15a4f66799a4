"""A lower bound on the arena of any race-free plan: the largest total size of planned tensors
that may be live at the same moment under a schedule.

Tensor X is *over before* tensor Y when every node that touches X happens before the node that
writes Y (or is that node, when Y may legally take X's bytes in place). "Over before" is a
partial order; two tensors not ordered by it may be live together, so a race-free plan must
give them disjoint bytes. The tensors of any set that is pairwise unordered (an antichain)
therefore need their sizes' sum in bytes: the bound is the maximum-weight antichain, found
exactly with a max-flow (weighted Dilworth / König).

For speed the graph is cut at barrier nodes (every earlier node happens before them, and they
happen before every later node): no antichain spans a barrier, so each stretch between two
barriers is solved on its own. With one stream every node is a barrier and the bound is the
classic peak of live bytes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import pairwise

from concurrency.graph.ir import INPLACE_OPS, VIEW_OPS, Graph
from concurrency.graph.schedule import Schedule


@dataclass(frozen=True)
class LowerBound:
    """The bound, and one set of tensors that attains it."""

    bytes: int
    tensors: tuple[str, ...]


@dataclass(frozen=True)
class _Life:
    name: str
    size: int
    writer: int  # node index; -1 for graph inputs (written by the host before the graph)
    touches: int  # bitset of node indices that write or read it
    first: int  # smallest index touching it (writer, or first reader for inputs)
    last: int  # largest index touching it


def _lives(graph: Graph) -> list[_Life]:
    planned = [
        n
        for n in (*graph.leafs, *graph.nodes)
        if graph[n].is_input
        or (graph[n].op != "NONE" and not graph[n].is_view and not graph[n].external)
    ]
    touches: dict[str, int] = {n: 0 for n in planned}
    for i, n in enumerate(graph.nodes):
        t = graph[n]
        if t.op in VIEW_OPS:
            continue
        for name in (n, *t.srcs):
            base = graph.base(name)
            if base in touches:
                touches[base] |= 1 << i
    out = []
    for n in planned:
        t = graph[n]
        bits = touches[n]
        if t.nbytes == 0 or bits == 0:
            continue
        writer = -1 if t.is_input else graph.index[n]
        out.append(
            _Life(n, t.nbytes, writer, bits, (bits & -bits).bit_length() - 1, bits.bit_length() - 1)
        )
    return out


def _over_before(graph: Graph, schedule: Schedule, x: _Life, y: _Life) -> bool:
    if y.writer < 0 or graph[x.name].is_output:
        return False
    others = x.touches & ~(1 << y.writer)
    if others & ~schedule.ancestors(y.writer):
        return False
    if x.touches >> y.writer & 1:  # y's writer reads x: only fine if it may work in place
        ty, tx = graph[y.name], graph[x.name]
        return ty.op in INPLACE_OPS and (ty.shape, ty.strides_bytes, ty.dtype) == (
            tx.shape,
            tx.strides_bytes,
            tx.dtype,
        )
    return True


def _barriers(schedule: Schedule) -> list[int]:
    n = len(schedule.nodes)
    suffix = -1  # AND of ancestors of all later nodes (all ones when none)
    later_ok = [False] * n
    for b in range(n - 1, -1, -1):
        later_ok[b] = bool(suffix >> b & 1)
        suffix &= schedule.ancestors(b)
    full = 0
    out = []
    for b in range(n):
        if later_ok[b] and schedule.ancestors(b) == full:
            out.append(b)
        full |= 1 << b
    return out


def lower_bound(graph: Graph, schedule: Schedule) -> LowerBound:
    """The maximum total size of planned tensors that may be live at once under `schedule`."""
    lives = _lives(graph)
    cuts = _barriers(schedule)
    edges = [-1, *cuts, len(graph.nodes)]
    best = LowerBound(0, ())
    seen: set[frozenset[str]] = set()
    for lo, hi in pairwise(edges):
        group = [x for x in lives if x.first <= hi and x.last > lo]
        key = frozenset(x.name for x in group)
        if not group or key in seen:
            continue
        seen.add(key)
        found = _max_antichain(graph, schedule, group)
        if found.bytes > best.bytes:
            best = found
    return best


def _max_antichain(graph: Graph, schedule: Schedule, group: list[_Life]) -> LowerBound:
    """Max-weight antichain = total weight − max flow in the split network (König)."""
    k = len(group)
    src, dst = 2 * k, 2 * k + 1
    graph_edges: list[list[int]] = [[] for _ in range(2 * k + 2)]
    cap: list[int] = []
    head: list[int] = []

    def add(u: int, v: int, c: int) -> None:
        graph_edges[u].append(len(head))
        head.append(v)
        cap.append(c)
        graph_edges[v].append(len(head))
        head.append(u)
        cap.append(0)

    big = sum(x.size for x in group) + 1
    for i, x in enumerate(group):
        add(src, i, x.size)
        add(k + i, dst, x.size)
        for j, y in enumerate(group):
            if i != j and _over_before(graph, schedule, x, y):
                add(i, k + j, big)
    flow = _dinic(graph_edges, head, cap, src, dst)
    # antichain from the min cut: left side reachable and right side unreachable
    reach = _reachable(graph_edges, head, cap, src)
    chosen = tuple(x.name for i, x in enumerate(group) if i in reach and (k + i) not in reach)
    return LowerBound(sum(x.size for x in group) - flow, chosen)


def _reachable(adj: list[list[int]], head: list[int], cap: list[int], s: int) -> set[int]:
    seen = {s}
    queue = deque([s])
    while queue:
        u = queue.popleft()
        for e in adj[u]:
            if cap[e] > 0 and head[e] not in seen:
                seen.add(head[e])
                queue.append(head[e])
    return seen


def _dinic(adj: list[list[int]], head: list[int], cap: list[int], s: int, t: int) -> int:
    """Max flow by Dinic's algorithm on an edge-list residual graph (edge e ^ 1 is e's twin)."""
    total = 0
    while True:
        level = {s: 0}
        queue = deque([s])
        while queue:
            u = queue.popleft()
            for e in adj[u]:
                if cap[e] > 0 and head[e] not in level:
                    level[head[e]] = level[u] + 1
                    queue.append(head[e])
        if t not in level:
            return total
        cursor = dict.fromkeys(level, 0)
        while f := _augment(adj, head, cap, level, cursor, s, t, 1 << 62):
            total += f


def _augment(
    adj: list[list[int]],
    head: list[int],
    cap: list[int],
    level: dict[int, int],
    cursor: dict[int, int],
    u: int,
    t: int,
    f: int,
) -> int:
    """One blocking-flow augmenting path from u (depth ≤ 3 here: source, left, right, sink)."""
    if u == t:
        return f
    while cursor[u] < len(adj[u]):
        e = adj[u][cursor[u]]
        v = head[e]
        if cap[e] > 0 and level.get(v, -1) == level[u] + 1:
            got = _augment(adj, head, cap, level, cursor, v, t, min(f, cap[e]))
            if got:
                cap[e] -= got
                cap[e ^ 1] += got
                return got
        cursor[u] += 1
    return 0
