"""Qwen3.5 / Qwen3-Next graphs in llama.cpp's node order.

The functions follow `src/models/qwen35.cpp`, `delta-net-base.cpp` and `llama-graph.cpp`
(`build_rs`, `build_attn`, `build_ffn`) of the llama.cpp that llama-cpp-python 0.3.36 vendors:
the same ggml calls, in the same order, with the same `ggml_build_forward_expand` points, so
node order, views and sources match the engine (checked against a real dump in the tests).

Memory model of the engine for B sequences of T tokens each: the recurrent cache holds B
cells (`mem_size = n_rs = B`, head 0); prefill starts fresh sequences (the first cell is
zeroed, `rs_zero = 0`), decode continues them (`rs_zero = -1`: a zero-sized clear); the KV
cache holds `n_ctx` cells of which `n_kv` (a multiple of 256) are read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from concurrency.graph.builders.context import GraphContext
from concurrency.graph.config import ModelConfig
from concurrency.graph.ir import TensorKind

RMS_EPS = 1e-6
KV_PAD = 256


@dataclass(frozen=True)
class Step:
    """The ubatch a graph computes: B sequences × T tokens, and the KV cache it reads."""

    n_seqs: int
    n_seq_tokens: int
    prefill: bool
    n_ctx: int
    kv_tokens: int
    reserve: bool = False  # the worst-case graph llama.cpp reserves at context creation
    n_outputs: int | None = None  # rows of logits (default: the last token of each sequence)

    @property
    def n_tokens(self) -> int:
        return self.n_seqs * self.n_seq_tokens

    @property
    def fresh_state(self) -> bool:
        """Whether the graph clears a recurrent state cell (`rs_z ≥ 0`): new sequences in a
        prompt, and the reserve graphs (the full memory context reports rs_z = 0)."""
        return self.prefill or self.reserve

    @property
    def n_kv(self) -> int:
        """KV cells the attention reads: used cells padded to 256, at most n_ctx; all n_ctx
        cells in a reserve graph (the full memory context)."""
        if self.reserve:
            return self.kv_size
        used = self.kv_tokens + self.n_seq_tokens
        return min(self.kv_size, max(KV_PAD, math.ceil(used / KV_PAD) * KV_PAD))

    @property
    def n_streams(self) -> int:
        """KV-cache streams: one per sequence (llama.cpp's default, kv_unified = false)."""
        return self.n_seqs

    @property
    def kv_size(self) -> int:
        """KV cells per stream: n_ctx split over the sequences, padded to 256."""
        if self.n_seqs == 1:
            return self.n_ctx
        return max(KV_PAD, math.ceil(self.n_ctx / self.n_seqs / KV_PAD) * KV_PAD)

    @property
    def outputs(self) -> int:
        return self.n_seqs if self.n_outputs is None else self.n_outputs


class Qwen35Builder:
    """Emits one Qwen3.5-family graph into a GraphContext."""

    def __init__(self, cfg: ModelConfig, step: Step) -> None:
        self.cfg = cfg
        self.step = step
        self.ctx = GraphContext()
        self._weights: dict[str, str] = {}
        self._inputs: dict[str, str] = {}

    # ------------------------------------------------------------------ leafs
    def w(self, ggml_name: str, *ne: int) -> str:
        """A weight leaf, created once (names as in the GGUF file)."""
        if ggml_name not in self._weights:
            self._weights[ggml_name] = self.ctx.leaf(ggml_name, "f32", ne, TensorKind.WEIGHT)
        return self._weights[ggml_name]

    def state(self, ggml_name: str, dtype: str, *ne: int) -> str:
        if ggml_name not in self._weights:
            self._weights[ggml_name] = self.ctx.leaf(ggml_name, dtype, ne, TensorKind.STATE)
        return self._weights[ggml_name]

    def inp(self, ggml_name: str, dtype: str, *ne: int) -> str:
        if ggml_name not in self._inputs:
            self._inputs[ggml_name] = self.ctx.leaf(ggml_name, dtype, ne, TensorKind.INPUT)
        return self._inputs[ggml_name]

    def s_copy_views(self) -> tuple[str, str]:
        """build_rs_inp: the state-copy input and its main/extra views (made once)."""
        if "s_copy_main" not in self._inputs:
            n_rs = n_seqs = self.step.n_seqs
            s_copy = self.inp("rs_s_copy", "i32", n_rs)
            ctx, lay = self.ctx, self.ctx.layer
            ctx.layer = None
            self._inputs["s_copy_main"] = ctx.view(s_copy, (n_seqs,), (), 0, base="s_copy_main")
            self._inputs["s_copy_extra"] = ctx.view(
                s_copy, (n_rs - n_seqs,), (), n_seqs * 4, base="s_copy_extra"
            )
            ctx.layer = lay
        return self._inputs["s_copy_main"], self._inputs["s_copy_extra"]

    # ------------------------------------------------------------------ shared pieces
    def norm(self, x: str, weight: str, label: str, il: int | None) -> str:
        ctx = self.ctx
        n = ctx.rms_norm(x, RMS_EPS, base=f"{label}_rms")
        ctx.name(n, _gname("norm", il))
        return ctx.name(ctx.mul(n, weight, base=label), _gname(label, il))

    def build_rs(self, cache: str, state_size: int, label: str) -> str:
        """llm_graph_context::build_rs: clear a zero state, gather the sequences' states, copy
        the extra cells; returns the gathered states [state_size, n_seqs]."""
        ctx, st = self.ctx, self.step
        main, extra = self.s_copy_views()
        n_rs = n_seqs = st.n_seqs
        rs_zero = 0 if st.fresh_state else -1
        cache_t = ctx[cache]
        states = ctx.reshape(cache, state_size, cache_t.shape[1], base=f"{label}_cells")
        zero_n = state_size if rs_zero >= 0 else 0
        zero_off = rs_zero * state_size * 4 if rs_zero >= 0 else 0
        zero_view = ctx.view(states, (zero_n,), (), zero_off, base=f"{label}_zero_view")
        ctx.expand(ctx.scale(zero_view, 0.0, base=f"{label}_zero", inplace=True))
        out = ctx.get_rows(states, main, base=label)
        ctx.expand(out)
        extra_rows = ctx.get_rows(states, extra, base=f"{label}_extra")
        row_bytes = cache_t.strides_bytes[1]
        dst = ctx.view(
            cache,
            (state_size, n_rs - n_seqs),
            (row_bytes,),
            n_seqs * row_bytes,
            base=f"{label}_extra_dst",
        )
        ctx.expand(ctx.cpy(extra_rows, dst, base=f"{label}_extra_copy"))
        return out

    # ------------------------------------------------------------------ Gated DeltaNet
    def gdn_layer(self, cur: str, il: int) -> str:
        """build_layer_attn_linear: the Gated DeltaNet token mixer of layer `il`."""
        c, ctx, st = self.cfg, self.ctx, self.step
        s, hk, hv = c.ssm_d_state, c.ssm_n_group, c.ssm_dt_rank
        n_tok, n_seq, n_all = st.n_seq_tokens, st.n_seqs, st.n_tokens
        blk = f"blk.{il}"

        qkv = ctx.mul_mat(self.w(f"{blk}.attn_qkv.weight", c.n_embd, c.conv_dim), cur, base="qkv")
        qkv = ctx.name(
            ctx.reshape(qkv, c.conv_dim, n_tok, n_seq, base="qkv_mixed"),
            _gname("linear_attn_qkv_mixed", il),
        )
        z = ctx.name(
            ctx.mul_mat(self.w(f"{blk}.attn_gate.weight", c.n_embd, c.value_dim), cur, base="z"),
            _gname("z", il),
        )

        if c.arch == "qwen3next":
            beta, gate = self.fused_beta_alpha(cur, il)
        else:
            beta = ctx.mul_mat(
                self.w(f"{blk}.ssm_beta.weight", c.n_embd, hv), cur, base="beta_proj"
            )
            beta = ctx.name(ctx.reshape(beta, 1, hv, n_tok, n_seq, base="beta"), _gname("beta", il))
            beta = ctx.name(
                ctx.unary(beta, "sigmoid", base="beta_sigmoid"), _gname("beta_sigmoid", il)
            )
            alpha = ctx.mul_mat(
                self.w(f"{blk}.ssm_alpha.weight", c.n_embd, hv), cur, base="alpha_proj"
            )
            alpha = ctx.name(
                ctx.reshape(alpha, hv, n_tok, n_seq, base="alpha"), _gname("alpha", il)
            )
            gate = self.decay_gate(alpha, il)
            gate = ctx.reshape(gate, 1, hv, n_tok, n_seq, base="gate_4d")

        conv_cache = self.state(f"cache_r_l{il}", "f32", c.n_embd_r, n_seq)
        ssm_cache = self.state(f"cache_s_l{il}", "f32", c.n_embd_s, n_seq)
        conv_input = self.conv_state(conv_cache, qkv, il)

        state = self.build_rs(ssm_cache, c.n_embd_s, "ssm_states")
        state = ctx.name(
            ctx.reshape(state, s, s, hv, n_seq, base="state_predelta"), _gname("state_predelta", il)
        )

        kernel = self.w(f"{blk}.ssm_conv1d.weight", c.ssm_d_conv, c.conv_dim)
        conv = ctx.name(
            ctx.ssm_conv(conv_input, kernel, base="conv_output_raw"), _gname("conv_output_raw", il)
        )
        conv = ctx.name(
            ctx.unary(conv, "silu", base="conv_output_silu"), _gname("conv_output_silu", il)
        )

        row = 4 * c.conv_dim
        nb = (4 * s, row, row * n_tok)
        q = ctx.name(
            ctx.view(conv, (s, hk, n_tok, n_seq), nb, 0, base="q_conv"), _gname("q_conv", il)
        )
        k = ctx.name(
            ctx.view(conv, (s, hk, n_tok, n_seq), nb, 4 * c.key_dim, base="k_conv"),
            _gname("k_conv", il),
        )
        v = ctx.name(
            ctx.view(conv, (s, hv, n_tok, n_seq), nb, 8 * c.key_dim, base="v_conv"),
            _gname("v_conv_predelta", il),
        )
        q = self.l2_norm(q, "q")
        k = self.l2_norm(k, "k")
        if c.arch == "qwen3next" and hk != hv:
            # Qwen3-Next always repeats q and k up to the value heads (repeat-interleave:
            # reshape, repeat, reshape back); Qwen3.5 leaves that to the fused GDN op
            q, k = (self.repeat_heads(x, which) for x, which in ((q, "q"), (k, "k")))
        q = ctx.name(q, _gname("q_conv_predelta", il))
        k = ctx.name(k, _gname("k_conv_predelta", il))

        result = ctx.gated_delta_net(q, k, v, gate, beta, state, base="gdn")
        f32 = 4
        output = ctx.view(
            result,
            (s, hv, n_tok, n_seq),
            (f32 * s, f32 * s * hv, f32 * s * hv * n_tok),
            0,
            base="gdn_output",
        )
        ctx.name(output, _gname("attn_output", il))
        new_state = ctx.view(
            result,
            (s, s, hv, n_seq),
            (f32 * s, f32 * s * s, f32 * s * s * hv),
            f32 * s * hv * n_all,
            base="new_state",
        )
        ctx.name(new_state, _gname("new_state", il))
        dst = ctx.view(
            ssm_cache,
            (c.n_embd_s, n_seq),
            (ctx[ssm_cache].strides_bytes[1],),
            0,
            base="ssm_state_dst",
        )
        ctx.expand(ctx.cpy(new_state, dst, base="ssm_state_write"))

        z4 = ctx.reshape(z, s, hv, n_tok, n_seq, base="z_4d")
        normed = ctx.rms_norm(output, RMS_EPS, base="gdn_norm")
        ctx.name(normed, _gname("norm", il))
        normed = ctx.mul(normed, self.w(f"{blk}.ssm_norm.weight", s), base="gdn_normed")
        z_silu = ctx.unary(z4, "silu", base="z_silu")
        gated = ctx.mul(normed, z_silu, base="gdn_gated")
        final = ctx.name(
            ctx.reshape(gated, c.value_dim, n_tok, n_seq, base="final_output"),
            _gname("final_output", il),
        )
        out = ctx.mul_mat(
            self.w(f"{blk}.ssm_out.weight", c.value_dim, c.n_embd), final, base="linear_attn_out"
        )
        ctx.name(out, _gname("linear_attn_out", il))
        return ctx.reshape(out, c.n_embd, n_all, base="linear_attn_out_2d")

    def decay_gate(self, alpha: str, il: int) -> str:
        """g = ssm_a · softplus(alpha + dt_bias), with ssm_a = −exp(A_log) from the GGUF."""
        c, ctx, blk = self.cfg, self.ctx, f"blk.{il}"
        alpha = ctx.add(alpha, self.w(f"{blk}.ssm_dt.bias", c.ssm_dt_rank), base="alpha_biased")
        alpha = ctx.name(ctx.unary(alpha, "softplus", base="a_softplus"), _gname("a_softplus", il))
        return ctx.name(
            ctx.mul(alpha, self.w(f"{blk}.ssm_a", c.ssm_dt_rank), base="gate"), _gname("gate", il)
        )

    def fused_beta_alpha(self, cur: str, il: int) -> tuple[str, str]:
        """Qwen3-Next: one `ssm_ba` projection split per key head into b and a."""
        c, ctx, st = self.cfg, self.ctx, self.step
        hk, hv, n_tok, n_seq = c.ssm_n_group, c.ssm_dt_rank, st.n_seq_tokens, st.n_seqs
        r = hv // hk
        ba = ctx.mul_mat(self.w(f"blk.{il}.ssm_ba.weight", c.n_embd, 2 * hv), cur, base="ba_proj")
        ctx.name(ba, _gname("linear_attn_mixed_ba", il))
        ba4 = ctx.reshape(ba, 2 * r, hk, n_tok, n_seq, base="ba_4d")
        nb = ctx[ba4].strides_bytes[1:]
        b = ctx.name(ctx.view(ba4, (r, hk, n_tok, n_seq), nb, 0, base="b"), _gname("b", il))
        a = ctx.name(ctx.view(ba4, (r, hk, n_tok, n_seq), nb, 4 * r, base="a"), _gname("a", il))
        b = ctx.cont(b, (r, hk, n_tok, n_seq), base="b_cont")
        beta = ctx.unary(b, "sigmoid", base="beta_sigmoid")
        alpha = ctx.cont(a, (hv, n_tok, n_seq), base="alpha")
        gate = self.decay_gate(alpha, il)
        beta = ctx.reshape(beta, 1, hv, n_tok, n_seq, base="beta_4d")
        gate = ctx.reshape(gate, 1, hv, n_tok, n_seq, base="gate_4d")
        return beta, gate

    def repeat_heads(self, x: str, which: str) -> str:
        """[S, H_k, T, B] → [S, H_v, T, B], each key head repeated H_v/H_k times in place."""
        c, ctx, st = self.cfg, self.ctx, self.step
        s, hk, r = c.ssm_d_state, c.ssm_n_group, c.ssm_dt_rank // c.ssm_n_group
        flat = ctx.reshape(x, s, 1, hk, st.n_tokens, base=f"{which}_heads_1")
        rep = ctx.repeat(flat, (s, r, hk, st.n_tokens), base=f"{which}_heads_rep")
        return ctx.reshape(rep, s, hk * r, st.n_seq_tokens, st.n_seqs, base=f"{which}_heads")

    def l2_norm(self, x: str, which: str) -> str:
        """The engine's GDN L2 norm: RMS_NORM then SCALE by 1/sqrt(S) (seed-anatomy §3.6)."""
        s = self.cfg.ssm_d_state
        n = self.ctx.rms_norm(x, RMS_EPS / s, base=f"{which}_rms")
        return self.ctx.scale(n, 1.0 / math.sqrt(s), base=f"{which}_l2")

    def conv_state(self, cache: str, qkv: str, il: int) -> str:
        """build_conv_state: prepend the cached conv columns, write the newest back."""
        c, ctx, st = self.cfg, self.ctx, self.step
        n_seq = st.n_seqs
        states = self.build_rs(cache, c.n_embd_r, "conv_states")
        ctx.name(states, _gname("conv_states", il))
        states = ctx.name(
            ctx.reshape(states, c.ssm_d_conv - 1, c.conv_dim, n_seq, base="conv_states_3d"),
            _gname("conv_states_reshaped", il),
        )
        qkv_t = ctx.name(
            ctx.transpose(qkv, base="qkv_transposed"), _gname("qkv_mixed_transposed", il)
        )
        conv_input = ctx.name(
            ctx.concat(states, qkv_t, 0, base="conv_input"), _gname("conv_input", il)
        )
        ci = ctx[conv_input]
        last = ctx.view(
            conv_input,
            (c.ssm_d_conv - 1, c.conv_dim, n_seq),
            ci.strides_bytes[1:3],
            4 * st.n_seq_tokens,
            base="conv_state_last",
        )
        ctx.name(last, _gname("conv_state_last", il))
        dst = ctx.view(
            cache, (c.n_embd_r, n_seq), (ctx[cache].strides_bytes[1],), 0, base="conv_state_update"
        )
        ctx.name(dst, _gname("conv_state_update", il))
        ctx.expand(ctx.cpy(last, dst, base="conv_state_write"))
        return conv_input

    # ------------------------------------------------------------------ gated full attention
    def attn_layer(self, cur: str, il: int) -> str:
        """build_layer_attn: Q (with output gate), K, V, q/k norms, partial M-RoPE, KV-cache
        writes, flash attention, sigmoid gate, output projection."""
        c, ctx, st = self.cfg, self.ctx, self.step
        d, nh, nkv, n_all = c.head_dim, c.n_head, c.n_head_kv, st.n_tokens
        blk = f"blk.{il}"
        f32 = 4
        q_full = ctx.mul_mat(
            self.w(f"{blk}.attn_q.weight", c.n_embd, 2 * d * nh), cur, base="Qcur_full"
        )
        ctx.name(q_full, _gname("Qcur_full", il))
        k = ctx.mul_mat(self.w(f"{blk}.attn_k.weight", c.n_embd, d * nkv), cur, base="Kcur_proj")
        ctx.name(k, _gname("Kcur", il))
        v = ctx.mul_mat(self.w(f"{blk}.attn_v.weight", c.n_embd, d * nkv), cur, base="Vcur_proj")
        ctx.name(v, _gname("Vcur", il))

        if c.arch == "qwen3next":
            # Qwen3-Next reshapes Q(+gate) to 4-D first and views query and gate from it
            q4 = ctx.reshape(q_full, 2 * d, nh, n_all, 1, base="Qcur_full_4d")
            nb4 = ctx[q4].strides_bytes[1:]
            q = ctx.name(
                ctx.view(q4, (d, nh, n_all, 1), nb4, 0, base="Qcur_heads"), _gname("Qcur_view", il)
            )
            gate = ctx.view(q4, (d, nh, n_all, 1), nb4, f32 * d, base="gate_view")
            k = ctx.reshape(k, d, nkv, n_all, base="Kcur_heads")
            v = ctx.name(ctx.reshape(v, d, nkv, n_all, base="Vcur"), _gname("Vcur", il))
            q = self.norm(q, self.w(f"{blk}.attn_q_norm.weight", d), "Qcur_normed", il)
            k = self.norm(k, self.w(f"{blk}.attn_k_norm.weight", d), "Kcur_normed", il)
        else:
            nb = (f32 * 2 * d, f32 * 2 * d * nh)
            q = ctx.view(q_full, (d, nh, n_all), nb, 0, base="Qcur_heads")
            ctx.name(q, _gname("Qcur_reshaped", il))
            q = self.norm(q, self.w(f"{blk}.attn_q_norm.weight", d), "Qcur_normed", il)
            k = ctx.reshape(k, d, nkv, n_all, base="Kcur_heads")
            k = self.norm(k, self.w(f"{blk}.attn_k_norm.weight", d), "Kcur_normed", il)
            gate = ctx.view(q_full, (d, nh, n_all), nb, f32 * d, base="gate_view")
            v = ctx.name(ctx.reshape(v, d, nkv, n_all, base="Vcur"), _gname("Vcur", il))
        gate = ctx.name(
            ctx.cont(gate, (d * nh, n_all), base="gate_reshaped"), _gname("gate_reshaped", il)
        )
        # M-RoPE (Qwen3.5) takes four positions per token, plain RoPE (Qwen3-Next) one
        pos = self.inp("inp_pos", "i32", n_all * (1 if c.arch == "qwen3next" else 4))
        q = ctx.name(ctx.rope(q, pos, c.n_rot, base="Qcur"), _gname("Qcur", il))
        k = ctx.name(ctx.rope(k, pos, c.n_rot, base="Kcur"), _gname("Kcur", il))

        # build_attn: q, v, k expanded in this order, then the cache writes
        ctx.expand(q)
        ctx.expand(v)
        ctx.expand(k)
        # one KV stream per sequence (llama.cpp's default, kv_unified = false)
        ns, kv_size = st.n_streams, st.kv_size
        k_cache = self.state(f"cache_k_l{il}", "f16", d * nkv, kv_size, ns)
        v_cache = self.state(f"cache_v_l{il}", "f16", d * nkv, kv_size, ns)
        k_idxs = self.inp("attn_inp_k_idxs", "i64", n_all)
        v_idxs = self.inp("attn_inp_v_idxs", "i64", n_all)
        for cur, cache, idxs, label in ((k, k_cache, k_idxs, "k"), (v, v_cache, v_idxs, "v")):
            rows = ctx.view(
                cur,
                (d * nkv, n_all),
                (ctx[cur].strides_bytes[2],),
                0,
                base=f"{label.upper()}cur_rows",
            )
            if ns > 1:  # the streams' buffers merged: the row indices are global
                cache = ctx.reshape(cache, d * nkv, kv_size * ns, base=f"{label}_cache_2d")
            ctx.expand(ctx.set_rows(cache, rows, idxs, base=f"{label}_cache_write"))

        n_kv = st.n_kv
        f16 = 2
        kv_nb = (f16 * d, f16 * d * nkv, f16 * d * nkv * kv_size)
        k_all = ctx.view(k_cache, (d, nkv, n_kv, ns), kv_nb, 0, base="k_cache_view")
        v_all = ctx.view(v_cache, (d, nkv, n_kv, ns), kv_nb, 0, base="v_cache_view")
        mask = self.inp("attn_inp_kq_mask", "f16", n_kv, n_all // ns, 1, ns)

        qt = ctx[q]
        per = n_all // ns
        q4 = ctx.view(
            q,
            (d, nh, per, ns),
            (*qt.strides_bytes[1:3], qt.strides_bytes[2] * per),
            0,
            base="Qcur_4d",
        )
        qp = ctx.permute(q4, (0, 2, 1, 3), base="q_permuted")
        kp = ctx.permute(k_all, (0, 2, 1, 3), base="k_permuted")
        vp = ctx.permute(v_all, (0, 2, 1, 3), base="v_permuted")
        att = ctx.flash_attn_ext(qp, kp, vp, mask, 1.0 / math.sqrt(d), base="fattn")
        ta = ctx[att]
        att = ctx.reshape(
            att, ta.shape[0] * ta.shape[1], ta.shape[2] * ta.shape[3], base="attn_pregate"
        )
        ctx.name(att, _gname("attn_pregate", il))
        gate = ctx.name(ctx.unary(gate, "sigmoid", base="gate_sigmoid"), _gname("gate_sigmoid", il))
        att = ctx.name(ctx.mul(att, gate, base="attn_gated"), _gname("attn_gated", il))
        out = ctx.mul_mat(
            self.w(f"{blk}.attn_output.weight", d * nh, c.n_embd), att, base="attn_output"
        )
        return ctx.name(out, _gname("attn_output", il))

    # ------------------------------------------------------------------ FFN
    def ffn(self, cur: str, il: int) -> str:
        c = self.cfg
        if not c.is_moe:
            return self.dense_ffn(cur, c.n_ff, "ffn", il)
        return self.moe_ffn(cur, il)

    def dense_ffn(self, cur: str, n_ff: int, label: str, il: int, suffix: str = "") -> str:
        """build_ffn with LLM_FFN_SILU / LLM_FFN_PAR: down(swiglu(gate(x), up(x))); weights
        blk.N.ffn_{up,gate,down}{suffix}.weight."""
        c, ctx = self.cfg, self.ctx
        prefix = f"blk.{il}.ffn"
        up = ctx.name(
            ctx.mul_mat(
                self.w(f"{prefix}_up{suffix}.weight", c.n_embd, n_ff), cur, base=f"{label}_up"
            ),
            _gname(f"{label}_up", il),
        )
        gate = ctx.name(
            ctx.mul_mat(
                self.w(f"{prefix}_gate{suffix}.weight", c.n_embd, n_ff), cur, base=f"{label}_gate"
            ),
            _gname(f"{label}_gate", il),
        )
        act = ctx.name(
            ctx.glu(gate, up, "swiglu", base=f"{label}_swiglu"), _gname(f"{label}_swiglu", il)
        )
        down = ctx.mul_mat(
            self.w(f"{prefix}_down{suffix}.weight", n_ff, c.n_embd), act, base=f"{label}_down"
        )
        return ctx.name(down, _gname(f"{label}_out", il))

    def moe_ffn(self, cur: str, il: int) -> str:
        """build_moe_ffn (softmax gating, normalised top-k weights, SiLU-gated experts) plus
        the sigmoid-gated shared expert of qwen35moe / qwen3next."""
        c, ctx, st = self.cfg, self.ctx, self.step
        blk, n_all, k = f"blk.{il}", st.n_tokens, c.n_expert_used
        gate_inp = self.w(f"{blk}.ffn_gate_inp.weight", c.n_embd, c.n_expert)
        logits = ctx.name(
            ctx.mul_mat(gate_inp, cur, base="moe_logits"), _gname("ffn_moe_logits", il)
        )
        probs = ctx.name(ctx.soft_max(logits, base="moe_probs"), _gname("ffn_moe_probs", il))
        chosen = ctx.name(ctx.argsort_top_k(probs, k, base="moe_topk"), _gname("ffn_moe_topk", il))
        probs3 = ctx.reshape(probs, 1, c.n_expert, n_all, base="moe_probs_3d")
        weights = ctx.name(
            ctx.get_rows(probs3, chosen, base="moe_weights"), _gname("ffn_moe_weights", il)
        )
        weights = ctx.reshape(weights, k, n_all, base="moe_weights_2d")
        w_sum = ctx.sum_rows(weights, base="moe_weights_sum")
        w_sum = ctx.clamp(w_sum, 6.103515625e-5, math.inf, base="moe_weights_sum_clamped")
        weights = ctx.div(weights, w_sum, base="moe_weights_norm")
        weights = ctx.reshape(weights, 1, k, n_all, base="moe_weights_3d")
        ctx.expand(weights)
        x3 = ctx.reshape(cur, c.n_embd, 1, n_all, base="moe_input")

        def experts(name: str, n_in: int, n_out: int, x: str, label: str) -> str:
            w = self.w(f"{blk}.{name}.weight", n_in, n_out, c.n_expert)
            return ctx.name(ctx.mul_mat_id(w, x, chosen, base=label), _gname(f"ffn_{label}", il))

        up = experts("ffn_up_exps", c.n_embd, c.n_ff_exp, x3, "moe_up")
        gate = experts("ffn_gate_exps", c.n_embd, c.n_ff_exp, x3, "moe_gate")
        act = ctx.name(ctx.glu(gate, up, "swiglu", base="moe_swiglu"), _gname("ffn_moe_swiglu", il))
        down = experts("ffn_down_exps", c.n_ff_exp, c.n_embd, act, "moe_down")
        down = ctx.name(ctx.mul(down, weights, base="moe_weighted"), _gname("ffn_moe_weighted", il))
        ctx.expand(down)
        te = ctx[down]
        parts = []
        for i in range(k):
            parts.append(
                ctx.view(
                    down,
                    (c.n_embd, n_all),
                    (te.strides_bytes[2],),
                    i * te.strides_bytes[1],
                    base=f"moe_expert{i}",
                )
            )
            ctx.expand(parts[-1])
        out = parts[0]
        for part in parts[1:]:
            out = ctx.add(out, part, base="moe_sum")
            ctx.expand(out)
        if k == 1:
            out = ctx.cont(out, (c.n_embd, n_all), base="moe_out")
        ctx.name(out, _gname("ffn_moe_out", il))
        if not c.n_ff_shexp:
            return out
        shared = self.dense_ffn(cur, c.n_ff_shexp, "ffn_shexp", il, suffix="_shexp")
        sg = ctx.mul_mat(
            self.w(f"{blk}.ffn_gate_inp_shexp.weight", c.n_embd, 1), cur, base="shexp_gate"
        )
        ctx.name(sg, _gname("shared_expert_gate", il))
        sg = ctx.unary(sg, "sigmoid", base="shexp_gate_sigmoid")
        shared = ctx.mul(shared, sg, base="shexp_gated")
        return ctx.name(ctx.add(out, shared, base="moe_out"), _gname("ffn_out", il))

    # ------------------------------------------------------------------ whole graphs
    def layer_graph(self, kind: str) -> None:
        """One layer: the layer input (a graph input), attn_norm, the token mixer and the
        residual add, whose result is the graph's output."""
        c, ctx, st = self.cfg, self.ctx, self.step
        ctx.layer = None
        x = self.inp("inp_layer", "f32", c.n_embd, st.n_tokens)
        ctx.layer = 0
        cur = self.norm(x, self.w("blk.0.attn_norm.weight", c.n_embd), "attn_norm", 0)
        ctx.expand(cur)
        cur = self.gdn_layer(cur, 0) if kind == "gdn" else self.attn_layer(cur, 0)
        out = ctx.name(ctx.add(cur, x, base="attn_residual"), _gname("attn_residual", 0))
        ctx.set_output(out)
        ctx.expand(out)

    def model_graph(self, n_layers: int) -> None:
        """The qwen35 graph constructor for the first `n_layers` layers, with the token
        embedding, the final norm, the last-token selection and the LM head."""
        c, ctx, st = self.cfg, self.ctx, self.step
        ctx.layer = None
        tokens = self.inp("inp_tokens", "i32", st.n_tokens)
        x = ctx.get_rows(self.w("token_embd.weight", c.n_embd, c.n_vocab), tokens, base="inp_embd")
        ctx.name(x, "model.input_embed")
        # build_inp_embd selects between token ids and an embeddings input with
        # ggml_build_forward_select: both are expanded, so the unused f32 input is a planned leaf
        ctx.expand(x)
        ctx.expand(self.inp("inp_embd_vectors", "f32", c.n_embd, st.n_tokens))
        out_ids = self.inp("inp_out_ids", "i32", st.outputs)
        for il in range(n_layers):
            ctx.layer = il
            cur = self.norm(x, self.w(f"blk.{il}.attn_norm.weight", c.n_embd), "attn_norm", il)
            ctx.expand(cur)
            cur = self.gdn_layer(cur, il) if c.is_recurrent(il) else self.attn_layer(cur, il)
            res = ctx.name(ctx.add(cur, x, base="attn_residual"), _gname("attn_residual", il))
            post = self.norm(
                res, self.w(f"blk.{il}.post_attention_norm.weight", c.n_embd), "attn_post_norm", il
            )
            cur = self.ffn(post, il)
            x = ctx.name(ctx.add(cur, res, base="l_out"), _gname("l_out", il))
        ctx.layer = None
        h_nextn = self.norm(x, self.w("output_norm.weight", c.n_embd), "h_nextn", None)
        cur = ctx.name(ctx.get_rows(h_nextn, out_ids, base="result_norm"), "result_norm")
        logits = ctx.mul_mat(
            self.w("output.weight", c.n_embd, c.n_vocab), cur, base="result_output"
        )
        ctx.name(logits, "result_output")
        # llm_graph_result::set_outputs: logits, embeddings and the MTP seed are outputs
        for t in (h_nextn, cur, logits):
            ctx.set_output(t)
        ctx.expand(logits)


def _gname(label: str, il: int | None) -> str:
    return f"{label}-{il}" if il is not None else label
