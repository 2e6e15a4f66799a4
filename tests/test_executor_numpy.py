"""The NumPy executor: the gated delta rule against an independent chunked form, finite
reference runs, arena runs of a no-reuse plan matching the reference under every schedule, and
an unsafe plan that only the serial schedule survives."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from concurrency.errors import LaceError
from concurrency.execute.numpy_arena import (
    MAX_ARENA_BYTES,
    arena_run,
    arena_run_detailed,
    compare_runs,
    gated_delta_rule,
    linearization,
    make_inputs,
    max_rel_error,
    reference_run,
    run_node,
)
from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.builders.context import GraphContext
from concurrency.graph.config import get_config
from concurrency.graph.ir import Graph, GraphMeta, TensorKind
from concurrency.graph.schedule import serial_schedule, stream_schedule
from concurrency.memory.plan import MemoryPlan

TOL = 1e-4
ALIGN = 64
CASES = [("decode", 1), ("decode", 2), ("prefill", 1)]
PREFILL_TOKENS = 8


def tiny_graph(layer: str, mode: str, batch: int, model: object = "tiny") -> Graph:
    tokens = PREFILL_TOKENS if mode == "prefill" else None
    return build_graph(model, layer, mode, batch, tokens=tokens, n_ctx=512)  # type: ignore[arg-type]


def no_reuse_plan(graph: Graph) -> MemoryPlan:
    """Every planned tensor (inputs and non-view nodes) at its own aligned offset."""
    offsets: dict[str, int] = {}
    sizes: dict[str, int] = {}
    end = 0
    for name in (*graph.leafs, *graph.nodes):
        t = graph[name]
        if t.external or t.view_src is not None or (t.is_leaf and not t.is_input):
            continue
        offsets[name] = end
        sizes[name] = t.nbytes
        end += -(-t.nbytes // ALIGN) * ALIGN
    return MemoryPlan(
        "no-reuse",
        ALIGN,
        offsets,
        sizes,
        max(end, ALIGN),
        tuple(graph.nodes),
        graph=graph,
        schedule=serial_schedule(graph),
    )


# ---------------------------------------------------------------------------- gated delta rule
def _solve_unit_lower(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Forward substitution for a unit lower-triangular `a` (its diagonal is never read)."""
    x = np.zeros_like(b)
    for i in range(a.shape[0]):
        x[i] = b[i] - a[i, :i] @ x[:i]
    return x


def chunked_gdn(q, k, v, g, beta, state, chunk: int = 64):
    """gdn-reference §2.2 (WY / UT transform) in float64, one (sequence, value head) at a time;
    layouts as `gated_delta_rule` documents."""
    n_seq, n_tok, hk, dk = q.shape
    hv = v.shape[2]
    r = hv // hk
    out = np.zeros(v.shape)
    final = np.zeros(state.shape)
    for n in range(n_seq):
        for h in range(hv):
            s = state[n, h].astype(np.float64)
            for c0 in range(0, n_tok, chunk):
                m = min(chunk, n_tok - c0)
                qc = np.zeros((chunk, dk))
                kc = np.zeros((chunk, dk))
                vc = np.zeros((chunk, v.shape[3]))
                gc = np.zeros(chunk)
                bc = np.zeros(chunk)
                qc[:m] = q[n, c0 : c0 + m, h // r] / math.sqrt(dk)
                kc[:m] = k[n, c0 : c0 + m, h // r]
                vc[:m] = v[n, c0 : c0 + m, h]
                gc[:m] = g[n, c0 : c0 + m, h]
                bc[:m] = beta[n, c0 : c0 + m, h]
                gam = np.cumsum(gc)
                lower = np.tril(np.ones((chunk, chunk), dtype=bool))
                big_gamma = np.exp(np.where(lower, gam[:, None] - gam[None, :], -np.inf))
                ell = np.tril(bc[:, None] * (kc @ kc.T) * big_gamma, -1)
                a = np.eye(chunk) + ell
                u = _solve_unit_lower(a, bc[:, None] * vc)
                wm = _solve_unit_lower(a, (bc * np.exp(gam))[:, None] * kc)
                v_new = u - wm @ s
                o = np.exp(gam)[:, None] * (qc @ s) + ((qc @ kc.T) * big_gamma) @ v_new
                s = np.exp(gam[-1]) * s + kc.T @ (np.exp(gam[-1] - gam)[:, None] * v_new)
                out[n, c0 : c0 + m, h] = o[:m]
            final[n, h] = s
    return out, final


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True))


@pytest.mark.parametrize("n_tok", [1, 5, 70])
def test_gated_delta_rule_matches_chunked_form(n_tok: int) -> None:
    rng = np.random.default_rng(n_tok)
    n_seq, hk, hv, s = 2, 2, 4, 16
    q = _unit(rng.normal(size=(n_seq, n_tok, hk, s)))
    k = _unit(rng.normal(size=(n_seq, n_tok, hk, s)))
    v = rng.normal(size=(n_seq, n_tok, hv, s))
    g = -rng.uniform(0.0, 2.0, size=(n_seq, n_tok, hv))
    beta = 1.0 / (1.0 + np.exp(-rng.normal(size=(n_seq, n_tok, hv))))
    state = rng.normal(size=(n_seq, hv, s, s))
    out, final = gated_delta_rule(q, k, v, g, beta, state)
    want_out, want_final = chunked_gdn(q, k, v, g, beta, state)
    np.testing.assert_allclose(out, want_out, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(final, want_final, rtol=1e-10, atol=1e-10)


def test_gdn_node_layout_matches_chunked_form() -> None:
    """The GATED_DELTA_NET node reads q/k/v/g/beta/state in ggml layout (state ne0 = key
    index) and writes outputs then states, and the state write-back reaches the cache."""
    graph = tiny_graph("gdn", "prefill", 2)
    keep = ["q_l2-0", "k_l2-0", "v_conv-0", "gate_4d-0", "beta_sigmoid-0", "state_predelta-0"]
    keep += ["gdn_output-0", "new_state-0"]
    got = reference_run(graph, make_inputs(graph, 3), keep=keep)
    state = np.swapaxes(got["state_predelta-0"], -1, -2)  # [seq, h, v, k] → [seq, h, k, v]
    want_out, want_final = chunked_gdn(
        got["q_l2-0"],
        got["k_l2-0"],
        got["v_conv-0"],
        got["gate_4d-0"][..., 0],
        got["beta_sigmoid-0"][..., 0],
        state,
    )
    np.testing.assert_allclose(got["gdn_output-0"], want_out, rtol=1e-9, atol=1e-10)
    final = np.swapaxes(got["new_state-0"], -1, -2)
    np.testing.assert_allclose(final, want_final, rtol=1e-9, atol=1e-10)
    cache = got["cache_s_l0"].reshape(-1)
    np.testing.assert_array_equal(cache, got["new_state-0"].reshape(-1))


# ---------------------------------------------------------------------------- single ops
def _tiny_meta() -> GraphMeta:
    return GraphMeta(model="ops", layer="gdn", mode="decode", batch=1, tokens=1, n_layers=1)


def _run_ops(build, values: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    ctx = GraphContext()
    out = build(ctx)
    ctx.set_output(out)
    ctx.expand(out)
    graph = ctx.finish(_tiny_meta(), None)
    return reference_run(graph, values), out


def test_ssm_conv_and_broadcast_mul_mat_follow_ggml() -> None:
    rng = np.random.default_rng(0)
    sx = rng.normal(size=(1, 2, 5, 7))  # ne (W−1+T=7, C=5, n_seq=2)
    kernel = rng.normal(size=(1, 1, 5, 4))  # ne (W=4, C=5)
    values = {"sx": sx, "kernel": kernel}
    got, out = _run_ops(
        lambda c: c.ssm_conv(
            c.leaf("sx", "f32", (7, 5, 2), TensorKind.INPUT),
            c.leaf("kernel", "f32", (4, 5), TensorKind.WEIGHT),
            base="conv",
        ),
        values,
    )
    want = np.zeros((1, 2, 4, 5))  # ne (C, T, n_seq)
    for s in range(2):
        for t in range(4):
            for ch in range(5):
                want[0, s, t, ch] = sum(sx[0, s, ch, t + j] * kernel[0, 0, ch, j] for j in range(4))
    np.testing.assert_allclose(got[out], want, rtol=1e-12)

    a = rng.normal(size=(1, 2, 3, 4))  # ne (k=4, m=3, 2)
    b = rng.normal(size=(1, 4, 5, 4))  # ne (k=4, n=5, 4): batch i uses a's batch i // 2
    got, out = _run_ops(
        lambda c: c.mul_mat(
            c.leaf("a", "f32", (4, 3, 2), TensorKind.WEIGHT),
            c.leaf("b", "f32", (4, 5, 4), TensorKind.INPUT),
            base="mm",
        ),
        {"a": a, "b": b},
    )
    want = np.stack([b[0, i] @ a[0, i // 2].T for i in range(4)])[None]
    np.testing.assert_allclose(got[out], want, rtol=1e-12)


def test_flash_attention_uses_grouped_kv_heads_and_mask() -> None:
    rng = np.random.default_rng(1)
    d, n_q, n_kv, hq, hkv = 8, 3, 6, 4, 2
    q = rng.normal(size=(1, hq, n_q, d))
    k = rng.normal(size=(1, hkv, n_kv, d))
    v = rng.normal(size=(1, hkv, n_kv, d))
    mask = np.where(rng.random((1, 1, n_q, n_kv)) < 0.4, -np.inf, 0.0)
    mask[..., 0] = 0.0
    values = {"q": q, "k": k, "v": v, "mask": mask}
    got, out = _run_ops(
        lambda c: c.flash_attn_ext(
            c.leaf("q", "f32", (d, n_q, hq), TensorKind.INPUT),
            c.leaf("k", "f32", (d, n_kv, hkv), TensorKind.STATE),
            c.leaf("v", "f32", (d, n_kv, hkv), TensorKind.STATE),
            c.leaf("mask", "f16", (n_kv, n_q), TensorKind.INPUT),
            0.5,
            base="fa",
        ),
        values,
    )
    want = np.zeros((1, n_q, hq, d))
    for h in range(hq):
        for i in range(n_q):
            sc = k[0, h // 2] @ q[0, h, i] * 0.5 + mask[0, 0, i]
            p = np.exp(sc - sc.max())
            want[0, i, h] = (p / p.sum()) @ v[0, h // 2]
    np.testing.assert_allclose(got[out], want, rtol=1e-12)


# ---------------------------------------------------------------------------- whole graphs
@pytest.mark.parametrize("layer", ["gdn", "attn", "stack"])
@pytest.mark.parametrize(("mode", "batch"), CASES)
def test_reference_run_is_finite(layer: str, mode: str, batch: int) -> None:
    graph = tiny_graph(layer, mode, batch)
    got = reference_run(graph, make_inputs(graph, 0))
    outputs = [n for n in graph.nodes if graph[n].is_output]
    assert outputs and set(outputs) <= set(got)
    for name, value in got.items():
        assert np.all(np.isfinite(value)), name
    for name in outputs:
        assert np.abs(got[name]).max() > 0.1  # not silently zero


def _moe_graph() -> Graph:
    cfg = get_config("tiny").replace(
        name="tiny-moe", arch="qwen35moe", n_expert=4, n_expert_used=2, n_ff_exp=64, n_ff_shexp=64
    )
    return tiny_graph("stack", "prefill", 2, model=cfg)


@pytest.mark.parametrize("layer", ["gdn", "attn", "stack"])
@pytest.mark.parametrize(("mode", "batch"), CASES)
def test_no_reuse_plan_matches_reference_under_every_schedule(
    layer: str, mode: str, batch: int
) -> None:
    graph = tiny_graph(layer, mode, batch)
    plan = no_reuse_plan(graph)
    for schedule in (serial_schedule(graph), stream_schedule(graph, detect_branches(graph))):
        results = compare_runs(graph, schedule, plan, range(5))
        assert all(r.ok(TOL) for r in results), [r.error for r in results]


def test_moe_stack_runs_and_matches_in_the_arena() -> None:
    graph = _moe_graph()
    assert {"MUL_MAT_ID", "ARGSORT", "CLAMP", "SOFT_MAX", "SUM_ROWS", "DIV"} <= {
        graph[n].op for n in graph.nodes
    }
    schedule = stream_schedule(graph, detect_branches(graph))
    results = compare_runs(graph, schedule, no_reuse_plan(graph), range(2))
    assert all(r.ok(TOL) for r in results), [r.error for r in results]


def test_unsafe_plan_breaks_only_under_streams() -> None:
    """z_silu-0 (end of the z branch) placed on the fork attn_norm-0: safe in graph order,
    where z-0 is the fork's last reader, but the z branch's stream may run it before the
    qkv/alpha/beta branches have read the fork."""
    graph = tiny_graph("gdn", "decode", 1)
    plan = no_reuse_plan(graph)
    offsets = dict(plan.offsets)
    offsets["z_silu-0"] = offsets["attn_norm-0"]
    unsafe = replace(plan, offsets=offsets, policy="unsafe")
    inputs = make_inputs(graph, 0)
    ref = reference_run(graph, inputs)

    serial = serial_schedule(graph)
    assert all(
        max_rel_error(ref, arena_run(graph, serial, unsafe, inputs, s)) <= TOL for s in range(5)
    )

    streams = stream_schedule(graph, detect_branches(graph))
    errors = {
        s: max_rel_error(ref, arena_run(graph, streams, unsafe, inputs, s)) for s in range(20)
    }
    bad = [s for s, e in errors.items() if e > 1e-2]
    assert bad, errors
    order = arena_run_detailed(graph, streams, unsafe, inputs, bad[0]).order
    readers = ("qkv-0", "alpha_proj-0", "beta_proj-0")
    assert any(order.index("z_silu-0") < order.index(r) for r in readers)


# ---------------------------------------------------------------------------- pieces
def test_linearization_respects_happens_before_and_varies() -> None:
    graph = tiny_graph("gdn", "prefill", 1)
    schedule = stream_schedule(graph, detect_branches(graph))
    orders = {linearization(schedule, s) for s in range(5)}
    assert len(orders) > 1
    for order in orders:
        assert sorted(order) == list(range(len(graph.nodes)))
        pos = {node: i for i, node in enumerate(order)}
        for b in range(len(order)):
            for a in range(len(order)):
                if schedule.happens_before(a, b):
                    assert pos[a] < pos[b]
    assert linearization(serial_schedule(graph), 7) == tuple(range(len(graph.nodes)))


def test_make_inputs_is_deterministic_and_consistent() -> None:
    graph = build_graph("tiny", "attn", "prefill", 2, tokens=3, kv_tokens=5, n_ctx=512)
    a, b = make_inputs(graph, 4), make_inputs(graph, 4)
    assert a.keys() == b.keys() == set(graph.leafs)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    # one KV stream per sequence: mask [stream, 1, token of that sequence, cell of that stream]
    mask = a["attn_inp_kq_mask"]
    assert mask.shape == (2, 1, 3, 256)
    assert np.all(mask[:, :, :, :5] == 0.0)  # the shared history
    kv_size = graph["cache_k_l0"].shape[1]
    np.testing.assert_array_equal(
        a["attn_inp_k_idxs"].reshape(-1), [5, 6, 7, kv_size + 5, kv_size + 6, kv_size + 7]
    )
    assert mask[1, 0, 1, 5 + 0] == 0.0 and mask[1, 0, 1, 5 + 1] == 0.0
    assert mask[1, 0, 1, 5 + 2] == -np.inf  # a later token of the same sequence
    assert a["inp_pos"].reshape(-1)[:6].tolist() == [5, 6, 7, 5, 6, 7]
    assert a["blk.0.attn_norm.weight"].mean() == pytest.approx(1.0, abs=0.05)
    stack = tiny_graph("stack", "prefill", 2)
    ins = make_inputs(stack, 0)
    assert ins["inp_out_ids"].reshape(-1).tolist() == [PREFILL_TOKENS - 1, 2 * PREFILL_TOKENS - 1]
    assert ins["inp_tokens"].max() < 64 and np.all(ins["blk.0.ssm_a"] < 0)


def test_large_graphs_and_arenas_are_refused() -> None:
    big = build_graph("qwen3.5-0.8b", "stack", "decode", 1, layers=1)
    with pytest.raises(LaceError, match="tiny"):
        make_inputs(big, 0)
    with pytest.raises(LaceError, match="tiny"):
        reference_run(big, {})
    graph = tiny_graph("gdn", "decode", 1)
    huge = replace(no_reuse_plan(graph), arena_bytes=MAX_ARENA_BYTES + 1)
    with pytest.raises(LaceError, match="tiny"):
        arena_run(graph, serial_schedule(graph), huge, make_inputs(graph, 0), 0)


def test_plan_errors_name_the_tensor() -> None:
    graph = tiny_graph("gdn", "decode", 1)
    plan = no_reuse_plan(graph)
    offsets = dict(plan.offsets)
    del offsets["z-0"]
    with pytest.raises(LaceError, match="z-0"):
        arena_run(graph, serial_schedule(graph), replace(plan, offsets=offsets), {}, 0)


def test_max_rel_error() -> None:
    ref = {"a": np.array([3.0, 4.0]), "b": np.zeros(2)}
    assert max_rel_error(ref, {"a": np.array([3.0, 4.0]), "b": np.zeros(2)}) == 0.0
    assert max_rel_error(ref, {"a": np.array([3.0, 4.5]), "b": np.zeros(2)}) == pytest.approx(0.1)
    assert max_rel_error(ref, {"a": np.array([np.nan, 4.0]), "b": np.zeros(2)}) == math.inf
    with pytest.raises(LaceError):
        max_rel_error(ref, {"a": ref["a"]})


def test_run_node_rejects_unknown_ops() -> None:
    graph = tiny_graph("gdn", "decode", 1)
    fake = replace(graph[graph.nodes[0]], op="IM2COL")
    patched = Graph(
        {**graph.tensors, fake.name: fake}, graph.nodes, graph.leafs, graph.meta, graph.config
    )
    with pytest.raises(LaceError, match="IM2COL"):
        run_node(patched, fake.name, {})


@pytest.mark.parametrize("n_tok", [1, 5, 63, 64, 65, 130])
def test_chunked_and_recurrent_forms_agree(n_tok: int) -> None:
    """The executor's two GDN forms (prefill: chunked, decode: recurrent) in float64, with
    strong decay (g down to −20) where e^γ underflows: no NaN, agreement to 1e-10."""
    from concurrency.execute.numpy_arena import gated_delta_rule_chunked

    rng = np.random.default_rng(n_tok)
    n, hk, hv, s = 2, 2, 4, 8
    q = rng.normal(size=(n, n_tok, hk, s))
    k = rng.normal(size=(n, n_tok, hk, s))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    v = rng.normal(size=(n, n_tok, hv, s))
    g = -rng.uniform(0, 20, size=(n, n_tok, hv))
    beta = 1 / (1 + np.exp(-rng.normal(size=(n, n_tok, hv))))
    state = rng.normal(size=(n, hv, s, s))
    o1, s1 = gated_delta_rule(q, k, v, g, beta, state)
    o2, s2 = gated_delta_rule_chunked(q, k, v, g, beta, state)
    assert np.all(np.isfinite(o2)) and np.all(np.isfinite(s2))
    assert np.max(np.abs(o1 - o2)) < 1e-10 * max(1.0, np.max(np.abs(o1)))
    assert np.max(np.abs(s1 - s2)) < 1e-10 * max(1.0, np.max(np.abs(s1)))


def test_reference_rounds_the_sources_it_is_told_to() -> None:
    """round_sources applies to the named source of a node before the op: the result is the op
    of the rounded input; unknown nodes and sources are errors."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(1, 1, 3, 8))  # ne (k=8, m=3)
    b = rng.normal(size=(1, 1, 5, 8))  # ne (k=8, n=5)
    ctx = GraphContext()
    mm = ctx.mul_mat(
        ctx.leaf("a", "f32", (8, 3), TensorKind.WEIGHT),
        ctx.leaf("b", "f32", (8, 5), TensorKind.INPUT),
        base="mm",
    )
    ctx.set_output(mm)
    ctx.expand(mm)
    graph = ctx.finish(_tiny_meta(), None)
    seen = []

    def coarse(x: np.ndarray) -> np.ndarray:
        seen.append(x.copy())
        return np.round(x * 4.0) / 4.0

    values = {"a": a, "b": b}
    got = reference_run(graph, values, round_sources={mm: {1: coarse}})
    np.testing.assert_array_equal(seen[0].reshape(b.shape), b)
    want = (np.round(b * 4.0) / 4.0)[0, 0] @ a[0, 0].T
    np.testing.assert_allclose(got[mm].reshape(want.shape), want, rtol=1e-12)
    weights = reference_run(graph, values, round_sources={mm: {0: coarse}})
    want = b[0, 0] @ (np.round(a * 4.0) / 4.0)[0, 0].T
    np.testing.assert_allclose(weights[mm].reshape(want.shape), want, rtol=1e-12)
    exact = reference_run(graph, values)
    assert not np.allclose(exact[mm], got[mm])
    forced = reference_run(graph, values, force_results={mm: lambda r: r * 0.0 + 7.0})
    assert np.all(forced[mm] == 7.0)
    with pytest.raises(LaceError, match="name unknown nodes"):
        reference_run(graph, values, round_sources={"nope": {1: coarse}})
    with pytest.raises(LaceError, match="has no source 2"):
        reference_run(graph, values, round_sources={mm: {2: coarse}})
