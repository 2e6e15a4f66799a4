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
CHAINED_NOTE = (
    "ops chained through their state (≈ 2 results live: L2-resident at small B, like "
    "test-backend-ops' repeated op)"
)
#: The mean context of llama-batched-bench's decode phase (-npp 128 -ntg 128): 128 + 64.
MODEL_KV_TOKENS = LLAMA_PROMPT + LLAMA_DECODE // 2


def _core_meta(model: str, batch: int, tokens: int) -> GraphMeta:
    mode = "decode" if tokens == 1 else "prefill"
    return GraphMeta(model=model, layer="gdn", mode=mode, batch=batch, tokens=tokens, n_layers=1)


def _core_inputs(
    ctx: GraphContext, dims: GdnDims, batch: int, tokens: int, tag: str
) -> tuple[str, str, str, str, str]:
    """q, k, v (strided views of one conv-output leaf, as the layer builds them), g and β of
    one GATED_DELTA_NET op, every leaf a STATE (`replay_time` draws it on the device)."""
    c, kd = dims.conv_dim, dims.key_dim
    row = 4 * c
    nb = (4 * dims.dk, row, row * tokens)
    state = TensorKind.STATE
    conv = ctx.leaf(f"conv{tag}", "f32", (c, tokens, batch), state)
    q = ctx.view(conv, (dims.dk, dims.hk, tokens, batch), nb, 0, base=f"q{tag}")
    k = ctx.view(conv, (dims.dk, dims.hk, tokens, batch), nb, 4 * kd, base=f"k{tag}")
    v = ctx.view(conv, (dims.dv, dims.hv, tokens, batch), nb, 8 * kd, base=f"v{tag}")
    g = ctx.leaf(f"g{tag}", "f32", (1, dims.hv, tokens, batch), state)
    beta = ctx.leaf(f"beta{tag}", "f32", (1, dims.hv, tokens, batch), state)
    return q, k, v, g, beta


def _state_leaf(ctx: GraphContext, dims: GdnDims, batch: int, tag: str) -> str:
    shape = (dims.dk, dims.dv, dims.hv, batch)
    return ctx.leaf(f"state{tag}", "f32", shape, TensorKind.STATE)


def core_graph(dims: GdnDims, batch: int, tokens: int, copies: int) -> Graph:
    """`copies` independent GATED_DELTA_NET ops of the layer's shapes. Every leaf is a STATE
    so `replay_time` draws it on the device, N(0, 0.1): small q and k keep the delta rule from
    diverging over a long prompt although they are not L2-normalized here."""
    ctx = GraphContext()
    for i in range(copies):
        q, k, v, g, beta = _core_inputs(ctx, dims, batch, tokens, f".{i}")
        s0 = _state_leaf(ctx, dims, batch, f".{i}")
        out = ctx.gated_delta_net(q, k, v, g, beta, s0, base=f"gdn.{i}")
        ctx.set_output(out)
        ctx.expand(out)
    return ctx.finish(_core_meta("qwen3.5-27b GDN core", batch, tokens), None)


def core_chain_graph(dims: GdnDims, batch: int, copies: int) -> Graph:
    """`copies` GATED_DELTA_NET decode ops on the same q, k, v, g and β, each starting from the
    state the previous one wrote (a view of its result): the allocator gives every other
    result the same bytes, so the working set (two results, ≈ 2 × the state) stays in L2 as
    test-backend-ops' repeated op on the same tensors does. Timed beside `core_graph`'s
    separate copies, it shows how much of a small batch's kernel time is the HBM read."""
    ctx = GraphContext()
    q, k, v, g, beta = _core_inputs(ctx, dims, batch, 1, "")
    s = _state_leaf(ctx, dims, batch, "")
    out_bytes = 4 * dims.dv * dims.hv * batch
    s_nb = (4 * dims.dk, 4 * dims.dk * dims.dv, 4 * dims.dk * dims.dv * dims.hv)
    out = s
    for i in range(copies):
        out = ctx.gated_delta_net(q, k, v, g, beta, s, base=f"gdn.{i}")
        s = ctx.view(out, (dims.dk, dims.dv, dims.hv, batch), s_nb, out_bytes, base=f"s.{i}")
    ctx.set_output(out)
    ctx.expand(out)
    return ctx.finish(_core_meta("qwen3.5-27b GDN core, chained", batch, 1), None)


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
    decode = [(b, 1, DECODE_COPIES.get(b, 2)) for b in DECODE_BATCHES]
    cases = [("gdn core decode", "recurrent kernel", *c) for c in decode]
    cases += [("gdn core decode", CHAINED_VARIANT, *c) for c in decode]
    cases += [("gdn core prefill", "chunked kernel", b, t, 1) for b, t in PREFILL_CASES]
    for case, variant, b, t, copies in cases:
        chained = variant == CHAINED_VARIANT
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
                    + (CHAINED_NOTE if chained else "copies per graph"),
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
