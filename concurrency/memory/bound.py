"""A lower bound on the arena of any hazard-free plan: the heaviest set of planned tensors
that must pairwise get disjoint bytes under a schedule.

Each planned, non-empty tensor X (`Graph.planned`) is *created* by one write: the host's, for
a graph input (the host writes the inputs one after another, in leaf order, before the first
node), or its node's. Its *accesses* are that write, every node that reads or writes its
memory (directly or through a view), and the host's read after the last node when X is an
output. X is *over before* Y when every access of X happens before Y's creation, or is Y's
writer reading X when Y may legally take X's bytes in place (op in INPLACE_OPS, reading X or
a view of X with Y's shape, strides and dtype). Only then may a plan give Y bytes of X: if
some access of X does not happen before Y's creation, it is unordered with it (a race) or
comes after it (a use after reuse, `concurrency.memory.check`). "Over before" is a partial
order, so every pair of tensors in an antichain (a set pairwise not over before) needs
disjoint bytes, and the arena needs at least their sizes' sum. `lower_bound` is exactly the
maximum-weight antichain, found with a max-flow (weighted Dilworth / König).

What that is:

* One stream: the peak of live bytes. A tensor is live from its creation to its last access
  (inputs from the host's write of them, outputs to the end); at each node every tensor the
  node reads and writes is live, except that a result that may take a source's bytes in
  place shares them (the source, never smaller, is counted). The bound is the largest live
  total over the nodes and the host's input writes.
* Several streams: the heaviest set of tensors that are pairwise unordered by "over before".
  Each pair may be live together in some run, but the whole set need not be live at once in
  any single run, so the bound can exceed every run's peak of live bytes; it is still a lower
  bound on the arena, because each pair needs disjoint bytes.

Sizes are rounded up to `alignment`, as the allocator reserves them (`MemoryPlan.sizes`):
the bound is a lower bound on `MemoryPlan.arena_bytes` of any hazard-free plan that, like
ggml-alloc and every LACE policy, gives each tensor whole aligned bytes from its creation to
its last access. (A plan that let a tensor overlap the part of another that is never read
again could go lower.)

For speed the graph is cut at barrier nodes (every earlier node happens before them, and they
happen before every later node): no antichain spans a barrier, so each stretch between two
barriers is solved on its own.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from heapq import heappop, heappush
from itertools import pairwise

from concurrency.graph.ir import INPLACE_OPS, VIEW_OPS, Graph
from concurrency.graph.schedule import Schedule


@dataclass(frozen=True)
class LowerBound:
    """The bound in bytes, and one set of tensors that attains it."""

    bytes: int
    tensors: tuple[str, ...]


@dataclass(frozen=True)
class _Life:
    name: str
    size: int  # bytes, rounded up to the alignment
    created: int  # node index of its writer; graph inputs: -m … -1 (the host, leaf order)
    touches: int  # bitset of the node indices that read or write its memory
    last: int  # last access: the largest touching node index, n for an output
    output: bool
    in_place_at: frozenset[int]  # nodes whose result may take its bytes in place


def _lives(graph: Graph, alignment: int) -> list[_Life]:
    n = len(graph.nodes)
    planned = [x for x in graph.planned if graph[x].nbytes]
    inputs = [x for x in planned if graph[x].is_input]
    created = {x: k - len(inputs) for k, x in enumerate(inputs)}
    touches = dict.fromkeys(planned, 0)
    in_place: dict[str, set[int]] = {x: set() for x in planned}
    for i, name in enumerate(graph.nodes):
        t = graph[name]
        if t.op in VIEW_OPS:
            continue
        if name in touches:
            created[name] = i
        layout = (t.shape, t.strides_bytes, t.dtype)
        for x in (name, *t.srcs):
            tx = graph[x]
            base = graph.base(x)
            if base not in touches or not tx.nbytes:
                continue
            touches[base] |= 1 << i
            same_layout = (tx.shape, tx.strides_bytes, tx.dtype) == layout
            if x != name and t.op in INPLACE_OPS and same_layout:
                in_place[base].add(i)
    out = []
    for x in planned:
        bits, output = touches[x], graph[x].is_output
        last = n if output else max(bits.bit_length() - 1, created[x])
        size = -(-graph[x].nbytes // alignment) * alignment
        out.append(_Life(x, size, created[x], bits, last, output, frozenset(in_place[x])))
    return out


def _over_before(schedule: Schedule, x: _Life, y: _Life) -> bool:
    """Every access of x happens before y's creation (or is y's in-place read of x)."""
    if x.output:
        return False
    w = y.created
    if w < 0:  # y is an input: only an input written earlier and never touched by a node
        return x.created < w and not x.touches
    if x.touches >> w & 1 and w not in x.in_place_at:
        return False
    return not (x.touches & ~(1 << w) & ~schedule.ancestors(w))


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


def lower_bound(graph: Graph, schedule: Schedule, alignment: int = 1) -> LowerBound:
    """The heaviest set of planned tensors that pairwise need disjoint bytes under `schedule`
    (sizes rounded up to `alignment`): see the module docstring for what it is exactly."""
    lives = sorted(_lives(graph, alignment), key=lambda x: x.created)
    cuts = _barriers(schedule)
    first = -len(lives) - 1  # before every host write
    edges = [first, *cuts, len(graph.nodes) + 1]
    best = LowerBound(0, ())
    active: dict[str, _Life] = {}  # the lives with created <= hi and last > lo
    ending: list[tuple[int, str]] = []
    k = 0
    changed = False
    for lo, hi in pairwise(edges):
        while ending and ending[0][0] <= lo:
            del active[heappop(ending)[1]]
            changed = True
        while k < len(lives) and lives[k].created <= hi:
            x = lives[k]
            k += 1
            if x.last > lo:
                active[x.name] = x
                heappush(ending, (x.last, x.name))
                changed = True
        if not changed or not active:
            continue  # the same group as the stretch before
        changed = False
        if sum(x.size for x in active.values()) <= best.bytes:
            continue  # even all of them together would not beat the best so far
        found = _max_antichain(schedule, list(active.values()))
        if found.bytes > best.bytes:
            best = found
    return best


def _max_antichain(schedule: Schedule, group: list[_Life]) -> LowerBound:
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
            if i != j and _over_before(schedule, x, y):
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
