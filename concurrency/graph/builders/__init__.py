"""Graph builders: one Gated DeltaNet layer, one gated full-attention layer, or a stack.

`build_graph` is the one entry point; it validates the request and names the problem
(unknown layer kind or mode, batch ≤ 0, tokens ≤ 0, too many layers) before building.
"""

from __future__ import annotations

from concurrency.errors import ConfigError, UnknownNameError
from concurrency.graph.builders.qwen35 import Qwen35Builder, Step
from concurrency.graph.config import ModelConfig, get_config
from concurrency.graph.ir import Graph, GraphMeta

LAYER_KINDS = ("gdn", "attn", "stack")
MODES = ("decode", "prefill")
DEFAULT_PREFILL_TOKENS = 64


def build_graph(
    model: str | ModelConfig,
    layer: str = "gdn",
    mode: str = "decode",
    batch: int = 1,
    tokens: int | None = None,
    layers: int | None = None,
    *,
    n_ctx: int = 4096,
    kv_tokens: int = 0,
    reserve: bool = False,
    n_outputs: int | None = None,
) -> Graph:
    """The compute graph llama.cpp builds for `model`.

    layer: "gdn" (one Gated DeltaNet layer), "attn" (one gated full-attention layer) or
    "stack" (the first `layers` decoder layers with embedding and LM head; default all).
    mode: "decode" (`batch` sequences × 1 token) or "prefill" (`batch` × `tokens`).
    n_ctx / kv_tokens: KV-cache cells and tokens already cached (sets what attention reads).
    reserve: the worst-case variant llama.cpp reserves when a context is created (all n_ctx KV
    cells read, a fresh recurrent-state cell cleared); n_outputs: logits rows (default B).
    """
    cfg = get_config(model)
    if layer not in LAYER_KINDS:
        raise UnknownNameError("layer kind", layer, LAYER_KINDS)
    if mode not in MODES:
        raise UnknownNameError("mode", mode, MODES)
    _check_positive("batch", batch)
    if mode == "decode":
        if tokens not in (None, 1):
            raise ConfigError(
                f"decode computes 1 token per sequence; got tokens={tokens} "
                "(use --mode prefill for several tokens)"
            )
        tokens = 1
    else:
        tokens = DEFAULT_PREFILL_TOKENS if tokens is None else tokens
        _check_positive("tokens", tokens)
    _check_positive("n_ctx", n_ctx)
    if kv_tokens < 0:
        raise ConfigError(f"kv_tokens must be ≥ 0, got {kv_tokens}")
    if kv_tokens + tokens > n_ctx:
        raise ConfigError(
            f"kv_tokens + tokens = {kv_tokens + tokens} exceeds the context n_ctx={n_ctx}; "
            "raise n_ctx"
        )
    if layer == "stack":
        n_layers = cfg.n_layer if layers is None else layers
        _check_positive("layers", n_layers)
        if n_layers > cfg.n_layer:
            raise ConfigError(f"{cfg.name} has {cfg.n_layer} layers; got layers={n_layers}")
    else:
        if layers not in (None, 1):
            raise ConfigError(f"--layers applies to --layer stack only (got layers={layers})")
        n_layers = 1
    step = Step(
        n_seqs=batch,
        n_seq_tokens=tokens,
        prefill=mode == "prefill",
        n_ctx=n_ctx,
        kv_tokens=kv_tokens,
        reserve=reserve,
        n_outputs=n_outputs,
    )
    if n_outputs is not None and not 0 < n_outputs <= batch * tokens:
        raise ConfigError(f"n_outputs must be in 1..{batch * tokens}, got {n_outputs}")
    builder = Qwen35Builder(cfg, step)
    if layer == "stack":
        builder.model_graph(n_layers)
    else:
        builder.layer_graph(layer)
    meta = GraphMeta(
        model=cfg.name,
        layer=layer,
        mode=mode,
        batch=batch,
        tokens=tokens,
        n_layers=n_layers,
        n_ctx=n_ctx,
        kv_tokens=kv_tokens,
        reserve=reserve,
    )
    return builder.ctx.finish(meta, cfg)


def _check_positive(what: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")


__all__ = ["LAYER_KINDS", "MODES", "build_graph"]
