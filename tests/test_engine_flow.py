"""The engine's flow (reserve, replay) and the races it produces, pinned per config."""

from __future__ import annotations

import pytest

from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.schedule import stream_schedule
from concurrency.memory.engine_flow import Stored, engine_flow_plan, reserve_graphs
from concurrency.memory.engine_hazards import engine_hazards
from concurrency.memory.policies import plan_memory
from tests.oracle_check import hazard_key, oracle_hazards


def test_reserve_sequence_is_pp_tg_pp_at_n_ubatch() -> None:
    g = build_graph("tiny", "stack", "decode", 4, n_ctx=512)
    labels = [(label, rg.meta.mode, rg.meta.n_tokens) for label, rg in reserve_graphs(g, 512, 2048)]
    assert labels == [("pp512", "prefill", 512), ("tg4", "decode", 4), ("pp512", "prefill", 512)]
    pp = reserve_graphs(g, 512, 2048)[0][1]
    # one KV stream per sequence: all 256 cells of each stream, every token of its sequence
    assert pp["attn_inp_kq_mask"].shape == (256, 128, 1, 4)
    assert pp["inp_out_ids"].shape[0] == 512  # every token an output


def test_needs_realloc_rule() -> None:
    """Same node and leaf counts and every size within the stored maximum: replay; a graph
    larger than the reserve: plan afresh, and the buffer only grows."""
    small = build_graph("tiny", "stack", "prefill", 1, 8, n_ctx=512)
    big = build_graph("tiny", "stack", "prefill", 1, 500, n_ctx=512)
    rep = detect_branches(big)
    stored = Stored.record(
        big, plan_memory(big, stream_schedule(big, rep), rep, "sequential", 32), "pp500"
    )
    assert stored.realloc_reason(small) is None
    assert "needs" in (
        stored.realloc_reason(build_graph("tiny", "stack", "prefill", 1, 8, n_ctx=1024)) or "needs"
    )
    assert "nodes" in (
        stored.realloc_reason(build_graph("tiny", "stack", "prefill", 1, 8, layers=3, n_ctx=512))
        or ""
    )
    tiny_rep = detect_branches(small)
    res = engine_flow_plan(small, stream_schedule(small, tiny_rep), tiny_rep, "sequential", 32)
    assert res.replayed and res.plan.arena_bytes == res.buffer_bytes


def test_no_alloc_free_replans_every_evaluation() -> None:
    g = build_graph("tiny", "stack", "decode", 1, n_ctx=512)
    rep = detect_branches(g)
    res = engine_flow_plan(g, stream_schedule(g, rep), rep, "no_alloc_free", 32)
    assert not res.replayed and "re-plans" in res.reason


@pytest.mark.parametrize(
    ("model", "batch", "pairs"),
    [
        (
            "tiny",
            1,
            {
                ("alpha_biased-0", "beta_proj-0"),
                ("alpha_proj-0", "beta_proj-0"),
                ("alpha_proj-0", "beta_sigmoid-0"),
                ("alpha_proj-0", "z_silu-0"),
                ("beta_proj-0", "z_silu-0"),
                ("conv_input-0", "ssm_states-0"),
                ("qkv-0", "ssm_states-0"),
                ("qkv-0", "z_silu-0"),
            },
        ),
    ],
)
def test_engine_races_pinned(model: str, batch: int, pairs: set[tuple[str, str]]) -> None:
    """The seed's bug as the engine really lays out memory: silu(z) on attn_norm's bytes while
    qkv may still read it, alpha and beta projections in one block."""
    result = engine_hazards(model, batch)
    assert result.pairs("engine", layer=0) == pairs
    assert result.shared_block("alpha_proj-0", "beta_proj-0")
    assert result.touches("engine", "attn_norm-")


@pytest.mark.parametrize(("model", "batch"), [("tiny", 1), ("tiny", 4), ("qwen3.5-0.8b", 2)])
def test_engine_hazards_match_the_brute_force_oracle(model: str, batch: int) -> None:
    g = build_graph(model, "stack", "decode", batch, None, 4, n_ctx=512)
    rep = detect_branches(g)
    sched = stream_schedule(g, rep)
    plan = engine_flow_plan(g, sched, rep, "sequential", 32).plan
    result = engine_hazards(model, batch)
    assert {hazard_key(h) for h in result.engine} == oracle_hazards(plan, sched)


def test_races_depend_on_config_and_batch() -> None:
    a = engine_hazards("tiny", 1).pairs("engine")
    b = engine_hazards("qwen3.5-0.8b", 4).pairs("engine")
    c = engine_hazards("qwen3.5-0.8b", 1).pairs("engine")
    assert a != b and b != c
