"""The hazard checker against a brute-force oracle, and on real Qwen3.5 layers.

The oracle shares nothing with `concurrency.memory.check` or `Schedule`'s bitsets: it computes
byte ranges from the plan's offsets, happens-before from stream order and data edges with
plain sets, and compares every pair of accesses of every pair of nodes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (
    no_reuse_plan,
    random_graphs,
    random_plans,
    random_schedules,
)

from concurrency.errors import ConfigError
from concurrency.graph.branches import ForkRegion, detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import (
    Schedule,
    schedule_from_streams,
    serial_schedule,
    stream_schedule,
)
from concurrency.memory.check import RAW, WAR, WAW, Hazard, check_hazards
from concurrency.memory.ggml.cuda_is_valid import is_valid_ggml
from concurrency.memory.plan import MemoryPlan

Key = tuple[str, str, str, str, str, int, int, int, int]


# ---------------------------------------------------------------------------- the oracle
def _range(graph: Graph, plan: MemoryPlan, name: str) -> tuple[int, int] | None:
    t = graph.tensors[name]
    base = t.view_src or name
    if base not in plan.offsets or t.nbytes == 0:
        return None
    start = plan.offsets[base] + (t.view_offset_bytes if t.view_src else 0)
    return start, start + t.nbytes


def _oracle_accesses(graph: Graph, plan: MemoryPlan, name: str) -> list[tuple[str, bool, int, int]]:
    t = graph.tensors[name]
    if t.op in ("RESHAPE", "VIEW", "TRANSPOSE", "PERMUTE"):
        return []
    out = []
    for tensor, write in [(name, True)] + [(s, False) for s in set(t.srcs)]:
        r = _range(graph, plan, tensor)
        if r is not None:
            out.append((tensor, write, r[0], r[1]))
    return out


def _oracle_before(
    graph: Graph, streams: tuple[int, ...], waits: tuple[tuple[int, ...], ...] = ()
) -> list[set[int]]:
    """before[b] = every node that surely finishes before b starts: same-stream order, data
    edges, and index order between two nodes touching a tensor that one of them writes
    through a view (CPY into it, an in-place op on it)."""
    index = {n: i for i, n in enumerate(graph.nodes)}
    views = ("RESHAPE", "VIEW", "TRANSPOSE", "PERMUTE")

    def base(n: str) -> str:
        return graph.tensors[n].view_src or n

    def view_write(n: str) -> str | None:
        t = graph.tensors[n]
        return t.view_src if t.view_src and t.op not in views and t.nbytes else None

    def touches(n: str) -> set[str]:
        t = graph.tensors[n]
        out = {base(x) for x in t.srcs if graph.tensors[x].nbytes}
        if t.op in views and t.nbytes:
            out.add(base(n))
        if view_write(n):
            out.add(view_write(n))  # type: ignore[arg-type]
        return out

    before: list[set[int]] = []
    for b, name in enumerate(graph.nodes):
        direct = {index[s] for s in graph.tensors[name].srcs if s in index}
        direct |= {a for a in range(b) if streams[a] == streams[b]}
        if waits:
            direct |= set(waits[b])  # the events the schedule declares (e.g. joins)
        for a in range(b):
            other = graph.nodes[a]
            shared = touches(other) & touches(name)
            if any(view_write(other) == x or view_write(name) == x for x in shared):
                direct.add(a)
        closed = set(direct)
        for a in direct:
            closed |= before[a]
        before.append(closed)
    return before


def oracle(graph: Graph, schedule: Schedule, plan: MemoryPlan) -> set[Key]:
    before = _oracle_before(graph, schedule.stream, schedule.waits)
    pos = {n: k for k, n in enumerate(plan.order)}
    acc = [_oracle_accesses(graph, plan, n) for n in graph.nodes]
    found: set[Key] = set()
    for a in range(len(graph.nodes)):
        for b in range(a + 1, len(graph.nodes)):
            if a in before[b] or b in before[a]:
                continue
            for ta, wa, sa, ea in acc[a]:
                for tb, wb, sb, eb in acc[b]:
                    if not (wa or wb) or max(sa, sb) >= min(ea, eb):
                        continue
                    first, second = (a, b) if pos[graph.nodes[a]] < pos[graph.nodes[b]] else (b, a)
                    (t1, w1), (t2, _) = ((ta, wa), (tb, wb)) if first == a else ((tb, wb), (ta, wa))
                    kind = WAW if wa and wb else (RAW if w1 else WAR)
                    found.add(
                        (
                            kind,
                            graph.nodes[first],
                            graph.nodes[second],
                            t1,
                            t2,
                            schedule.stream[first],
                            schedule.stream[second],
                            max(sa, sb),
                            min(ea, eb),
                        )
                    )
    return found


def _key(h: Hazard) -> Key:
    return (
        h.kind,
        h.first_node,
        h.second_node,
        h.first_tensor,
        h.second_tensor,
        h.first_stream,
        h.second_stream,
        h.start,
        h.end,
    )


# ---------------------------------------------------------------------------- properties
@settings(max_examples=300)
@given(data=st.data())
def test_check_hazards_matches_the_oracle(data: st.DataObject) -> None:
    graph = data.draw(random_graphs())
    schedule = data.draw(random_schedules(graph))
    plan = data.draw(random_plans(graph, schedule))
    hazards = check_hazards(graph, schedule, plan)
    keys = [_key(h) for h in hazards]
    assert len(keys) == len(set(keys)), "a hazard was reported twice"
    assert set(keys) == oracle(graph, schedule, plan)
    index = graph.index
    order = [(h.start, index[h.first_node], index[h.second_node]) for h in hazards]
    assert order == sorted(order)


@given(random_graphs())
def test_random_graphs_keep_every_node(graph: Graph) -> None:
    assert 5 <= len(graph) <= 60
    made = {n for n in graph.tensors if not graph.tensors[n].is_leaf}
    assert made == set(graph.nodes)


@given(random_graphs())
def test_serial_no_reuse_has_no_hazards(graph: Graph) -> None:
    assert check_hazards(graph, serial_schedule(graph), no_reuse_plan(graph)) == []


@pytest.mark.parametrize("layer", ["gdn", "attn"])
def test_real_layers_without_reuse_are_hazard_free_on_streams(layer: str) -> None:
    g = build_graph("qwen3.5-27b", layer, "decode", 1)
    plan = no_reuse_plan(g)
    assert check_hazards(g, serial_schedule(g), plan) == []
    assert check_hazards(g, stream_schedule(g, detect_branches(g)), plan) == []


def test_the_64_layer_stack_without_reuse_is_hazard_free() -> None:
    g = build_graph("qwen3.5-27b", "stack", "decode", 1)
    assert len(g) > 3000
    assert check_hazards(g, stream_schedule(g, detect_branches(g)), no_reuse_plan(g)) == []


def test_a_schedule_for_another_graph_is_refused() -> None:
    g = build_graph("qwen3.5-27b", "gdn")
    other = build_graph("qwen3.5-27b", "attn")
    with pytest.raises(ConfigError, match="different graph"):
        check_hazards(g, serial_schedule(other), no_reuse_plan(g))


# ---------------------------------------------------------------------------- seed hazard (b)
def _moved(plan: MemoryPlan, onto: str, name: str, order: tuple[str, ...]) -> MemoryPlan:
    """`plan` with `onto` placed at `name`'s offset, planned in `order`."""
    offsets = dict(plan.offsets)
    offsets[onto] = offsets[name]
    return MemoryPlan(
        "racy",
        plan.alignment,
        offsets,
        plan.sizes,
        plan.arena_bytes,
        order,
        graph=plan.graph,
        schedule=plan.schedule,
    )


def test_gdn_branch_overwrites_the_fork_output() -> None:
    """seed-anatomy §1.7: `conv_output_raw` reuses `attn_norm`'s bytes, which is legal on
    one stream in an order that plans the projections first, but races on streams."""
    g = build_graph("qwen3.5-27b", "gdn", "decode", 1)
    projections = ("alpha_proj-0", "beta_proj-0", "z-0")
    rest = [n for n in g.nodes if n not in projections]
    k = rest.index("attn_norm-0") + 1
    order = (*rest[:k], *projections, *rest[k:])
    # attn_norm (20 KiB) moves into conv_output_raw's 40 KiB slot; every other tensor stays
    plan = _moved(no_reuse_plan(g, order), "attn_norm-0", "conv_output_raw-0", order)
    start, end = plan.byte_range(g, "attn_norm-0")
    schedule = stream_schedule(g, detect_branches(g))
    hazards = check_hazards(g, schedule, plan)
    assert {_key(h) for h in hazards} == {
        (WAR, reader, "conv_output_raw-0", "attn_norm-0", "conv_output_raw-0", s, 1, start, end)
        for reader, s in (("alpha_proj-0", 2), ("beta_proj-0", 3), ("z-0", 4))
    }
    z = next(h for h in hazards if h.first_node == "z-0")
    assert z.explanation == (
        f"`conv_output_raw-0` (stream 1) overwrites bytes {start}–{end - 1} of `attn_norm-0` "
        "while `z-0` on stream 4 may still read it"
    )
    assert check_hazards(g, serial_schedule(g), plan) == []


# ---------------------------------------------------------------------------- ggml's check
@pytest.fixture(scope="module")
def attn() -> tuple[Graph, Schedule, MemoryPlan, ForkRegion]:
    """The attention layer, branches on streams 1–3 as ggml-cuda detects them, no reuse."""
    g = build_graph("qwen3.5-27b", "attn", "decode", 1)
    report = detect_branches(g, "ggml")
    (region,) = report.regions
    return g, stream_schedule(g, report), no_reuse_plan(g), region


Attn = tuple[Graph, Schedule, MemoryPlan, ForkRegion]


def _pairs(rng: tuple[int, int] | None, *pairs: tuple[str, str, str, str, str, int, int]) -> set:
    """Expected hazard keys, all over the same byte range."""
    assert rng is not None
    return {(*p, *rng) for p in pairs}


def test_ggml_accepts_the_no_reuse_plan(attn: Attn) -> None:
    g, schedule, plan, region = attn
    ok, why = is_valid_ggml(g, schedule, plan, region)
    assert ok and why.startswith("accepted")
    assert check_hazards(g, schedule, plan) == []


def test_ggml_misses_a_branch_overwriting_the_fork_output(attn: Attn) -> None:
    g, schedule, plan, region = attn
    racy = _moved(plan, "Kcur_normed_rms-0", "attn_norm-0", g.nodes)
    ok, _ = is_valid_ggml(g, schedule, racy, region)
    assert ok  # ggml-cuda never looks at the fork output
    assert {_key(h) for h in check_hazards(g, schedule, racy)} == _pairs(
        racy.byte_range(g, "Kcur_normed_rms-0"),
        (WAR, "Qcur_full-0", "Kcur_normed_rms-0", "attn_norm-0", "Kcur_normed_rms-0", 1, 3),
        (WAR, "Vcur_proj-0", "Kcur_normed_rms-0", "attn_norm-0", "Kcur_normed_rms-0", 2, 3),
    )


def test_ggml_rejects_two_branch_outputs_in_the_same_bytes(attn: Attn) -> None:
    g, schedule, plan, region = attn
    racy = _moved(plan, "Kcur_proj-0", "Vcur_proj-0", g.nodes)
    ok, why = is_valid_ggml(g, schedule, racy, region)
    assert not ok
    # ggml counts a view as writing its whole base: Kcur_heads-0 stands for Kcur_proj-0
    assert why.startswith(
        "writes overlap: `Vcur_proj-0` (stream 2) and `Kcur_heads-0` (stream 3, in `Kcur_proj-0`)"
    )
    assert {_key(h) for h in check_hazards(g, schedule, racy)} == _pairs(
        racy.byte_range(g, "Vcur_proj-0"),
        (WAW, "Vcur_proj-0", "Kcur_proj-0", "Vcur_proj-0", "Kcur_proj-0", 2, 3),
        (RAW, "Vcur_proj-0", "Kcur_normed_rms-0", "Vcur_proj-0", "Kcur_heads-0", 2, 3),
        (RAW, "Kcur_proj-0", "v_cache_write-0", "Kcur_proj-0", "Vcur_rows-0", 3, 2),
    )
    start, end = racy.byte_range(g, "Vcur_proj-0")
    said = {h.kind: h.explanation for h in check_hazards(g, schedule, racy)}
    assert said[WAW] == (
        f"`Vcur_proj-0` (stream 2) and `Kcur_proj-0` (stream 3) both write bytes "
        f"{start}–{end - 1} (`Vcur_proj-0`, `Kcur_proj-0`) with nothing ordering them"
    )
    assert said[RAW] == (
        f"`v_cache_write-0` (stream 2) reads bytes {start}–{end - 1} as `Vcur_rows-0` while "
        "`Kcur_proj-0` on stream 3, planned earlier, may still be writing `Kcur_proj-0` there"
    )


def test_ggml_skips_writes_into_the_join_buffer(attn: Attn) -> None:
    g, schedule, plan, region = attn
    racy = _moved(plan, "Kcur_proj-0", "fattn-0", g.nodes)
    racy = _moved(racy, "Vcur_proj-0", "fattn-0", g.nodes)
    ok, _ = is_valid_ggml(g, schedule, racy, region)
    assert ok  # both overlap the join's buffer, so ggml-cuda does not compare them
    assert _key(check_hazards(g, schedule, racy)[0])[:3] == (WAW, "Vcur_proj-0", "Kcur_proj-0")


def test_ggml_rejects_a_branch_reading_another_stream(attn: Attn) -> None:
    g, schedule, plan, region = attn
    streams = list(schedule.stream)
    streams[g.index["Qcur_normed-0"]] = 2  # its source Qcur_normed_rms-0 stays on stream 1
    ok, why = is_valid_ggml(g, schedule_from_streams(g, streams), plan, region)
    assert not ok
    assert why.startswith("`Qcur_normed-0` (stream 2) reads `Qcur_normed_rms-0` from stream 1")
