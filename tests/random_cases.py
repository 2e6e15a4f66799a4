"""Seeded random graphs, schedules and plans for bulk tests (plain `random.Random`).

`random_graph(rng)` builds a small ggml-shaped DAG through `GraphContext` with views,
reshapes, in-place ops (an in-place SCALE writes through a view), cache writes (CPY and
SET_ROWS into STATE leafs, written several times, and into views of arena tensors), graph
inputs and outputs; with `forks=True` it strings together fork regions whose branches join
at different nodes, so that a region's first join comes before its end.

`plans_for(rng, graph, schedule, report)` gives every allocator policy's plan and planted
bad plans: random offsets in a narrow range (with in-place sharing), a valid plan with one
tensor moved onto another's bytes, and everything at offset 0.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from concurrency.graph.branches import BranchReport
from concurrency.graph.builders.context import GraphContext
from concurrency.graph.ir import INPLACE_OPS, Graph, GraphMeta, TensorKind
from concurrency.graph.schedule import Schedule, schedule_from_streams
from concurrency.memory.plan import MemoryPlan
from concurrency.memory.policies import POLICIES, plan_memory

ALIGNMENT = 32
META = GraphMeta(model="random", layer="random", mode="decode", batch=1, tokens=1, n_layers=1)


def _dims(rng: random.Random) -> tuple[int, int]:
    return (rng.randint(1, 12), rng.randint(1, 3))


class _Builder:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.ctx = GraphContext(layer=0)
        self.k = 0
        self.inputs = [
            self.ctx.leaf(f"inp{k}", "f32", _dims(rng), TensorKind.INPUT)
            for k in range(rng.randint(1, 3))
        ]
        self.weights = [
            self.ctx.leaf(f"w{k}", "f32", _dims(rng), TensorKind.WEIGHT)
            for k in range(rng.randint(1, 2))
        ]
        self.states = [
            self.ctx.leaf(f"state{k}", "f32", _dims(rng), TensorKind.STATE)
            for k in range(rng.randint(0, 2))
        ]
        self.values: list[str] = list(self.inputs)
        self.nodes: list[str] = []

    def name(self, stem: str) -> str:
        self.k += 1
        return f"{stem}{self.k}"

    def arena_nodes(self) -> list[str]:
        return [n for n in self.nodes if not self.ctx[n].external]

    def op(self, a: str | None = None) -> str:
        """One random node reading `a` (or a random earlier value); returns it."""
        rng, ctx = self.rng, self.ctx
        a = a if a is not None else rng.choice(self.values)
        kind = rng.choice(
            ("mm", "mm", "add", "mul", "unary", "norm", "scale", "scale_in_place",
             "reshape", "view", "cpy_state", "cpy_arena", "set_rows", "state_read", "concat")
        )  # fmt: skip
        if kind == "mm":
            node = ctx.mul_mat(rng.choice(self.weights + self.values), a, self.name("mm"))
        elif kind in ("add", "mul"):
            b = rng.choice(self.values)
            node = (ctx.add if kind == "add" else ctx.mul)(a, b, self.name(kind))
        elif kind == "unary":
            node = ctx.unary(a, rng.choice(("silu", "sigmoid")), self.name("un"))
        elif kind == "norm":
            node = ctx.rms_norm(a, 1e-6, self.name("norm"))
        elif kind == "scale":
            node = ctx.scale(a, 0.5, self.name("scale"))
        elif kind == "scale_in_place" and not ctx[a].external:
            node = ctx.scale(a, 0.5, self.name("iscale"), inplace=True)
        elif kind == "reshape":
            node = ctx.reshape(a, ctx[a].nelements, base=self.name("reshape"))
        elif kind == "view" and ctx[a].is_contiguous:
            n = ctx[a].nelements
            first = rng.randint(0, n - 1)
            count = rng.randint(1, n - first)
            node = ctx.view(a, (count,), (), first * 4, base=self.name("view"))
        elif kind == "cpy_state" and self.states:
            node = ctx.cpy(a, rng.choice(self.states), self.name("cpy"))
        elif kind == "cpy_arena" and self.arena_nodes():
            dst = rng.choice(self.arena_nodes())
            if ctx[dst].is_contiguous and rng.random() < 0.5:
                n = ctx[dst].nelements
                first = rng.randint(0, n - 1)
                dst = ctx.view(dst, (rng.randint(1, n - first),), (), first * 4, self.name("dv"))
                self.nodes.append(dst)
            node = ctx.cpy(a, dst, self.name("cpy"))
        elif kind == "set_rows" and (self.states or self.arena_nodes()):
            dst = rng.choice(self.states + self.arena_nodes())
            node = ctx.set_rows(dst, a, rng.choice(self.inputs), self.name("setrows"))
        elif kind == "state_read" and self.states:
            s = rng.choice(self.states)
            whole = ctx.reshape(s, ctx[s].nelements, base=self.name("sv"))
            node = ctx.add(whole, a, self.name("sadd"))
        elif kind == "concat":
            node = ctx.concat(a, rng.choice(self.values), 0, self.name("concat"))
        else:
            node = ctx.unary(a, "silu", self.name("un"))
        self.nodes.append(node)
        self.values.append(node)
        return node

    def fork(self) -> None:
        """A fork with 2–4 chains, joined pairwise at different points, then more work."""
        rng = self.rng
        f = self.op()
        ends = []
        for _ in range(rng.randint(2, 4)):
            x = f
            for _ in range(rng.randint(1, 3)):
                x = self.op(x)
            ends.append(x)
        rng.shuffle(ends)
        while len(ends) > 1:
            a, b = ends.pop(), ends.pop()
            j = self.ctx.add(a, b, self.name("join"))
            self.nodes.append(j)
            self.values.append(j)
            for _ in range(rng.randint(0, 2)):
                j = self.op(j)
            ends.insert(rng.randint(0, len(ends)), j)
        self.values.append(ends[0])

    def finish(self, output_views: bool) -> Graph:
        rng, ctx = self.rng, self.ctx
        for node in self.nodes:
            t = ctx[node]
            if rng.random() < 0.2 and not t.external and (output_views or t.view_src is None):
                ctx.set_output(node)
        consumed = {s for n in self.nodes for s in ctx[n].srcs}
        tails = [n for n in self.nodes if n not in consumed]
        if rng.random() < 0.3:
            rng.shuffle(tails)
        for node in tails:
            ctx.expand(node)
        return ctx.finish(META, None)


def random_graph(
    rng: random.Random, *, forks: bool = False, size: int = 12, output_views: bool = True
) -> Graph:
    """A random DAG of about `size` nodes; with `forks`, made of fork regions. With
    `output_views` some outputs are views: ggml's rule frees their base once its readers are
    done, so the policies in `FREES_VIEW_OUTPUT_BASES` may overwrite them before the host reads
    them, while the safe policies keep them (tests/test_view_outputs.py)."""
    b = _Builder(rng)
    while len(b.nodes) < size:
        if forks and rng.random() < 0.6:
            b.fork()
        else:
            b.op()
    return b.finish(output_views)


def view_output_graph() -> Graph:
    """The smallest graph where ggml's rule overwrites a view output: a = concat(inp, inp);
    v = view of a's first half, a graph output; b = scale(v); c = concat(b, b), an output (no
    op here may reuse its source in place). ggml frees `a` after `b`, v's last reader, and best
    fit puts `c` over `inp` and `a`'s first half: the host reads `v` overwritten."""
    ctx = GraphContext(layer=0)
    inp = ctx.leaf("inp", "f32", (16, 1), TensorKind.INPUT)
    a = ctx.concat(inp, inp, 0, "a")
    v = ctx.view(a, (16,), (), 0, base="v")
    ctx.set_output(v)
    b = ctx.scale(v, 0.5, "b")
    c = ctx.concat(b, b, 0, "c")
    ctx.set_output(c)
    ctx.expand(c)
    return ctx.finish(META, None)


def random_streams(rng: random.Random, graph: Graph, max_streams: int = 4) -> Schedule:
    """A random stream per node, each node waiting for its cross-stream dependencies."""
    return schedule_from_streams(graph, [rng.randrange(max_streams) for _ in graph.nodes])


def _plan(
    graph: Graph, schedule: Schedule, policy: str, offsets: dict[str, int], order: tuple[str, ...]
) -> MemoryPlan:
    sizes = {n: graph[n].nbytes for n in offsets}
    return MemoryPlan(
        policy,
        ALIGNMENT,
        offsets,
        sizes,
        max((offsets[n] + sizes[n] for n in offsets), default=0),
        order,
        graph=graph,
        schedule=schedule,
    )


def random_offsets_plan(rng: random.Random, graph: Graph, schedule: Schedule) -> MemoryPlan:
    """Every planned tensor at a random aligned offset in a narrow range (hazards are common);
    in-place-eligible ops sometimes share their first source's offset; random plan order."""
    top = rng.choice((64, 256, 512))
    offsets: dict[str, int] = {}
    for name in graph.planned:
        t = graph[name]
        parent = graph.base(t.srcs[0]) if t.srcs else None
        if t.op in INPLACE_OPS and parent in offsets and rng.random() < 0.3:
            offsets[name] = offsets[parent]
        else:
            offsets[name] = ALIGNMENT * rng.randint(0, top // ALIGNMENT)
    order = list(graph.nodes)
    if rng.random() < 0.5:
        rng.shuffle(order)
    return _plan(graph, schedule, "random", offsets, tuple(order))


def moved_plan(rng: random.Random, plan: MemoryPlan) -> MemoryPlan:
    """`plan` with one tensor moved onto (or partly onto) another's bytes."""
    graph = plan.graph
    names = [n for n in graph.planned if graph[n].nbytes]
    offsets = dict(plan.offsets)
    if len(names) >= 2:
        a, b = rng.sample(names, 2)
        shift = rng.choice((0, 0, ALIGNMENT, -ALIGNMENT))
        offsets[a] = max(0, offsets[b] + shift)
    return _plan(graph, plan.schedule, "moved", offsets, plan.order)


def zero_plan(graph: Graph, schedule: Schedule) -> MemoryPlan:
    """Every tensor at offset 0."""
    return _plan(graph, schedule, "zero", dict.fromkeys(graph.planned, 0), graph.nodes)


def plans_for(
    rng: random.Random, graph: Graph, schedule: Schedule, report: BranchReport
) -> Iterator[MemoryPlan]:
    """Every policy's plan for `schedule`, and planted bad plans."""
    for policy in POLICIES:
        plan = plan_memory(graph, schedule, report, policy, ALIGNMENT)
        yield plan
        yield moved_plan(rng, plan)
    yield zero_plan(graph, schedule)
    yield random_offsets_plan(rng, graph, schedule)
    yield random_offsets_plan(rng, graph, schedule)
