"""Hypothesis strategies for property tests: random graphs, schedules and memory plans.

`random_graphs()` builds small ggml-shaped DAGs through `GraphContext`, so node order, views
and sources follow the same rules as the real builders. `random_schedules(graph)` and
`random_plans(graph)` then draw a stream assignment and an arena layout for one graph; plan
offsets come from a narrow range so that tensors overlap often and hazards are common.

Each STATE leaf is only ever a CPY destination, written once: the schedule's extra ordering
on shared state (`concurrency.graph.deps`) then adds nothing beyond the data edges, which keeps an
independent happens-before oracle simple.
"""

from __future__ import annotations

from hypothesis import strategies as st

from concurrency.graph.builders.context import GraphContext
from concurrency.graph.ir import INPLACE_OPS, Graph, GraphMeta, TensorKind
from concurrency.graph.schedule import Schedule, schedule_from_streams, serial_schedule
from concurrency.memory.plan import MemoryPlan

ALIGNMENT = 32
MAX_STREAMS = 4
OPS = ("mul_mat", "add", "mul", "unary", "scale", "reshape", "view", "cpy", "concat")
RANDOM_META = GraphMeta(
    model="random", layer="random", mode="decode", batch=1, tokens=1, n_layers=1
)

_dims = st.tuples(st.integers(1, 16), st.integers(1, 4))


@st.composite
def random_graphs(draw: st.DrawFn, min_nodes: int = 5, max_nodes: int = 60) -> Graph:
    """A random DAG of `min_nodes`–`max_nodes` nodes over a few f32 INPUT and WEIGHT leafs."""
    ctx = GraphContext(layer=0)
    values = [
        ctx.leaf(f"inp{k}", "f32", draw(_dims), TensorKind.INPUT)
        for k in range(draw(st.integers(1, 3)))
    ]
    weights = [
        ctx.leaf(f"w{k}", "f32", draw(_dims), TensorKind.WEIGHT)
        for k in range(draw(st.integers(1, 3)))
    ]
    nodes: list[str] = []
    for k in range(draw(st.integers(min_nodes, max_nodes))):
        op = draw(st.sampled_from(OPS))
        node = _random_op(draw, ctx, op, values, weights, nodes, k)
        nodes.append(node)
        values.append(node)
    for node in nodes:
        if ctx[node].view_src is None and draw(st.booleans()) and draw(st.booleans()):
            ctx.set_output(node)
    consumed = {s for n in nodes for s in ctx[n].srcs}
    for node in nodes:
        if node not in consumed:
            ctx.expand(node)
    return ctx.finish(RANDOM_META, None)


def _random_op(
    draw: st.DrawFn,
    ctx: GraphContext,
    op: str,
    values: list[str],
    weights: list[str],
    nodes: list[str],
    k: int,
) -> str:
    """Append one node of kind `op` reading earlier values; returns its name."""
    a = draw(st.sampled_from(values))
    if op == "mul_mat":
        w = draw(st.sampled_from(weights + values))
        return ctx.mul_mat(w, a, f"mm{k}")
    if op in ("add", "mul"):
        b = draw(st.sampled_from(values))
        return ctx.add(a, b, f"add{k}") if op == "add" else ctx.mul(a, b, f"mul{k}")
    if op == "unary":
        return ctx.unary(a, draw(st.sampled_from(("silu", "sigmoid"))), f"un{k}")
    if op == "scale":  # in place only inside the arena: each cache is written once
        inplace = not ctx[a].external and draw(st.booleans())
        return ctx.scale(a, 0.5, f"scale{k}", inplace=inplace)
    if op == "reshape":
        return ctx.reshape(a, ctx[a].nelements, base=f"reshape{k}")
    if op == "view":
        return _random_view(draw, ctx, draw(st.sampled_from(nodes or values)), k)
    if op == "cpy":
        arena = [n for n in nodes if not ctx[n].external]
        if arena and draw(st.booleans()):  # into an earlier node: a write inside the arena
            dst = draw(st.sampled_from(arena))
        else:  # into a fresh cache: a write outside the arena
            dst = ctx.leaf(f"state{k}", "f32", ctx[a].shape, TensorKind.STATE)
        return ctx.cpy(a, dst, f"cpy{k}")
    b = draw(st.sampled_from(values))
    return ctx.concat(a, b, 0, f"concat{k}")


def _random_view(draw: st.DrawFn, ctx: GraphContext, a: str, k: int) -> str:
    """A 1-d view of a contiguous run of `a`'s elements (whole rows when `a` is 2-d)."""
    t = ctx[a]
    n = t.nelements
    first = draw(st.integers(0, n - 1))
    count = draw(st.integers(1, n - first))
    if not t.is_contiguous:  # only in-place scales of views keep odd strides; view it whole
        first, count = 0, n
    return ctx.view(a, (count,), (), first * 4, base=f"view{k}")


def random_schedules(graph: Graph) -> st.SearchStrategy[Schedule]:
    """A random stream (0–3) per node with waits for every cross-stream dependency, or (one
    time in five) the serial schedule."""
    streams = st.lists(
        st.integers(0, MAX_STREAMS - 1), min_size=len(graph.nodes), max_size=len(graph.nodes)
    )
    concurrent = streams.map(lambda s: schedule_from_streams(graph, s))
    serial = st.just(serial_schedule(graph))
    return st.integers(0, 4).flatmap(lambda k: serial if k == 0 else concurrent)


@st.composite
def _plans(draw: st.DrawFn, graph: Graph, schedule: Schedule, max_offset: int) -> MemoryPlan:
    offsets: dict[str, int] = {}
    for name in graph.planned:
        t = graph[name]
        parent = t.srcs[0] if t.srcs else None
        if t.op in INPLACE_OPS and parent in offsets and draw(st.integers(0, 3)) == 0:
            offsets[name] = offsets[parent]  # in place: share the parent's bytes
        else:
            offsets[name] = ALIGNMENT * draw(st.integers(0, max_offset // ALIGNMENT))
    sizes = {n: graph[n].nbytes for n in offsets}
    order = draw(st.one_of(st.just(graph.nodes), st.permutations(graph.nodes).map(tuple)))
    return MemoryPlan(
        policy="random",
        alignment=ALIGNMENT,
        offsets=offsets,
        sizes=sizes,
        arena_bytes=max((offsets[n] + sizes[n] for n in offsets), default=0),
        order=order,
        graph=graph,
        schedule=schedule,
    )


def random_plans(
    graph: Graph, schedule: Schedule, max_offset: int = 512
) -> st.SearchStrategy[MemoryPlan]:
    """A plan placing every planned tensor at a random 32-aligned offset in [0, max_offset];
    in-place-eligible ops sometimes share their first source's offset. The plan order is the
    graph order or a random permutation of it (which only changes how hazards are named)."""
    return _plans(graph, schedule, max_offset)


def no_reuse_plan(
    graph: Graph, order: tuple[str, ...] | None = None, schedule: Schedule | None = None
) -> MemoryPlan:
    """Every planned tensor in its own aligned bytes, one after another: nothing can race."""
    offsets: dict[str, int] = {}
    sizes: dict[str, int] = {}
    end = 0
    for name in graph.planned:
        offsets[name], sizes[name] = end, graph[name].nbytes
        end += -(-sizes[name] // ALIGNMENT) * ALIGNMENT
    return MemoryPlan(
        policy="no-reuse",
        alignment=ALIGNMENT,
        offsets=offsets,
        sizes=sizes,
        arena_bytes=end,
        order=graph.nodes if order is None else order,
        graph=graph,
        schedule=serial_schedule(graph) if schedule is None else schedule,
    )
