"""The lower bound against brute force on small random graphs: every set of tensors that are
pairwise unable to share bytes (enumerated), and with one stream the peak of live bytes.

The brute force shares nothing with `concurrency.memory.bound`: happens-before comes from the
oracle's closure of the schedule's raw streams and waits, accesses from the tensors."""

from __future__ import annotations

import random
from itertools import combinations

import pytest
from oracle_check import VIEWS, happened_before, span_bytes
from random_cases import random_graph, random_streams

from concurrency.graph.branches import detect_branches
from concurrency.graph.builders.context import GraphContext
from concurrency.graph.ir import INPLACE_OPS, Graph, GraphMeta, TensorKind
from concurrency.graph.schedule import Schedule, serial_schedule, stream_schedule
from concurrency.memory.bound import lower_bound


class Lives:
    """Per planned tensor: size, creation event, access events, in-place nodes (brute force)."""

    def __init__(self, graph: Graph, schedule: Schedule, alignment: int) -> None:
        n = self.n = len(graph.nodes)
        self.before = happened_before(schedule)
        names = [x for x in graph.planned if span_bytes(graph.tensors[x])]
        inputs = [x for x in names if graph.tensors[x].is_input]
        self.names = names
        self.size = {x: -(-span_bytes(graph.tensors[x]) // alignment) * alignment for x in names}
        self.created = {x: k - len(inputs) for k, x in enumerate(inputs)}
        self.access = {x: {self.created.get(x, 0)} if x in inputs else set() for x in names}
        self.in_place: dict[str, set[int]] = {x: set() for x in names}
        for i, name in enumerate(graph.nodes):
            t = graph.tensors[name]
            if name in self.size:
                self.created[name] = i
            if t.op in VIEWS:
                continue
            for x in [name, *t.srcs]:
                tx = graph.tensors[x]
                memory = tx.view_src or x
                if memory in self.size and span_bytes(tx):
                    self.access[memory].add(i)
                    layouts = {(u.shape, u.strides_bytes, u.dtype) for u in (t, tx)}
                    if x != name and t.op in INPLACE_OPS and len(layouts) == 1:
                        self.in_place[memory].add(i)
        for x in names:
            if graph.tensors[x].is_output:
                self.access[x].add(n)

    def hb(self, a: int, b: int) -> bool:
        if a < 0 or b == self.n:
            return a < b
        return b >= 0 and a in self.before[b]

    def over(self, x: str, y: str) -> bool:
        c = self.created[y]
        return all(self.hb(a, c) or (a == c and c in self.in_place[x]) for a in self.access[x])

    def last(self, x: str) -> int:
        return max(self.access[x] | {self.created[x]})


def brute_bound(graph: Graph, schedule: Schedule, alignment: int) -> int:
    """The heaviest set of planned tensors that pairwise may not share bytes, enumerated."""
    lives = Lives(graph, schedule, alignment)
    names = lives.names
    apart = {
        (x, y) for x, y in combinations(names, 2) if not lives.over(x, y) and not lives.over(y, x)
    }
    best = 0
    for mask in range(1 << len(names)):
        chosen = [names[i] for i in range(len(names)) if mask >> i & 1]
        if all((x, y) in apart for x, y in combinations(chosen, 2)):
            best = max(best, sum(lives.size[x] for x in chosen))
    return best


def peak_of_live_bytes(graph: Graph, alignment: int) -> int:
    """One stream: the most bytes live at one moment (a host write of an input or a node); a
    node's result that may take a dying source's bytes in place is not counted on top."""
    lives = Lives(graph, serial_schedule(graph), alignment)
    peak = 0
    for t in range(-len(graph.leafs) - 1, lives.n):
        live = [x for x in lives.names if lives.created[x] <= t <= lives.last(x)]
        shared = [
            y
            for y in live
            if lives.created[y] == t
            and any(
                t in lives.in_place[x] and lives.last(x) == t and not graph.tensors[x].is_output
                for x in live
            )
        ]
        peak = max(peak, sum(lives.size[x] for x in live if x not in shared))
    return peak


def _small_cases(seed: int, count: int):  # type: ignore[no-untyped-def]
    """Small random graphs (at most 12 planned tensors) under serial, LACE's stream and random
    multi-stream schedules."""
    rng = random.Random(seed)
    made = 0
    while made < count:
        graph = random_graph(rng, forks=rng.random() < 0.5, size=rng.randint(2, 9))
        if len([x for x in graph.planned if graph[x].nbytes]) > 12:
            continue
        made += 1
        report = detect_branches(graph)
        yield graph, serial_schedule(graph)
        yield graph, stream_schedule(graph, report)
        yield graph, random_streams(rng, graph)


@pytest.mark.parametrize("alignment", [1, 32])
def test_lower_bound_is_the_heaviest_set_that_cannot_share(alignment: int) -> None:
    cases = 0
    for graph, schedule in _small_cases(alignment, 150):
        bound = lower_bound(graph, schedule, alignment)
        assert bound.bytes == brute_bound(graph, schedule, alignment)
        lives = Lives(graph, schedule, alignment)
        assert sum(lives.size[x] for x in bound.tensors) == bound.bytes
        for x, y in combinations(bound.tensors, 2):  # the tensors named attain it
            assert not lives.over(x, y) and not lives.over(y, x)
        cases += 1
    assert cases == 450


def test_one_stream_lower_bound_is_the_peak_of_live_bytes() -> None:
    for graph, schedule in _small_cases(3, 150):
        if schedule.n_streams == 1:
            assert lower_bound(graph, schedule).bytes == peak_of_live_bytes(graph, 1)


def test_an_output_stays_live_after_its_last_reader() -> None:
    """Issue 12: a 3-node serial graph whose bound was 6 144 B against a true 7 168 B. The
    output `a` was counted only up to its last node access, but the host reads it after the
    last node: at `c` the live tensors are a (1 KiB), b (2 KiB) and c (4 KiB)."""
    ctx = GraphContext(layer=None)
    x = ctx.leaf("x", "f32", (256,), TensorKind.INPUT)
    w1 = ctx.leaf("w1", "f32", (256, 512), TensorKind.WEIGHT)
    w2 = ctx.leaf("w2", "f32", (512, 1024), TensorKind.WEIGHT)
    a = ctx.unary(x, "silu", "a")
    ctx.set_output(a)
    b = ctx.mul_mat(w1, x, "b")
    c = ctx.mul_mat(w2, b, "c")
    ctx.expand(a)
    ctx.expand(c)
    graph = ctx.finish(GraphMeta("toy", "toy", "decode", 1, 1, 1), None)
    assert graph.nodes == ("a", "b", "c")
    bound = lower_bound(graph, serial_schedule(graph))
    assert (bound.bytes, set(bound.tensors)) == (7168, {"a", "b", "c"})
    assert lower_bound(graph, serial_schedule(graph), alignment=4096).bytes == 3 * 4096


def test_inputs_are_live_from_the_start() -> None:
    """An input read only by the last node still needs its bytes from the host's write."""
    ctx = GraphContext(layer=None)
    x = ctx.leaf("x", "f32", (64,), TensorKind.INPUT)
    late = ctx.leaf("late", "f32", (256,), TensorKind.INPUT)
    y = ctx.unary(x, "silu", "y")
    z = ctx.add(ctx.concat(y, y, 0, "y2"), late, "z")
    ctx.expand(z)
    graph = ctx.finish(GraphMeta("toy", "toy", "decode", 1, 1, 1), None)
    # at y2 (a concat, never in place): late (1 KiB), y (256 B) and y2 (512 B); x died at y
    assert lower_bound(graph, serial_schedule(graph)).bytes == 1024 + 256 + 512


def test_hazard_free_plans_never_beat_the_bound() -> None:
    from concurrency.memory.check import check_plan
    from concurrency.memory.policies import POLICIES, plan_memory

    rng = random.Random(5)
    checked = 0
    for _ in range(40):
        graph = random_graph(rng, forks=True, size=rng.randint(5, 20))
        report = detect_branches(graph)
        for schedule in (serial_schedule(graph), stream_schedule(graph, report)):
            bound = lower_bound(graph, schedule, 32).bytes
            for policy in POLICIES:
                plan = plan_memory(graph, schedule, report, policy, 32)
                if check_plan(plan).ok:
                    assert plan.arena_bytes >= bound, policy
                    checked += 1
    assert checked > 300
