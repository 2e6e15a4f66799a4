"""The ggml ops in NumPy: one function per op, looked up by `run_node`.

Every function takes the node's Tensor, its source arrays (NumPy order: ggml's fastest
dimension last) and its output array, and returns the result (or writes it and returns None).
Conventions that ggml leaves open are documented in `concurrency.execute.numpy_arena`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from concurrency.errors import LaceError
from concurrency.graph.ir import VIEW_OPS, Graph, Tensor

Array = np.ndarray
Op = Callable[[Tensor, list[Array], Array], "Array | None"]

#: RoPE frequency base (Qwen3.5's rope_theta). It changes values, never memory behaviour.
ROPE_FREQ_BASE = 10_000_000.0
SOFTPLUS_THRESHOLD = 20.0  # torch's default: softplus(x) = x above it


# ---------------------------------------------------------------------------- elementwise helpers
def _repeat_to(b: Array, shape: tuple[int, ...]) -> Array:
    """ggml_repeat semantics: src1 tiled (index i % ne) up to src0's shape."""
    if b.shape == shape:
        return b
    if any(s % n for s, n in zip(shape, b.shape, strict=True)):
        raise LaceError(f"cannot broadcast shape {b.shape} to {shape} (ggml_can_repeat)")
    return np.tile(b, tuple(s // n for s, n in zip(shape, b.shape, strict=True)))


def _sigmoid(x: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-x))


def _softplus(x: Array) -> Array:
    """log(1 + eˣ), and x itself above the threshold (torch's softplus)."""
    return np.where(x > SOFTPLUS_THRESHOLD, x, np.log1p(np.exp(np.minimum(x, SOFTPLUS_THRESHOLD))))


_UNARY: dict[str, Callable[[Array], Array]] = {
    "silu": lambda x: x * _sigmoid(x),
    "sigmoid": _sigmoid,
    "softplus": _softplus,
}


def _rows_index(idx: Array, n: int) -> Array:
    """Row indices as int64, wrapped into [0, n): a corrupted index in an unsafe arena run
    reads or writes a wrong row (a wrong output) instead of crashing the run."""
    return np.mod(idx.astype(np.int64), n)


# ---------------------------------------------------------------------------- ops
def _op_get_rows(t: Tensor, s: list[Array], out: Array) -> Array:
    """dst[:, i10, i11, i12] = src0[:, idx[i10, i11, i12], i11, i12]."""
    a, idx = s
    rows = _rows_index(idx[0], a.shape[2])  # (b2, b1, b0)
    b2, b1, _ = rows.shape
    i3 = (np.arange(b2) % a.shape[0])[:, None, None]
    i2 = (np.arange(b1) % a.shape[1])[None, :, None]
    return a[i3, i2, rows]


def _op_rms_norm(t: Tensor, s: list[Array], out: Array) -> Array:
    x = s[0]
    eps = float(t.params[0])  # type: ignore[arg-type]
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def _binary(fn: Callable[[Array, Array], Array]) -> Op:
    def op(t: Tensor, s: list[Array], out: Array) -> Array:
        return fn(s[0], _repeat_to(s[1], s[0].shape))

    return op


def _op_unary(t: Tensor, s: list[Array], out: Array) -> Array:
    fn = _UNARY.get(str(t.params[0]))
    if fn is None:
        raise LaceError(f"unary function {t.params[0]!r} is not implemented (node {t.name!r})")
    return fn(s[0])


def _op_scale(t: Tensor, s: list[Array], out: Array) -> Array:
    """src0 · params[0]; the in-place form's output view is the source's own memory."""
    return s[0] * float(t.params[0])  # type: ignore[arg-type]


def _op_mul_mat(t: Tensor, s: list[Array], out: Array) -> Array:
    """dst[i, j] = Σ_k a[k, i]·b[k, j]; a's batch dims broadcast to b's by repetition
    (batch i12 of b uses batch i12 // (ne12/ne02) of a, as ggml)."""
    a, b = s
    a = np.repeat(np.repeat(a, b.shape[1] // a.shape[1], axis=1), b.shape[0] // a.shape[0], axis=0)
    return np.matmul(b, np.swapaxes(a, -1, -2))


def _op_cont(t: Tensor, s: list[Array], out: Array) -> Array:
    """Elements in ggml order (ne0 fastest) into a contiguous tensor of the output's shape."""
    return np.reshape(s[0], out.shape)


def _op_concat(t: Tensor, s: list[Array], out: Array) -> Array:
    dim = int(t.params[0])  # type: ignore[call-overload]
    return np.concatenate(s, axis=3 - dim)


def _op_cpy(t: Tensor, s: list[Array], out: Array) -> Array:
    """Copy src0, element by element in ggml order, into the destination view (src1)."""
    return np.reshape(np.array(s[0]), out.shape)


def _op_set_rows(t: Tensor, s: list[Array], out: Array) -> None:
    """dst[:, idx[i01, i02, i03], i02, i03] = src0[:, i01, i02, i03]; other rows untouched.
    The output view IS the destination's memory, so rows are written in place."""
    values, idx = s[0], s[1]
    n3, n2, n1, _ = values.shape
    idx3 = _rows_index(idx[0], out.shape[2])  # idx numpy (1, ne12, ne11, ne10 = n1)
    i3 = np.arange(n3)[:, None, None]
    i2 = np.arange(n2)[None, :, None]
    rows = idx3[i3 % idx3.shape[0], i2 % idx3.shape[1], np.arange(n1)[None, None, :]]
    out[i3 % out.shape[0], i2 % out.shape[1], rows] = values
    return None


def _op_ssm_conv(t: Tensor, s: list[Array], out: Array) -> Array:
    """out[c, t, s] = Σ_j sx[t + j, c, s]·kernel[j, c] (the W−1 cached columns come first)."""
    sx, kernel = s  # sx numpy (1, n_seq, C, W−1+T); kernel numpy (1, 1, C, W)
    w = kernel.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(sx, w, axis=-1)  # (1, n_seq, C, T, W)
    return np.einsum("ascTw,cw->asTc", windows, kernel[0, 0])


def gated_delta_rule(
    q: Array, k: Array, v: Array, g: Array, beta: Array, state: Array
) -> tuple[Array, Array]:
    """The recurrent gated delta rule (gdn-reference §2.1), per sequence and value head.

    Layouts (NumPy, slowest first): q, k [n_seqs, T, Hk, S] already L2-normalised; v
    [n_seqs, T, Hv, S]; g (log decay) and beta [n_seqs, T, Hv]; state [n_seqs, Hv, S_k, S_v]
    with rows the key dimensions. Value head h reads key head h // (Hv/Hk). q is scaled by
    1/sqrt(S) here. Per token: S ← e^g·S; δ = β(v − Sᵀk); S ← S + kδᵀ; o = Sᵀq.
    Returns (outputs [n_seqs, T, Hv, S_v], final state [n_seqs, Hv, S_k, S_v]).
    """
    hk, hv = q.shape[2], v.shape[2]
    if hv % hk:
        raise LaceError(f"value heads ({hv}) must be a multiple of key heads ({hk})")
    r = hv // hk
    qh = np.repeat(q, r, axis=2) / math.sqrt(q.shape[-1])
    kh = np.repeat(k, r, axis=2)
    s_mat = np.array(state, dtype=np.result_type(state, q))
    outs = np.empty(v.shape, dtype=s_mat.dtype)
    for i in range(q.shape[1]):
        s_mat *= np.exp(g[:, i])[:, :, None, None]
        kt = kh[:, i]  # [n_seqs, Hv, S_k]
        mem = np.einsum("shkv,shk->shv", s_mat, kt)
        delta = beta[:, i][:, :, None] * (v[:, i] - mem)
        s_mat += kt[:, :, :, None] * delta[:, :, None, :]
        outs[:, i] = np.einsum("shkv,shk->shv", s_mat, qh[:, i])
    return outs, s_mat


CHUNK = 64


def gated_delta_rule_chunked(
    q: Array, k: Array, v: Array, g: Array, beta: Array, state: Array, chunk: int = CHUNK
) -> tuple[Array, Array]:
    """The chunked (WY / UT-transform) form of the same rule (gdn-reference §2.2), as prefill
    kernels compute it; same arguments and results as `gated_delta_rule`.

    Per chunk of `chunk` tokens (the tail zero-padded with g = β = 0, k = v = 0, which changes
    nothing): γ = cumsum(g); Γ_ij = e^(γ_i − γ_j) for i ≥ j (masked before exp);
    L = strictly-lower(β_i k̂_i·k̂_j Γ_ij); T = (I + L)⁻¹; U = T diag(β) V;
    W = T diag(β e^γ) K̂; V_new = U − W S; O = diag(e^γ) Q̂ S + ((Q̂ K̂ᵀ) ⊙ Γ) V_new;
    S ← e^(γ_last) S + K̂ᵀ diag(e^(γ_last − γ)) V_new.
    """
    hk, hv = q.shape[2], v.shape[2]
    if hv % hk:
        raise LaceError(f"value heads ({hv}) must be a multiple of key heads ({hk})")
    r = hv // hk
    n_tok = q.shape[1]
    pad = (-n_tok) % chunk

    def heads_first(x: Array) -> Array:  # [n_seqs, T, H, ...] → [n_seqs, H, T+pad, ...]
        x = np.moveaxis(x, 2, 1)
        widths = [(0, 0)] * x.ndim
        widths[2] = (0, pad)
        return np.pad(x, widths)

    qh = heads_first(np.repeat(q, r, axis=2) / math.sqrt(q.shape[-1]))
    kh = heads_first(np.repeat(k, r, axis=2))
    vh = heads_first(v)
    gh, bh = heads_first(g), heads_first(beta)
    s_mat = np.array(state, dtype=np.result_type(state, q))
    outs = np.empty_like(vh, dtype=s_mat.dtype)
    causal = np.tril(np.ones((chunk, chunk), dtype=bool))
    strict = np.tril(np.ones((chunk, chunk), dtype=bool), -1)
    eye = np.eye(chunk)
    for c0 in range(0, n_tok + pad, chunk):
        sl = slice(c0, c0 + chunk)
        qc, kc, vc, gc, bc = qh[:, :, sl], kh[:, :, sl], vh[:, :, sl], gh[:, :, sl], bh[:, :, sl]
        gamma = np.cumsum(gc, axis=-1)  # [n, H, c]
        diff = gamma[..., :, None] - gamma[..., None, :]
        decay = np.where(causal, np.exp(np.where(causal, diff, 0.0)), 0.0)
        kk = np.einsum("nhik,nhjk->nhij", kc, kc)
        lower = np.where(strict, bc[..., :, None] * kk * decay, 0.0)
        t_inv = np.linalg.solve(eye + lower, np.broadcast_to(eye, lower.shape))
        u = t_inv @ (bc[..., None] * vc)
        w = t_inv @ ((bc * np.exp(gamma))[..., None] * kc)
        v_new = u - w @ s_mat
        qk = np.einsum("nhik,nhjk->nhij", qc, kc) * decay
        outs[:, :, sl] = (np.exp(gamma)[..., None] * (qc @ s_mat)) + qk @ v_new
        last = gamma[..., -1:]
        s_mat = np.exp(last)[..., None] * s_mat + np.swapaxes(kc, -1, -2) @ (
            np.exp(last - gamma)[..., None] * v_new
        )
    return np.moveaxis(outs[:, :, :n_tok], 1, 2), s_mat


def _op_gated_delta_net(t: Tensor, s: list[Array], out: Array) -> Array:
    """Fused GDN: srcs q, k, v, g, beta, state in ggml layout (module docstring); the output
    holds the outputs [S, Hv, n_tokens, n_seqs], then the final states [S_k, S_v, Hv, n_seqs]."""
    if t.params and int(t.params[0]) != 1:  # type: ignore[call-overload]
        raise LaceError(f"GATED_DELTA_NET with {t.params[0]} state snapshots is not implemented")
    q, k, v, g, beta, state = s
    # decode steps use the recurrent form, prompts the chunked one (as fused_gdn_ar / _ch)
    rule = gated_delta_rule if q.shape[1] == 1 else gated_delta_rule_chunked
    o, new_state = rule(q, k, v, g[..., 0], beta[..., 0], np.swapaxes(state, -1, -2))
    flat = np.concatenate([o.reshape(-1), np.swapaxes(new_state, -1, -2).reshape(-1)])
    return flat.reshape(out.shape)


def _op_rope(t: Tensor, s: list[Array], out: Array) -> Array:
    """NeoX rotation of dims [0, n_rot) of each head: pairs (i, i + n_rot/2) turn by
    pos·base^(−2i/n_rot); position of token i2 is pos[i2]; dims ≥ n_rot pass through."""
    x, pos = s
    n_rot = int(t.params[0])  # type: ignore[call-overload]
    half = n_rot // 2
    p = pos.reshape(-1)[: x.shape[1]].astype(np.float64)
    theta = p[:, None] * ROPE_FREQ_BASE ** (-2.0 * np.arange(half) / n_rot)  # (T, half)
    cos = np.cos(theta)[None, :, None, :].astype(x.dtype)
    sin = np.sin(theta)[None, :, None, :].astype(x.dtype)
    y = np.array(x)
    x0, x1 = x[..., :half], x[..., half:n_rot]
    y[..., :half] = x0 * cos - x1 * sin
    y[..., half:n_rot] = x0 * sin + x1 * cos
    return y


def _op_flash_attn_ext(t: Tensor, s: list[Array], out: Array) -> Array:
    """softmax(q·kᵀ·scale + mask)·v per head; query head h uses K/V head h // (Hq/Hkv).
    q numpy [1, Hq, n_q, D], k/v [1, Hkv, n_kv, D], mask [1, 1, ≥n_q, n_kv]; output
    [1, n_q, Hq, Dv] (ggml's permuted result). A fully masked row gives zeros."""
    q, k, v, mask = s
    r = q.shape[1] // k.shape[1]
    kh = np.repeat(k, r, axis=1)
    vh = np.repeat(v, r, axis=1)
    scale = float(t.params[0])  # type: ignore[arg-type]
    scores = np.einsum("bhqd,bhkd->bhqk", q, kh) * scale + mask[:, :, : q.shape[2], :]
    top = np.max(scores, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    p = np.exp(scores - top)
    total = np.sum(p, axis=-1, keepdims=True)
    p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    o = np.einsum("bhqk,bhkd->bhqd", p, vh)
    return np.swapaxes(o, 1, 2)


def _op_glu(t: Tensor, s: list[Array], out: Array) -> Array:
    if t.params[0] != "swiglu":
        raise LaceError(f"GLU {t.params[0]!r} is not implemented (node {t.name!r})")
    return _UNARY["silu"](s[0]) * s[1]


def _op_soft_max(t: Tensor, s: list[Array], out: Array) -> Array:
    x = s[0]
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _op_top_k(t: Tensor, s: list[Array], out: Array) -> Array:
    """Indices of the k largest entries of each row, largest first (argsort descending)."""
    k = out.shape[-1]
    return np.argsort(-s[0], axis=-1, kind="stable")[..., :k]


def _op_argsort(t: Tensor, s: list[Array], out: Array) -> Array:
    """Indices sorting each row in descending order (what ggml_argsort_top_k views)."""
    return np.argsort(-s[0], axis=-1, kind="stable")


def _op_clamp(t: Tensor, s: list[Array], out: Array) -> Array:
    lo, hi = (float(x) for x in t.params)  # type: ignore[arg-type]
    return np.clip(s[0], lo, hi)


def _op_repeat(t: Tensor, s: list[Array], out: Array) -> Array:
    """ggml_repeat: tile the source along every dimension up to the output's shape."""
    reps = tuple(o // i for o, i in zip(out.shape, s[0].shape, strict=True))
    return np.tile(s[0], reps)


def _op_sum_rows(t: Tensor, s: list[Array], out: Array) -> Array:
    return np.sum(s[0], axis=-1, keepdims=True)


def _op_mul_mat_id(t: Tensor, s: list[Array], out: Array) -> Array:
    """dst[:, e, t] = W[:, :, ids[e, t]]ᵀ · x[:, e % ne11, t]: each token's selected experts."""
    w, x, ids = s  # w numpy (1, E, m, k); x (1, T, n_x, k); ids (1, 1, T, n_used)
    chosen = _rows_index(ids[0, 0], w.shape[1])  # (T, n_used)
    w_sel = w[0][chosen]  # (T, n_used, m, k)
    x_sel = x[0][:, np.arange(chosen.shape[1]) % x.shape[2]]  # (T, n_used, k)
    return np.einsum("tumk,tuk->tum", w_sel, x_sel)[None]


OPS: Mapping[str, Op] = {
    "GET_ROWS": _op_get_rows,
    "RMS_NORM": _op_rms_norm,
    "MUL": _binary(np.multiply),
    "ADD": _binary(np.add),
    "DIV": _binary(np.divide),
    "UNARY": _op_unary,
    "SCALE": _op_scale,
    "MUL_MAT": _op_mul_mat,
    "CONT": _op_cont,
    "CONCAT": _op_concat,
    "CPY": _op_cpy,
    "SET_ROWS": _op_set_rows,
    "SSM_CONV": _op_ssm_conv,
    "GATED_DELTA_NET": _op_gated_delta_net,
    "ROPE": _op_rope,
    "FLASH_ATTN_EXT": _op_flash_attn_ext,
    "GLU": _op_glu,
    "SOFT_MAX": _op_soft_max,
    "TOP_K": _op_top_k,
    "ARGSORT": _op_argsort,
    "CLAMP": _op_clamp,
    "REPEAT": _op_repeat,
    "SUM_ROWS": _op_sum_rows,
    "MUL_MAT_ID": _op_mul_mat_id,
}


def run_node(
    graph: Graph,
    name: str,
    arrays: Mapping[str, Array | None],
    round_sources: Mapping[int, Callable[[Array], Array]] | None = None,
    force_result: Callable[[Array], Array] | None = None,
) -> None:
    """Compute node `name` from its sources' current values into its own array.

    Views and empty tensors do nothing. The result is computed in full before it is written,
    so an in-place op (output on its source's bytes) sees its whole source. `round_sources`
    maps a source index to a function applied to that source first (a projection's activations
    or a cache row rounded to a narrower type, as a device that casts them does);
    `force_result` replaces the node's result afterwards (given it, it returns what to keep)."""
    t = graph[name]
    if t.is_empty or t.op in VIEW_OPS:
        return
    op = OPS.get(t.op)
    if op is None:
        raise LaceError(f"op {t.op} (node {name!r}) is not implemented by the NumPy executor")
    out = arrays[name]
    srcs = [arrays[s] for s in t.srcs]
    if any(a is None for a in srcs):
        raise LaceError(f"node {name!r} reads an empty tensor")
    for i, fn in (round_sources or {}).items():
        if not 0 <= i < len(srcs):
            raise LaceError(f"node {name!r} ({t.op}) has no source {i} to round")
        srcs[i] = fn(np.asarray(srcs[i]))
    assert out is not None
    result = op(t, srcs, out)  # type: ignore[arg-type]
    if result is not None:
        out[...] = result
    if force_result is not None:
        out[...] = force_result(np.array(out))
