"""Every kernel family on the GPU against the float64 NumPy reference, op by op, with the edge
cases of gdn-reference §5.4 (T < W; T = 1, 63, 64, 65; r = 1 and r > 1; strong decay), strided
views as sources, in-place reuse, index wrapping, ties in the router sort, and the three
projection paths (LACE's GEMV/GEMM, cuBLASLt through nvmath-python) in f32, f16 and bf16."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gpu_cases import l2_normalised, op_graph, planned, report, values_for

from concurrency.execute.gpu import build_launch_plan, check_gpu, reference_inputs, run_gpu
from concurrency.execute.numpy_arena import reference_run
from concurrency.graph.ir import Graph

pytestmark = pytest.mark.gpu

F32_TOL = 1e-5
COPY_TOL = 1e-7  # a copy differs from float64 by the f32 rounding of its inputs only


def run_op(graph: Graph, values, *, tol: float, record_property, policy: str = "no_reuse", **kw):
    """Run a one-op graph (serial schedule) eagerly and as a graph; assert both within `tol`."""
    schedule, plan = planned(graph, policy, streams="serial")
    inputs = reference_inputs(graph, values=values, weight_dtype=kw.get("weight_dtype", "f32"))
    ref = reference_run(graph, inputs)
    worst = 0.0
    for launch in ("eager", "graph"):
        check = check_gpu(graph, schedule, plan, inputs=inputs, reference=ref, launch=launch, **kw)
        worst = max(worst, check.error)
        assert check.error <= tol, f"{launch}: {dict(check.errors)} > {tol}"
        assert check.ok, f"{launch}: {check.summary()}"
    report(record_property, worst, tol)
    return ref


# ---------------------------------------------------------------------------- gated delta rule
GDN_CASES = [
    # dk, H_k, H_v, T, n_seq, decay, form
    (16, 2, 6, 1, 2, "real", "auto"),
    (32, 2, 4, 1, 3, "real", "auto"),
    (128, 2, 4, 1, 1, "real", "auto"),
    (128, 1, 1, 3, 1, "real", "recurrent"),
    (64, 2, 4, 1, 1, "real", "chunked"),
    (32, 2, 4, 63, 1, "real", "chunked"),
    (32, 2, 4, 64, 2, "real", "chunked"),
    (32, 2, 4, 65, 1, "real", "chunked"),
    (32, 2, 4, 65, 1, "real", "recurrent"),
    (128, 2, 6, 65, 1, "real", "chunked"),
    (32, 1, 1, 130, 1, "mild", "chunked"),
    (32, 2, 4, 65, 1, "strong", "chunked"),
    (32, 2, 4, 65, 1, "strong", "recurrent"),
    (16, 2, 6, 64, 2, "zero", "chunked"),
    (256, 1, 2, 65, 1, "real", "chunked"),
    (256, 1, 2, 2, 1, "real", "recurrent"),
    (128, 2, 6, 200, 2, "real", "chunked"),  # 4 chunks, tail of 8, r = 3, two sequences
    (128, 2, 6, 130, 1, "strong", "chunked"),
    (64, 1, 3, 100, 1, "mild", "chunked"),
    (128, 16, 48, 1, 4, "real", "auto"),  # Qwen3.5-27B's heads, decode
    (128, 16, 48, 70, 1, "real", "chunked"),  # … prefill
    # 16 and 32 lanes per value column (more, smaller blocks for small batches)
    (128, 2, 4, 3, 2, "real", "recurrent_l16"),
    (128, 2, 4, 3, 2, "real", "recurrent_l32"),
    (256, 1, 2, 2, 1, "real", "recurrent_l16"),
    (256, 1, 2, 2, 1, "real", "recurrent_l32"),
    (16, 2, 6, 1, 2, "real", "recurrent_l32"),
    (128, 16, 48, 1, 1, "real", "recurrent_l16"),
    (128, 16, 48, 1, 1, "real", "recurrent_l32"),
]
#: Single-pass TF32 tensor-core products (gdn="chunked_tf32"): gdn-reference §5.4's gate for
#: CUDA with TF32 MMA, 5e-3 (the CPU emulation measures 3.7e-4 on dk=32, T=65).
TF32_TOL = 5e-3


def _decay(rng: np.random.Generator, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    if kind == "real":  # g = −exp(A_log)·softplus(a + dt_bias)
        a = rng.normal(0.0, 1.0, shape) + rng.normal(0.0, 0.5, shape[-2:])
        return -np.exp(rng.normal(0.0, 0.5, shape[-2:])) * np.log1p(np.exp(a))
    if kind == "mild":
        return -rng.uniform(0.0, 0.02, shape)
    if kind == "strong":  # e^γ underflows to 0 within a chunk: must give no NaN
        return -20.0 - rng.uniform(0.0, 5.0, shape)
    return np.zeros(shape)


def gdn_graph(dk: int, hk: int, hv: int, n_tok: int, n_seq: int, offset: int = 0) -> Graph:
    """q, k, v as strided views of one conv-output tensor, exactly as the layer builds them;
    `offset` extra leading channels shift every view (1: rows no longer 16-byte aligned)."""
    channels = offset + 2 * hk * dk + hv * dk

    def build(b):
        conv = b.inp("conv", "f32", channels, n_tok, n_seq)
        row = 4 * channels
        nb = (4 * dk, row, row * n_tok)
        at = 4 * offset
        q = b.ctx.view(conv, (dk, hk, n_tok, n_seq), nb, at, base="q")
        k = b.ctx.view(conv, (dk, hk, n_tok, n_seq), nb, at + 4 * hk * dk, base="k")
        v = b.ctx.view(conv, (dk, hv, n_tok, n_seq), nb, at + 8 * hk * dk, base="v")
        g = b.inp("g", "f32", 1, hv, n_tok, n_seq)
        beta = b.inp("beta", "f32", 1, hv, n_tok, n_seq)
        state = b.inp("state", "f32", dk, dk, hv, n_seq)
        return b.ctx.gated_delta_net(q, k, v, g, beta, state, base="gdn")

    return op_graph(build)


@pytest.mark.parametrize("case", GDN_CASES, ids=lambda c: "dk{}-hk{}-hv{}-T{}-B{}-{}-{}".format(*c))
def test_gated_delta_rule(case, record_property) -> None:
    gdn_check(case, record_property)


@pytest.mark.parametrize("form", ["recurrent", "chunked"])
def test_gated_delta_rule_unaligned_views(form: str, record_property) -> None:
    """q, k, v one float off 16-byte alignment: the per-element recurrent kernel and the
    chunked kernels' per-element row loads."""
    gdn_check((32, 2, 4, 3 if form == "recurrent" else 65, 2, "real", form), record_property, 1)


@pytest.mark.parametrize("case", [(128, 2, 6, 130, 1, "real"), (32, 2, 4, 65, 1, "strong")])
def test_gated_delta_rule_tf32(case, record_property) -> None:
    """gdn="chunked_tf32": the same kernels with one TF32 tensor-core pass per product, held to
    TF32_TOL (gdn-reference §5.4: CUDA with TF32 MMA ≤ 5e-3), not the fp32 1e-5."""
    gdn_check((*case, "chunked_tf32"), record_property, tol=TF32_TOL)


def gdn_check(case, record_property, offset: int = 0, tol: float = F32_TOL) -> None:
    dk, hk, hv, n_tok, n_seq, decay, form = case
    rng = np.random.default_rng(dk * 1000 + n_tok)
    graph = gdn_graph(dk, hk, hv, n_tok, n_seq, offset)
    q = l2_normalised(rng, (n_seq, n_tok, hk, dk))
    k = l2_normalised(rng, (n_seq, n_tok, hk, dk))
    v = rng.normal(0.0, 1.0, (n_seq, n_tok, hv, dk))
    conv = np.concatenate(
        [q.reshape(n_seq, n_tok, -1), k.reshape(n_seq, n_tok, -1), v.reshape(n_seq, n_tok, -1)], -1
    )
    if offset:
        conv = np.concatenate([rng.normal(0.0, 1.0, (n_seq, n_tok, offset)), conv], -1)
    values = values_for(
        graph,
        0,
        conv=conv,
        g=_decay(rng, decay, (n_seq, n_tok, hv))[..., None],
        beta=1.0 / (1.0 + np.exp(-rng.normal(0.0, 1.0, (n_seq, n_tok, hv, 1)))),
        state=rng.normal(0.0, 0.1, (n_seq, hv, dk, dk)),
    )
    ref = run_op(graph, values, tol=tol, record_property=record_property, gdn=form)
    assert all(np.all(np.isfinite(r)) for r in ref.values())


def test_recurrent_and_chunked_forms_agree_on_a_prompt(record_property) -> None:
    """The two kernels on the same 65-token prompt agree with each other to fp32 rounding."""
    graph = gdn_graph(32, 2, 4, 65, 1)
    rng = np.random.default_rng(7)
    values = values_for(
        graph,
        1,
        conv=np.concatenate(
            [l2_normalised(rng, (1, 65, 2, 32)).reshape(1, 65, -1) for _ in range(2)]
            + [rng.normal(0.0, 1.0, (1, 65, 128))],
            -1,
        ),
        g=_decay(rng, "real", (1, 65, 4))[..., None],
        beta=rng.uniform(0.0, 1.0, (1, 65, 4, 1)),
        state=rng.normal(0.0, 0.1, (1, 4, 32, 32)),
    )
    schedule, plan = planned(graph, "no_reuse", streams="serial")
    inputs = reference_inputs(graph, values=values)
    runs = [
        run_gpu(build_launch_plan(graph, schedule, plan, gdn=form), inputs, "eager")
        for form in ("recurrent", "chunked")
    ]
    (name,) = [n for n in runs[0] if graph[n].op == "GATED_DELTA_NET"]
    diff = np.linalg.norm(runs[0][name] - runs[1][name]) / np.linalg.norm(runs[0][name])
    report(record_property, float(diff), F32_TOL)
    assert diff <= F32_TOL


# ---------------------------------------------------------------------------- elementwise chain
def test_elementwise_and_row_ops_in_place(record_property) -> None:
    """A chain of every elementwise and row op, planned with ggml's `sequential` policy so
    in-place reuse happens (ADD/MUL/DIV/UNARY/SCALE/CLAMP/RMS_NORM/SOFT_MAX on their source's
    bytes), starting from a transposed (strided) view and broadcast operands."""

    def build(b):
        x = b.inp("x", "f32", 24, 40)
        bias = b.inp("bias", "f32", 40, 1)
        w = b.weight("w.weight", 40)
        other = b.inp("other", "f32", 40, 24)
        c = b.ctx
        t = c.cont(c.transpose(x), (40, 24), base="xt")
        t = c.add(t, bias, base="biased")
        t = c.unary(c.scale(t, 6.0, base="wide"), "softplus", base="sp")
        t = c.unary(c.add(t, other, base="mixed"), "silu", base="act")
        t = c.mul(t, w, base="weighted")
        t = c.clamp(t, -1.5, math.inf, base="clamped")
        t = c.div(
            t,
            c.clamp(c.sum_rows(c.unary(t, "sigmoid", base="sg"), base="sum"), 0.5, 1e9, base="cl"),
            base="div",
        )
        t = c.soft_max(t, base="sm")
        t = c.rms_norm(c.scale(t, 30.0, base="big"), 1e-6, base="rms")
        t = c.glu(t, other, "swiglu", base="glu")
        return c.repeat(c.reshape(t, 40, 24, 1), (80, 24, 3), base="rep")

    graph = op_graph(build)
    values = values_for(graph, 3)
    for policy in ("sequential", "no_reuse"):
        run_op(graph, values, tol=F32_TOL, record_property=record_property, policy=policy)


# ---------------------------------------------------------------------------- data movement
def test_copies_concat_and_casts(record_property) -> None:
    """CONT of a permuted view, CONCAT along dims 0–2 with a strided operand, CPY into an f32
    state view and into an f16 state (rounding), as the conv-state write does; and each path of
    copy.cu: contiguous 16-byte pieces with a tail, rows × columns for a strided view of equal
    shape (rows ≥ 64, at an unaligned offset), per element into an unaligned f16 view."""

    def build(b):
        c = b.ctx
        a = b.inp("a", "f32", 6, 5, 4, 3)
        p = c.cont(c.permute(a, (2, 0, 1, 3)), (5, 4, 6, 3), base="perm")
        outs = [p]
        for dim in range(3):
            other_ne = [5, 4, 6, 3]
            other_ne[dim] = 2
            other = b.inp(f"o{dim}", "f32", *other_ne)
            outs.append(c.concat(p, other, dim, base=f"cat{dim}"))
        st = b.state("st", "f32", 60, 7)
        view = c.view(st, (60, 6), (240,), 240, base="st_rows")
        outs.append(c.cpy(c.reshape(p, 60, 6), view, base="to_state"))
        half = b.state("half", "f16", 360)
        outs.append(c.cpy(c.reshape(p, 360), half, base="to_half"))
        odd = b.inp("odd", "f32", 35)
        flat = b.state("flat", "f32", 40)
        outs.append(c.cpy(odd, c.view(flat, (35,), (), 0, base="flat35"), base="to_flat"))
        wide = b.inp("wide", "f32", 80, 3, 2)
        part = c.view(wide, (70, 3, 2), (320, 960), 8, base="wide_part")
        outs.append(c.cont(part, (70, 3, 2), base="part"))
        half2 = b.state("half2", "f16", 40)
        outs.append(
            c.cpy(c.reshape(odd, 5, 7), c.view(half2, (35,), (), 6, base="h35"), base="to_h35")
        )
        return tuple(outs)

    graph = op_graph(build)
    run_op(graph, values_for(graph, 4), tol=1e-3, record_property=record_property)


def test_get_rows_and_set_rows_wrap_indices(record_property) -> None:
    """GET_ROWS (i32, with out-of-range and negative indices wrapped) from an input and from a
    bf16 embedding table; SET_ROWS (i64) into an f16 cache and (i32) into an f32 input. Rows of
    24 take the 4-wide vector path; rows of 15 and 22 (unaligned row starts, a tail) the
    per-element one."""

    def build(b):
        c = b.ctx
        src = b.inp("src", "f32", 15, 9, 2)
        idx = b.inp("idx", "i32", 5, 2)
        table = b.weight("token_embd.weight", 22, 11)
        tok = b.inp("tok", "i32", 4)
        cache = b.state("cache", "f16", 24, 12)
        rows = b.inp("rows", "f32", 24, 4)
        pos = b.inp("pos", "i64", 4)
        dst = b.inp("dst", "f32", 15, 6)
        rows15 = b.inp("rows15", "f32", 15, 4)
        pos32 = b.inp("pos32", "i32", 4)
        wide = b.inp("wide", "f32", 24, 7)
        return (
            c.get_rows(src, idx, base="gathered"),
            c.get_rows(table, tok, base="embedded"),
            c.get_rows(wide, pos32, base="picked"),
            c.set_rows(cache, rows, pos, base="cache_write"),
            c.set_rows(dst, rows15, pos32, base="dst_write"),
        )

    graph = op_graph(build)
    values = values_for(
        graph,
        5,
        idx=np.array([[0, 8, 9, -1, 17], [3, 3, 2, -10, 4]]),
        tok=np.array([10, 0, 11, -3]),
        pos=np.array([1, 11, 5, 14]),
        pos32=np.array([5, 0, 2, 3]),
    )
    for wd in ("f32", "bf16"):
        run_op(graph, values, tol=1e-3, record_property=record_property, weight_dtype=wd)


@pytest.mark.parametrize("n_tok", [1, 2, 3, 9])
def test_ssm_conv_with_state(n_tok: int, record_property) -> None:
    """The conv over [W−1 cached columns | T new ones], including T < W."""

    def build(b):
        sx = b.inp("sx", "f32", 3 + n_tok, 40, 2)
        w = b.weight("blk.0.ssm_conv1d.weight", 4, 40)
        return b.ctx.ssm_conv(sx, w, base="conv")

    graph = op_graph(build)
    run_op(graph, values_for(graph, n_tok), tol=F32_TOL, record_property=record_property)


@pytest.mark.parametrize("n_rot,head", [(16, 64), (32, 32)])
def test_rope_partial_and_full(n_rot: int, head: int, record_property) -> None:
    """NeoX rotation of the first n_rot dims at positions up to ~30 000, in place after a norm."""

    def build(b):
        x = b.inp("x", "f32", head, 3, 5)
        pos = b.inp("pos", "i32", 20)
        n = b.ctx.rms_norm(x, 1e-6, base="n")
        return b.ctx.rope(n, pos, n_rot, base="roped")

    graph = op_graph(build)
    pos = np.concatenate([[0, 1, 1000, 7777, 30000], np.zeros(15, dtype=int)])
    for policy in ("sequential", "no_reuse"):
        run_op(
            graph,
            values_for(graph, 6, pos=pos),
            tol=F32_TOL,
            record_property=record_property,
            policy=policy,
        )


@pytest.mark.parametrize(
    "head,hq,hkv,n_q,n_kv,ns",
    [(64, 4, 2, 1, 256, 2), (32, 6, 2, 7, 256, 1), (256, 2, 1, 3, 512, 1), (32, 6, 2, 7, 48, 1)],
)
def test_flash_attention(head, hq, hkv, n_q, n_kv, ns, record_property) -> None:
    """Decode and prefill over an f16 KV cache viewed and permuted as llama.cpp does, GQA,
    a causal mask with a history, and one query row with every key masked (gives zeros). The
    first three split the keys across blocks (flash-decoding, then the combine kernel); 48 keys
    are too few to split (one kernel writes the result)."""

    def build(b):
        c = b.ctx
        q_heads = b.inp("q", "f32", head, hq, n_q, ns)
        k_cache = b.state("k_cache", "f16", head, hkv, n_kv, ns)
        v_cache = b.state("v_cache", "f16", head, hkv, n_kv, ns)
        mask = b.inp("mask", "f16", n_kv, n_q, 1, ns)
        qp = c.permute(q_heads, (0, 2, 1, 3))
        kp = c.permute(k_cache, (0, 2, 1, 3))
        vp = c.permute(v_cache, (0, 2, 1, 3))
        return c.flash_attn_ext(qp, kp, vp, mask, 1.0 / math.sqrt(head), base="attn")

    graph = op_graph(build)
    rng = np.random.default_rng(head + n_q)
    mask = np.full((ns, 1, n_q, n_kv), -np.inf)
    history = 37
    for i in range(n_q):
        mask[..., i, : history + i + 1] = 0.0
    mask[..., 0, 5:9] = -np.inf
    if n_q > 2:
        mask[..., 1, :] = -np.inf  # a fully masked row
    values = values_for(graph, 7, mask=mask)
    values["k_cache"] = rng.normal(0.0, 1.0, values["k_cache"].shape)
    run_op(graph, values, tol=F32_TOL, record_property=record_property)


def test_router_sort_top_k_and_experts(record_property) -> None:
    """SOFT_MAX → ARGSORT (descending, ties by index) → top-k view → GET_ROWS of the weights,
    MUL_MAT_ID over the chosen experts (ids from the sort and, wrapped, from an input)."""

    def build(b):
        c = b.ctx
        logits = b.inp("logits", "f32", 60, 5)
        probs = c.soft_max(logits, base="probs")
        top = c.argsort_top_k(probs, 4, base="top")
        chosen = c.get_rows(c.reshape(probs, 1, 60, 5), top, base="chosen")
        w = b.weight("blk.0.ffn_up_exps.weight", 32, 24, 60)
        x = b.inp("x", "f32", 32, 1, 5)
        up = c.mul_mat_id(w, x, top, base="up")
        ids = b.inp("ids", "i32", 3, 5)
        x3 = b.inp("x3", "f32", 32, 3, 5)
        down = c.mul_mat_id(w, x3, ids, base="down")
        return chosen, up, down

    graph = op_graph(build)
    rng = np.random.default_rng(8)
    ties = np.round(rng.normal(0.0, 1.0, (5, 60)) * 2.0) / 2.0  # many equal logits
    ids = rng.integers(-70, 130, (5, 3))
    for wd in ("f32", "f16", "bf16"):
        run_op(
            graph,
            values_for(graph, 8, logits=ties, ids=ids),
            tol=F32_TOL,
            record_property=record_property,
            weight_dtype=wd,
        )


MATMUL_CASES = [
    # K, M, columns (ne1, ne2), strided activation, matmul mode, weight type
    (256, 96, (1, 1), False, "custom", "f32"),
    (256, 96, (3, 1), True, "custom", "f16"),
    (100, 40, (8, 1), False, "custom", "bf16"),
    (256, 96, (9, 1), False, "custom", "f32"),
    (256, 96, (33, 2), True, "custom", "bf16"),
    (256, 96, (1, 1), False, "nvmath", "f32"),
    (256, 96, (5, 1), False, "nvmath", "f16"),
    (256, 96, (64, 1), False, "nvmath", "f32"),
    (256, 96, (65, 1), True, "nvmath", "f16"),
    (256, 96, (64, 2), False, "nvmath", "bf16"),
    (512, 256, (16, 1), False, "auto", "bf16"),
]


@pytest.mark.parametrize(
    "case",
    MATMUL_CASES,
    ids=lambda c: "K{}-M{}-N{}x{}-{}-{}-{}".format(
        c[0], c[1], *c[2], "strided" if c[3] else "dense", c[4], c[5]
    ),
)
def test_projection(case, record_property) -> None:
    k, m, (n1, n2), strided, mode, wd = case

    def build(b):
        w = b.weight("blk.0.attn_qkv.weight", k, m)
        if strided:  # every other row of a wider tensor: a strided activation
            wide = b.inp("wide", "f32", 2 * k, n1, n2)
            x = b.ctx.view(wide, (k, n1, n2), (8 * k, 8 * k * n1), 4 * k, base="x")
        else:
            x = b.inp("x", "f32", k, n1, n2)
        return b.ctx.mul_mat(w, x, base="proj")

    graph = op_graph(build)
    # cuBLASLt's activations cast to f16/bf16 are fed to the modelled reference (after checking
    # they are the exact ones rounded to nearest), so every path is held to fp32's threshold;
    # check.ok also bounds the error against exact activations (gdn-reference §5.4)
    run_op(
        graph,
        values_for(graph, 9),
        tol=F32_TOL,
        record_property=record_property,
        weight_dtype=wd,
        matmul=mode,
    )


# ---------------------------------------------------------------------------- fused kernels
FUSED = ["rms_norm_mul", "l2_norm", "gated_rms_norm", "ssm_conv_silu", "gdn_gates"]


def _fused_case(kind: str):
    """(graph builder, fused kernel, source, node it replaces, its tensors, scalars, skipped)."""
    if kind == "rms_norm_mul":

        def build(b):
            x = b.ctx.transpose(b.inp("x", "f32", 9, 48), base="xt")
            return b.ctx.mul(
                b.ctx.rms_norm(x, 1e-6, base="n"), b.weight("w.norm.weight", 48), base="y"
            )

        return (
            build,
            "rms_norm_mul_f32",
            "norm.cu",
            "y",
            ["y", "xt", "w.norm.weight"],
            [("f32", 1e-6)],
            {"n"},
        )
    if kind == "l2_norm":
        s = 32

        def build(b):
            n = b.ctx.rms_norm(b.inp("x", "f32", s, 2, 5), 1e-6 / s, base="n")
            return b.ctx.scale(n, 1.0 / math.sqrt(s), base="y")

        # rms(eps/S)·S^-1/2 = x / sqrt(Σx² + eps): the fused kernel's eps is eps, its scale 1
        return (
            build,
            "l2_norm_f32",
            "norm.cu",
            "y",
            ["y", "x"],
            [("f32", 1e-6), ("f32", 1.0)],
            {"n"},
        )
    if kind == "gated_rms_norm":

        def build(b):
            o, z = b.inp("o", "f32", 32, 4, 3), b.inp("z", "f32", 32, 4, 3)
            zs = b.ctx.unary(z, "silu", base="zs")
            nw = b.ctx.mul(
                b.ctx.rms_norm(o, 1e-6, base="n"), b.weight("blk.0.ssm_norm.weight", 32), base="nw"
            )
            return b.ctx.mul(nw, zs, base="y")

        tensors = ["y", "o", "blk.0.ssm_norm.weight", "z"]
        return (
            build,
            "gated_rms_norm_f32",
            "norm.cu",
            "y",
            tensors,
            [("f32", 1e-6)],
            {"n", "nw", "zs"},
        )
    if kind == "ssm_conv_silu":

        def build(b):
            conv = b.ctx.ssm_conv(
                b.inp("sx", "f32", 5, 40, 2), b.weight("blk.0.ssm_conv1d.weight", 4, 40), base="c"
            )
            return b.ctx.unary(conv, "silu", base="y")

        return (
            build,
            "ssm_conv_silu_f32",
            "conv.cu",
            "y",
            ["y", "sx", "blk.0.ssm_conv1d.weight"],
            [],
            {"c"},
        )

    def build(b):  # gdn gates: β = sigmoid(b), g = ssm_a · softplus(a + dt_bias)
        c = b.ctx
        beta = c.unary(b.inp("b", "f32", 6, 7), "sigmoid", base="beta")
        biased = c.add(b.inp("a", "f32", 6, 7), b.weight("blk.0.ssm_dt.bias", 6), base="biased")
        g = c.mul(c.unary(biased, "softplus", base="sp"), b.weight("blk.0.ssm_a", 6), base="g")
        return beta, g

    tensors = ["beta", "g", "b", "a", "blk.0.ssm_dt.bias", "blk.0.ssm_a"]
    return build, "gdn_gates_f32", "elementwise.cu", "g", tensors, [], {"beta", "biased", "sp"}


@pytest.mark.parametrize("kind", FUSED)
def test_fused_kernel_matches_the_unfused_ops(kind: str, record_property) -> None:
    """Each fused kernel against the reference of the ops it fuses (no memory reuse)."""
    from gpu_cases import fused

    build, kernel, source, at, tensors, scalars, skip = _fused_case(kind)
    graph = op_graph(build)
    schedule, plan = planned(graph, "no_reuse", streams="serial")
    values = values_for(graph, 10)
    if kind == "gdn_gates":
        values["blk.0.ssm_a"] = -np.exp(values["blk.0.ssm_a"])
    inputs = reference_inputs(graph, values=values)
    ref = reference_run(graph, inputs)
    lp = fused(build_launch_plan(graph, schedule, plan), kernel, source, at, tensors, scalars, skip)
    from concurrency.execute.gpu import relative_errors

    got = run_gpu(lp, inputs, "graph")
    errors = relative_errors(ref, got)
    report(record_property, max(errors.values()), F32_TOL)
    assert max(errors.values()) <= F32_TOL, errors
