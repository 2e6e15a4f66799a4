"""Graph builders: shapes from the reference, and node-for-node agreement with a real
llama.cpp graph (shared/reference/llama-graph, observed with the engine's eval callback)."""

from __future__ import annotations

import pytest

from concurrency.builders import build_graph
from concurrency.errors import ConfigError, UnknownNameError
from concurrency.ir import TensorKind


@pytest.mark.parametrize("batch", [1, 4, 8])
def test_27b_gdn_projection_shapes(batch: int) -> None:
    g = build_graph("qwen3.5-27b", "gdn", "decode", batch)
    assert g["qkv-0"].shape[:2] == (10240, batch)
    assert g["z-0"].shape[:2] == (6144, batch)
    assert g["beta_proj-0"].shape[:2] == (48, batch)
    assert g["alpha_proj-0"].shape[:2] == (48, batch)
    assert g["qkv-0"].nbytes == 10240 * batch * 4
    assert g["gdn-0"].shape[:2] == (6144, batch + 128 * batch)  # outputs, then the state


def test_prefill_shapes_scale_with_tokens() -> None:
    g = build_graph("qwen3.5-27b", "gdn", "prefill", 2, 16)
    assert g["qkv-0"].shape[:2] == (10240, 32)
    assert g["conv_input-0"].shape[:3] == (3 + 16, 10240, 2)


def test_kinds_and_external_memory() -> None:
    g = build_graph("qwen3.5-27b", "attn", "decode", 1)
    assert g["blk.0.attn_q.weight"].kind is TensorKind.WEIGHT
    assert g["cache_k_l0"].kind is TensorKind.STATE
    assert g["inp_layer"].kind is TensorKind.INPUT and g["inp_layer"].is_input
    assert g["attn_residual-0"].is_output
    assert g["k_cache_write-0"].external and g["k_cache_write-0"].view_src == "cache_k_l0"
    assert not g["Qcur_full-0"].external


def test_graph_validates_its_invariants() -> None:
    for layer in ("gdn", "attn", "stack"):
        build_graph(
            "qwen3.5-9b", layer, "prefill", 2, 8, layers=4 if layer == "stack" else None
        ).validate()


def _engine_index(nodes: list[dict]) -> list[dict[str, set[int]]]:
    """For each engine node, the earlier nodes each source name may mean (names repeat in
    llama.cpp graphs), or {-1} for a leaf."""
    seen: dict[str, set[int]] = {}
    out = []
    for i, n in enumerate(nodes):
        out.append({s: set(seen.get(s, {-1})) for s in n["srcs"]})
        seen.setdefault(n["name"], set()).add(i)
    return out


@pytest.mark.parametrize(
    ("phase", "mode", "tokens"), [("decode", "decode", None), ("prompt", "prefill", 8)]
)
def test_tiny_stack_matches_the_running_engine(
    llama_dump: dict, phase: str, mode: str, tokens: int | None
) -> None:
    engine = llama_dump[phase]
    g = build_graph("tiny", "stack", mode, 1, tokens, n_ctx=512)
    assert len(g.nodes) == len(engine)
    src_idx = _engine_index(engine)
    for i, (name, e) in enumerate(zip(g.nodes, engine, strict=True)):
        t = g[name]
        assert (t.op, list(t.shape)) == (e["op"], e["ne"]), f"node {i}: {name} vs {e['name']}"
        assert len(t.srcs) == len(e["srcs"]), f"node {i} sources"
        for s, es in zip(t.srcs, e["srcs"], strict=True):
            want = src_idx[i][es]
            got = g.index.get(s, -1)
            assert got in want, f"node {i} ({name}) source {s} → {got}, engine {es} → {want}"
        if e["view_src"] is not None and t.view_src is not None:
            assert t.view_offset_bytes == e["view_offs"], f"node {i} view offset"


def test_bad_requests_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="batch must be a positive integer"):
        build_graph("tiny", batch=0)
    with pytest.raises(ConfigError, match="batch must be a positive integer"):
        build_graph("tiny", batch=-3)
    with pytest.raises(ConfigError, match="tokens must be a positive integer"):
        build_graph("tiny", mode="prefill", tokens=0)
    with pytest.raises(UnknownNameError, match="layer kind"):
        build_graph("tiny", layer="mamba")
    with pytest.raises(UnknownNameError, match="mode"):
        build_graph("tiny", mode="train")
    with pytest.raises(ConfigError, match="has 4 layers"):
        build_graph("tiny", "stack", layers=5)


@pytest.mark.parametrize(
    ("phase", "mode", "tokens"), [("decode", "decode", None), ("prompt", "prefill", 8)]
)
def test_engine_flow_reproduces_every_compute_buffer_offset(
    llama_dump: dict, phase: str, mode: str, tokens: int | None
) -> None:
    """The offsets the running engine used (reserve pp512/tg/pp512 at n_ctx 512, then replay)
    for every compute-buffer tensor of the dump, prompt and decode alike."""
    from concurrency.branches import detect_branches
    from concurrency.engine_flow import engine_flow_plan
    from concurrency.schedule import stream_schedule

    g = build_graph("tiny", "stack", mode, 1, tokens, n_ctx=512)
    rep = detect_branches(g)
    result = engine_flow_plan(g, stream_schedule(g, rep), rep, "sequential", alignment=32)
    assert result.replayed
    compute = [
        (i, n, e)
        for i, (n, e) in enumerate(zip(g.nodes, llama_dump[phase], strict=True))
        if e["buffer_usage"] == 2
    ]
    assert len(compute) > 150
    for i, name, e in compute:
        assert result.plan.address(g, name) == e["offset"], f"node {i} {name} ({e['name']})"
