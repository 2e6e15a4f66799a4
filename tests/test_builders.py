"""Graph builders: shapes from the reference, and node-for-node agreement with a real
llama.cpp graph (tests/data/llama-graph: a copy of the reference dump, observed with the
engine's eval callback)."""

from __future__ import annotations

import pytest

from concurrency.errors import ConfigError, UnknownNameError
from concurrency.graph.builders import build_graph
from concurrency.graph.ir import TensorKind


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


@pytest.mark.parametrize(
    ("phase", "mode", "tokens"), [("decode", "decode", None), ("prompt", "prefill", 8)]
)
def test_tiny_stack_matches_the_running_engine(
    llama_dump: dict, phase: str, mode: str, tokens: int | None
) -> None:
    from concurrency.oracle.engine_compare import compare_nodes

    g = build_graph("tiny", "stack", mode, 1, tokens, n_ctx=512)
    assert compare_nodes(g, llama_dump[phase]) == []


def test_engine_comparison_can_fail(llama_dump: dict) -> None:
    from concurrency.oracle.engine_compare import compare_nodes

    g = build_graph("tiny", "stack", "decode", 2, n_ctx=512)  # two sequences: other shapes
    assert compare_nodes(g, llama_dump["decode"])


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
    from concurrency.graph.branches import detect_branches
    from concurrency.graph.schedule import stream_schedule
    from concurrency.memory.engine_flow import engine_flow_plan

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
