"""The ggml-alloc port and the policies built on it."""

from __future__ import annotations

import pytest

from concurrency.errors import UnknownNameError
from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.builders.context import GraphContext
from concurrency.graph.ir import INPLACE_OPS, VIEW_OPS, GraphMeta, TensorKind
from concurrency.graph.schedule import serial_schedule, stream_schedule
from concurrency.memory.bound import lower_bound
from concurrency.memory.ggml.tallocr import DynAllocator
from concurrency.memory.policies import POLICIES, plan_memory


# ------------------------------------------------------------------------- DynAllocator rules
def test_best_fit_excludes_the_last_block_and_ties_go_to_the_later_block() -> None:
    a = DynAllocator(32)
    offs = [a.alloc(64) for _ in range(5)]  # 0, 64, 128, 192, 256
    a.free(offs[0], 64)
    a.free(offs[2], 64)  # two equal holes: [0,64) and [128,192)
    assert a.alloc(64) == 128  # `<=`: the later of two equal blocks wins
    assert a.alloc(64) == 0
    assert a.alloc(32) == 320  # no hole left: the unbounded last block takes it


def test_free_merges_with_both_neighbours() -> None:
    a = DynAllocator(32)
    offs = [a.alloc(32) for _ in range(4)]
    a.free(offs[0], 32)
    a.free(offs[2], 32)
    a.free(offs[1], 32)  # touches both: one block [0, 96)
    assert a.blocks[:-1] == [(0, 96)]
    assert a.alloc(96) == 0


def test_sizes_round_up_to_the_alignment() -> None:
    a = DynAllocator(128)
    assert a.alloc(1) == 0 and a.alloc(1) == 128 and a.max_size == 256


# ------------------------------------------------------------------------- the worked example
def _worked_example():  # type: ignore[no-untyped-def]
    """seed-anatomy §1.7: a Qwen3.5-27B-sized GDN layer, T = 1, nodes in the listed order."""
    ctx = GraphContext()
    x = ctx.leaf("x", "f32", (5120, 1), TensorKind.STATE)  # external input, as in the check
    w = ctx.leaf("w_norm", "f32", (5120,), TensorKind.WEIGHT)
    state = ctx.leaf("conv_state", "f32", (3, 10240), TensorKind.STATE)
    kernel = ctx.leaf("conv_kernel", "f32", (4, 10240), TensorKind.WEIGHT)

    def wt(name: str, n: int) -> str:
        return ctx.leaf(name, "f32", (5120, n), TensorKind.WEIGHT)

    ctx.layer = None
    a_norm = ctx.mul(x, w, base="attn_norm")
    qkv = ctx.mul_mat(wt("wqkv", 10240), a_norm, base="qkv")
    z = ctx.mul_mat(wt("wz", 6144), a_norm, base="z")
    b = ctx.mul_mat(wt("wb", 48), a_norm, base="b")
    a = ctx.mul_mat(wt("wa", 48), a_norm, base="a")
    cin = ctx.concat(state, ctx.transpose(qkv, base="qkv_t"), 0, base="cin")
    cout = ctx.ssm_conv(ctx.reshape(cin, 4, 10240, 1, base="cin_3d"), kernel, base="cout")
    silu = ctx.unary(cout, "silu", base="silu")
    gdn = ctx.add(silu, silu, base="gdn")
    for t in (a_norm, qkv, z, b, a, cin, cout, silu, gdn):
        ctx.expand(t)
    for t in (z, b, a):
        ctx.set_output(t)  # read by later layers in the real graph: keep them
    meta = GraphMeta("worked-example", "gdn", "decode", 1, 1, 1)
    return ctx.finish(meta, None)


def test_sequential_matches_upstream_on_the_worked_example() -> None:
    """The placements ggml-alloc itself produced (seed-anatomy §1.7, checked 2026-11-29 with
    ggml 0.25.3, CPU buffer type, 32-byte alignment)."""
    g = _worked_example()
    plan = plan_memory(g, serial_schedule(g), detect_branches(g), "sequential", alignment=32)
    expected = {
        "attn_norm": 0,
        "qkv": 20480,
        "z": 61440,
        "b": 86016,
        "a": 86208,
        "cin": 86400,
        "cout": 0,
        "silu": 0,
    }
    assert {k: plan.offsets[k] for k in expected} == expected
    assert plan.inplace_of["silu"] == "cout"


# ------------------------------------------------------------------------- the policies
@pytest.mark.parametrize("batch", [1, 4, 8])
def test_memory_order_of_the_safe_policies(batch: int) -> None:
    g = build_graph("qwen3.5-27b", "gdn", "decode", batch)
    rep = detect_branches(g)
    sched = stream_schedule(g, rep)
    arena = {p: plan_memory(g, sched, rep, p).arena_bytes for p in POLICIES}
    assert arena["happens_before"] <= arena["alloc_dep"] <= arena["no_alloc_free"]
    assert arena["no_alloc_free"] <= arena["no_reuse"]
    bound = lower_bound(g, sched).bytes
    assert bound <= arena["happens_before"] <= 1.05 * bound


def test_every_policy_places_every_planned_tensor_inside_the_arena() -> None:
    g = build_graph("qwen3.5-9b", "stack", "prefill", 2, 8, layers=4)
    rep = detect_branches(g)
    sched = stream_schedule(g, rep)
    planned = {n for n in g.nodes if not g[n].is_view and not g[n].external} | {
        n for n in g.leafs if g[n].is_input
    }
    for p in POLICIES:
        plan = plan_memory(g, sched, rep, p)
        assert planned <= set(plan.offsets), p
        assert all(plan.offsets[n] + g[n].nbytes <= plan.arena_bytes for n in planned), p


def test_no_reuse_is_the_sum_of_sizes() -> None:
    g = build_graph("tiny", "gdn")
    plan = plan_memory(g, serial_schedule(g), detect_branches(g), "no_reuse", alignment=32)
    assert plan.arena_bytes == sum(plan.sizes.values())
    assert not plan.inplace_of and not plan.freed_after


def test_serial_lower_bound_is_the_peak_of_live_bytes() -> None:
    """With one stream the bound is the classic peak of live bytes, computed here
    independently: a tensor is live from its writer (inputs: from the start) to its last
    access (outputs: to the end), except that a node may overwrite, in place, a tensor whose
    last access it is when its op allows it and the layouts match."""
    g = build_graph("tiny", "gdn", "prefill", 2, 8)
    planned = [
        n
        for n in (*g.leafs, *g.nodes)
        if (g[n].is_input or (g[n].op != "NONE" and not g[n].is_view and not g[n].external))
        and g[n].nbytes
    ]
    touch: dict[str, list[int]] = {n: [] for n in planned}
    for i, n in enumerate(g.nodes):
        if g[n].op in VIEW_OPS:
            continue
        for m in (n, *g[n].srcs):
            if g.base(m) in touch:
                touch[g.base(m)].append(i)

    def inplace_ok(x: str, i: int) -> bool:
        y, tx = g[g.nodes[i]], g[x]
        return (
            y.op in INPLACE_OPS
            and not tx.is_output
            and g.nodes[i] != x
            and (y.shape, y.strides_bytes, y.dtype) == (tx.shape, tx.strides_bytes, tx.dtype)
        )

    peak = 0
    for i in range(len(g.nodes)):
        live = 0
        for n, idx in touch.items():
            if not idx:
                continue
            start = -1 if g[n].is_input else min(idx)
            end = len(g.nodes) if g[n].is_output else max(idx)
            if start <= i <= end and not (i == end and inplace_ok(n, i)):
                live += g[n].nbytes
        peak = max(peak, live)
    assert lower_bound(g, serial_schedule(g)).bytes == peak


def test_unknown_policy_names_the_choices() -> None:
    g = build_graph("tiny")
    with pytest.raises(UnknownNameError, match="happens_before"):
        plan_memory(g, serial_schedule(g), detect_branches(g), "greedy")


# ------------------------------------------------------------------------- found by the oracle
def test_regression_free_merges_with_the_first_adjacent_block_past_an_empty_one() -> None:
    """Rule that differed (found against ggml-alloc, issue 4): freeing a zero-size tensor can
    leave an empty block inside another block's range, and ggml's free scans *all* blocks for
    one that ends where the freed range starts, so it still merges across that empty block.
    LACE used to look only at the positional neighbour, kept two blocks, and placed
    `linear_attn_out-0` at 27680 where ggml-alloc (0.3.36, CPU, 32-byte alignment) puts it at
    1024 in the tiny GDN layer under #27301's dependencies."""
    g = build_graph("tiny", "gdn", "decode", 1)
    rep = detect_branches(g)
    plan = plan_memory(g, serial_schedule(g), rep, "alloc_dep", alignment=32)
    assert plan.offsets["linear_attn_out-0"] == 1024
    assert plan.arena_bytes == 49376  # ggml's buffer size for this graph


def test_regression_interleave_keeps_leaf_order_and_dependencies() -> None:
    """Rules that differed: (1) ggml-cuda reorders nodes only, so inputs are still allocated
    in the graph's leaf order; (2) the interleaved order must stay topological, including the
    no-ops a lane carries behind a node."""
    from concurrency.graph.deps import node_dependencies
    from concurrency.memory.policies.interleave import interleaved_nodes

    g = build_graph("tiny", "stack", "decode", 1)
    rep = detect_branches(g)
    order = interleaved_nodes(g, rep)
    assert sorted(order) == sorted(g.nodes) and order != g.nodes
    pos = {n: i for i, n in enumerate(order)}
    deps = node_dependencies(g)
    assert all(pos[g.nodes[j]] < pos[n] for i, n in enumerate(g.nodes) for j in deps[i])
    plan = plan_memory(g, serial_schedule(g), rep, "interleave", alignment=32)
    inputs = [n for n in g.leafs if g[n].is_input]
    offsets = [plan.offsets[n] for n in inputs]
    assert offsets == sorted(offsets)  # allocated first, one after another, in leaf order
