"""LACE's own rows of the peers table, through LACE's existing API
(`concurrency.execute.gpu.bench.replay_time`: CUDA-graph replays timed with CUDA events).

* GDN core: a graph of `copies` independent GATED_DELTA_NET ops (q, k, v as strided views of
  one conv-output tensor, exactly as the layer builds them), on one stream, so one replay runs
  the kernel `copies` times on separate inputs; time per op = replay time / copies. Decode uses
  LACE's recurrent kernel, prefill its chunked one (the launch plan's "auto" form). The op
  only, as test-backend-ops times ggml's: the layer's L2 norms are separate ops.
* GDN layer: `build_graph(qwen3.5-27b, "gdn", "decode", B)`, bf16 weights, one stream against
  the schedule's streams.
* 4-layer model: `build_graph(peer model, "stack", "decode", B, kv_tokens=…)`, f16 weights
  as the GGUF llama.cpp runs, one stream against the schedule's streams.
"""

from __future__ import annotations

from collections.abc import Callable

from concurrency.graph.builders import build_graph
from concurrency.graph.builders.context import GraphContext
from concurrency.graph.config import get_config
from concurrency.graph.ir import Graph, GraphMeta, TensorKind
from concurrency.peers.cases import (
    DECODE_BATCHES,
    LLAMA_DECODE,
    LLAMA_PROMPT,
    PREFILL_CASES,
    GdnDims,
    core_floor_us,
    peer_model_config,
)
from concurrency.peers.results import PeerRow, failed_row
from concurrency.peers.table import L2_MARK

#: Copies of the decode op per graph, by batch (a replay of ≥ ~100 µs keeps the host ahead).
DECODE_COPIES = {1: 24, 4: 16, 16: 4, 64: 2}
#: The decode op timed as `core_chain_graph` runs it (state in L2 at small batches).
CHAINED_VARIANT = f"recurrent kernel, chained {L2_MARK}"
#: The mean context of llama-batched-bench's decode phase (-npp 128 -ntg 128): 128 + 64.
MODEL_KV_TOKENS = LLAMA_PROMPT + LLAMA_DECODE // 2


def core_graph(dims: GdnDims, batch: int, tokens: int, copies: int) -> Graph:
    """`copies` independent GATED_DELTA_NET ops of the layer's shapes. Every leaf is a STATE
    so `replay_time` draws it on the device, N(0, 0.1): small q and k keep the delta rule from
    diverging over a long prompt although they are not L2-normalized here."""
    ctx = GraphContext()
    c, kd = dims.conv_dim, dims.key_dim
    row = 4 * c
    nb = (4 * dims.dk, row, row * tokens)
    state = TensorKind.STATE
    for i in range(copies):
        conv = ctx.leaf(f"conv.{i}", "f32", (c, tokens, batch), state)
        q = ctx.view(conv, (dims.dk, dims.hk, tokens, batch), nb, 0, base=f"q.{i}")
        k = ctx.view(conv, (dims.dk, dims.hk, tokens, batch), nb, 4 * kd, base=f"k.{i}")
        v = ctx.view(conv, (dims.dv, dims.hv, tokens, batch), nb, 8 * kd, base=f"v.{i}")
        g = ctx.leaf(f"g.{i}", "f32", (1, dims.hv, tokens, batch), state)
        beta = ctx.leaf(f"beta.{i}", "f32", (1, dims.hv, tokens, batch), state)
        s0 = ctx.leaf(f"state.{i}", "f32", (dims.dk, dims.dv, dims.hv, batch), state)
        out = ctx.gated_delta_net(q, k, v, g, beta, s0, base=f"gdn.{i}")
        ctx.set_output(out)
        ctx.expand(out)
    meta = GraphMeta(
        model="qwen3.5-27b GDN core",
        layer="gdn",
        mode="decode" if tokens == 1 else "prefill",
        batch=batch,
        tokens=tokens,
        n_layers=1,
    )
    return ctx.finish(meta, None)


def core_chain_graph(dims: GdnDims, batch: int, copies: int) -> Graph:
    """`copies` GATED_DELTA_NET decode ops on the same q, k, v, g and β, each starting from the
    state the previous one wrote (a view of its result): the allocator gives every other
    result the same bytes, so the working set (two results, ≈ 2 × the state) stays in L2 as
    test-backend-ops' repeated op on the same tensors does. Timed beside `core_graph`'s
    separate copies, it shows how much of a small batch's kernel time is the HBM read."""
    ctx = GraphContext()
    c, kd = dims.conv_dim, dims.key_dim
    row = 4 * c
    nb = (4 * dims.dk, row, row)
    state = TensorKind.STATE
    conv = ctx.leaf("conv", "f32", (c, 1, batch), state)
    q = ctx.view(conv, (dims.dk, dims.hk, 1, batch), nb, 0, base="q")
    k = ctx.view(conv, (dims.dk, dims.hk, 1, batch), nb, 4 * kd, base="k")
    v = ctx.view(conv, (dims.dv, dims.hv, 1, batch), nb, 8 * kd, base="v")
    g = ctx.leaf("g", "f32", (1, dims.hv, 1, batch), state)
    beta = ctx.leaf("beta", "f32", (1, dims.hv, 1, batch), state)
    s = ctx.leaf("state", "f32", (dims.dk, dims.dv, dims.hv, batch), state)
    out_bytes = 4 * dims.dv * dims.hv * batch
    s_nb = (4 * dims.dk, 4 * dims.dk * dims.dv, 4 * dims.dk * dims.dv * dims.hv)
    out = s
    for i in range(copies):
        out = ctx.gated_delta_net(q, k, v, g, beta, s, base=f"gdn.{i}")
        s = ctx.view(out, (dims.dk, dims.dv, dims.hv, batch), s_nb, out_bytes, base=f"s.{i}")
    ctx.set_output(out)
    ctx.expand(out)
    meta = GraphMeta(
        model="qwen3.5-27b GDN core, chained",
        layer="gdn",
        mode="decode",
        batch=batch,
        tokens=1,
        n_layers=1,
    )
    return ctx.finish(meta, None)


def _need_executor() -> None:
    """Raise MissingToolError now (the phase becomes "not imported" rows) when CuPy, a GPU or
    nvmath-python is missing, rather than failing every case on its own."""
    from concurrency.execute.gpu import backend

    backend.cupy()
    backend.nvmath_advanced()


def lace_core_rows(dims: GdnDims, replays: int, log: Callable[[str], None]) -> list[PeerRow]:
    from concurrency.execute.gpu.bench import replay_time

    _need_executor()
    rows: list[PeerRow] = []
    cases = [("gdn core decode", b, 1, DECODE_COPIES.get(b, 2), False) for b in DECODE_BATCHES]
    cases += [("gdn core decode", b, 1, DECODE_COPIES.get(b, 2), True) for b in DECODE_BATCHES]
    cases += [("gdn core prefill", b, t, 1, False) for b, t in PREFILL_CASES]
    for case, b, t, copies, chained in cases:
        variant = "recurrent kernel" if t == 1 else "chunked kernel"
        if chained:
            variant = CHAINED_VARIANT
        try:
            graph = core_chain_graph(dims, b, copies) if chained else core_graph(dims, b, t, copies)
            timing = replay_time(
                graph,
                streams="one",
                weight_dtype="f32",
                replays=replays if t == 1 else max(20, replays // 4),
                label=f"GDN core B={b} T={t}",
            )
            rows.append(
                PeerRow(
                    "lace",
                    case,
                    variant,
                    b,
                    t,
                    "ok",
                    timing.median_us / copies,
                    timing.p10_us / copies,
                    timing.p90_us / copies,
                    timing.replays,
                    core_floor_us(dims, b) if t == 1 else None,
                    f"f32 q,k,v,g,β and state; the op only; {copies} "
                    + (
                        "ops chained through their state (≈ 2 results live: L2-resident at "
                        "small B, like test-backend-ops' repeated op)"
                        if chained
                        else "copies per graph"
                    ),
                )
            )
            log(f"  lace {case} B={b} T={t}: {rows[-1].median_us:.1f} µs")
        except Exception as exc:
            rows.append(failed_row("lace", case, variant, b, t, "failed", repr(exc)))
            log(f"  lace {case} B={b} T={t}: FAILED {exc!r}"[:300])
    return rows


def _stream_rows(
    peer_case: str,
    graph_for: Callable[[int], Graph],
    weight_dtype: str,
    replays: int,
    note: str,
    log: Callable[[str], None],
) -> list[PeerRow]:
    from concurrency.execute.gpu.bench import replay_time

    _need_executor()
    rows: list[PeerRow] = []
    for b in DECODE_BATCHES:
        for streams in ("one", "multi"):
            variant = "1 stream" if streams == "one" else "schedule streams"
            try:
                t = replay_time(
                    graph_for(b), streams=streams, weight_dtype=weight_dtype, replays=replays
                )
                if streams == "multi":
                    variant = f"{t.streams} streams (schedule)"
                rows.append(
                    PeerRow(
                        "lace",
                        peer_case,
                        variant,
                        b,
                        1,
                        "ok",
                        t.median_us,
                        t.p10_us,
                        t.p90_us,
                        t.replays,
                        t.floor_us,
                        f"{weight_dtype} weights; {note}",
                    )
                )
                log(f"  lace {peer_case} {variant} B={b}: {t.median_us:.1f} µs")
            except Exception as exc:
                rows.append(failed_row("lace", peer_case, variant, b, 1, "failed", repr(exc)))
                log(f"  lace {peer_case} {variant} B={b}: FAILED {exc!r}"[:300])
    return rows


def lace_layer_rows(replays: int, log: Callable[[str], None]) -> list[PeerRow]:
    cfg = get_config("qwen3.5-27b")
    return _stream_rows(
        "gdn layer decode",
        lambda b: build_graph(cfg, "gdn", "decode", b),
        "bf16",
        replays,
        "llama.cpp's GDN layer graph (state gather and write-back included)",
        log,
    )


def lace_model_rows(replays: int, log: Callable[[str], None]) -> list[PeerRow]:
    cfg = peer_model_config()
    return _stream_rows(
        "4-layer model decode step",
        lambda b: build_graph(
            cfg, "stack", "decode", b, layers=cfg.n_layer, kv_tokens=MODEL_KV_TOKENS
        ),
        "f16",
        replays,
        f"GPU time of one captured step, {MODEL_KV_TOKENS} tokens cached",
        log,
    )
