"""The engine's flow (reserve, then replay or re-plan by each policy's rule), the races it
produces, and LACE against recorded engine dumps (no llama-cpp-python needed)."""

from __future__ import annotations

import json
import re

import pytest

from concurrency.errors import LaceError
from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.schedule import stream_schedule
from concurrency.memory import engine_flow
from concurrency.memory.bound import lower_bound
from concurrency.memory.check import check_plan
from concurrency.memory.compare import compare_policies
from concurrency.memory.engine_flow import (
    ENGINE_RULES,
    EngineFlow,
    Stored,
    allocator_nodes,
    engine_flow_plan,
)
from concurrency.memory.engine_hazards import engine_hazards
from concurrency.memory.policies import POLICIES, STREAM_SAFE_POLICIES, plan_memory
from concurrency.oracle.engine import EngineRun
from concurrency.oracle.engine_compare import engine_fidelity
from tests.engine_data import BATCHES, ENGINE_CONFIGS, recorded_path, recorded_run
from tests.oracle_check import hazard_key, oracle_hazards


def _setup(  # type: ignore[no-untyped-def]
    model: str = "tiny",
    mode: str = "decode",
    batch: int = 1,
    tokens: int | None = None,
    *,
    detector: str = "general",
    kv_tokens: int = 0,
):
    """A 4-layer stack at n_ctx 512, its branches and multi-stream schedule."""
    g = build_graph(model, "stack", mode, batch, tokens, 4, n_ctx=512, kv_tokens=kv_tokens)
    rep = detect_branches(g, detector)
    return g, stream_schedule(g, rep), rep


# ------------------------------------------------------------------------- reserve graphs
def test_reserve_sequence_is_pp_tg_pp_at_n_ubatch() -> None:
    flow = EngineFlow("tiny", "stack", None, 4, n_ctx=512)
    labels = [(r.label, r.graph.meta.mode, r.graph.meta.n_tokens) for r in flow.reserves]
    assert labels == [("pp512", "prefill", 512), ("tg4", "decode", 4), ("pp512", "prefill", 512)]
    assert flow.reserves[0] is flow.reserves[2]  # one graph, reserved twice
    pp = flow.pp.graph
    # one KV stream per sequence: all 256 cells of each stream, every token of its sequence
    assert pp["attn_inp_kq_mask"].shape == (256, 128, 1, 4)
    assert pp["inp_out_ids"].shape[0] == 512  # every token an output


@pytest.mark.parametrize("batch", [3, 5, 6, 7])
def test_pp_reserve_rounds_tokens_up_but_not_outputs(batch: int) -> None:
    """graph_reserve rounds n_tokens up to a multiple of the sequences and keeps n_outputs as
    passed (512): 513 outputs put every later tensor 32 bytes off."""
    flow = EngineFlow("tiny", "stack", None, batch, n_ctx=512)
    tokens = -(-512 // batch) * batch
    assert flow.pp.label == f"pp{tokens}" and flow.pp.graph.meta.n_tokens == tokens
    assert flow.pp.graph["inp_out_ids"].shape[0] == 512


def test_n_ctx_and_n_ubatch_shape_the_reserve() -> None:
    small = EngineFlow("tiny", "stack", None, 1, n_ctx=256)
    assert small.pp.label == "pp256"  # n_tokens = min(n_ctx, n_ubatch)
    assert EngineFlow("tiny", "stack", None, 1, n_ctx=1024, n_ubatch=128).pp.label == "pp128"
    with pytest.raises(LaceError, match="n_ubatch must be a positive integer"):
        EngineFlow("tiny", "stack", None, 1, n_ubatch=0)
    with pytest.raises(LaceError, match="use --n-ctx 512"):
        EngineFlow("tiny", "stack", None, 1, n_ctx=300)


def test_a_live_graph_of_another_context_is_refused() -> None:
    g, sched, rep = _setup(batch=2)
    with pytest.raises(LaceError, match="this engine context runs tiny stack B=1"):
        EngineFlow("tiny", "stack", None, 1, n_ctx=512).plan(g, sched, rep, "sequential", 32)
    with pytest.raises(LaceError, match="detects regions with 'ggml'"):
        EngineFlow.for_graph(g, detector="ggml").plan(g, sched, rep, "sequential", 32)
    big, bsched, brep = _setup(mode="prefill", batch=1, tokens=300)
    with pytest.raises(LaceError, match="raise --n-ubatch"):
        EngineFlow.for_graph(big, n_ubatch=256).plan(big, bsched, brep, "sequential", 32)


# ------------------------------------------------------------------------- ggml's rule
def test_needs_realloc_rule() -> None:
    """Same node and leaf counts and every size within the stored maximum: replay; a bigger
    tensor or another node count: plan afresh, and the buffer only grows."""
    mid = build_graph("tiny", "stack", "prefill", 1, 100, n_ctx=512)
    rep = detect_branches(mid)
    rule = ENGINE_RULES["sequential"]
    plan = plan_memory(mid, stream_schedule(mid, rep), rep, "sequential", 32)
    stored = Stored.record(plan, rep, rule, "pp100")

    def reason(g):  # type: ignore[no-untyped-def]
        return stored.realloc_reason(g, allocator_nodes(g, detect_branches(g), rule))

    assert reason(build_graph("tiny", "stack", "prefill", 1, 8, n_ctx=512)) is None
    bigger = reason(build_graph("tiny", "stack", "prefill", 1, 101, n_ctx=512))
    assert bigger is not None and re.search(
        r"needs \d+ bytes, the stored pp100 plan has room", bigger
    )
    fewer = build_graph("tiny", "stack", "prefill", 1, 8, layers=3, n_ctx=512)
    assert "nodes, the stored pp100 plan has" in (reason(fewer) or "")
    g, sched, srep = _setup(mode="prefill", tokens=8)
    res = engine_flow_plan(g, sched, srep, "sequential", 32)
    assert res.replayed and res.plan.arena_bytes == res.buffer_bytes
    assert res.source == "replays the pp512 reserve plan" and res.planned.graph is not g


def test_every_policy_declares_its_engine_rule() -> None:
    """A policy added to POLICIES without a rule fails here, not silently in the engine flow."""
    assert set(POLICIES) <= set(ENGINE_RULES)
    assert {r.replay for r in ENGINE_RULES.values()} <= {
        engine_flow.REPLAY,
        engine_flow.SAME_SCHEDULE,
        engine_flow.FLAGGED,
        engine_flow.LIVE,
    }


def test_reserve_graphs_are_planned_once_per_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pp graph reserved twice is planned once, a second live graph replans nothing of
    the reserves, and the tg graph is planned only when it could outgrow the pp plan."""
    calls: list[str] = []
    real = engine_flow.plan_memory

    def counting(graph, schedule, report, policy, alignment):  # type: ignore[no-untyped-def]
        calls.append(f"{graph.meta.mode}{graph.meta.n_tokens}:{policy}")
        return real(graph, schedule, report, policy, alignment)

    monkeypatch.setattr(engine_flow, "plan_memory", counting)
    decode, dsched, drep = _setup()
    prompt, psched, prep = _setup(mode="prefill", tokens=8)
    flow = EngineFlow.for_graph(decode)
    flow.plan(decode, dsched, drep, "sequential", 32)
    flow.plan(prompt, psched, prep, "sequential", 32)
    flow.plan(decode, dsched, drep, "alloc_dep", 32)
    assert calls == ["prefill512:sequential", "prefill512:alloc_dep"]


@pytest.mark.parametrize("policy", sorted(set(POLICIES) & set(ENGINE_RULES)))
@pytest.mark.parametrize(("model", "batch"), [("tiny", 1), ("qwen3.5-35b-a3b", 3)])
def test_skipping_the_tg_plan_leaves_the_buffer_exact(policy: str, model: str, batch: int) -> None:
    """The buffer is max(pp plan, tg plan); the tg plan is skipped only when it provably
    cannot be larger, so planning it anyway changes nothing."""
    if ENGINE_RULES[policy].replay == engine_flow.LIVE:
        pytest.skip("a runtime allocator reserves nothing")
    flow = EngineFlow(model, "stack", 4, batch, n_ctx=512)
    got = flow.reserved(policy, 128).buffer_bytes
    arenas = [
        plan_memory(r.graph, r.schedule, r.report, policy, 128).arena_bytes
        for r in (flow.pp, flow.tg)
    ]
    assert got == max(arenas)


# ------------------------------------------------------------------------- each policy's rule
def test_ggml_detector_policies_follow_their_rules() -> None:
    """`lace plan --model tiny --layer stack --layers 4 --detector ggml --policy all`: the
    pp512 reserve graph has no regions (ggml-cuda's detector wants one-row nodes), the decode
    graph has one, so the region policies re-plan and every safe policy is race-free."""
    g, sched, rep = _setup(detector="ggml")
    pp = build_graph("tiny", "stack", "prefill", 1, 512, n_ctx=512, reserve=True, n_outputs=512)
    assert rep.regions and not detect_branches(pp, "ggml").regions
    results = {r.policy: r for r in compare_policies(g, sched, rep, list(POLICIES), 32)}
    for name in STREAM_SAFE_POLICIES:
        assert results[name].hazards == (), name
    assert results["sequential"].hazards and results["interleave"].hazards
    src = {n: r.source for n, r in results.items()}
    assert src["sequential"] == "replays the pp512 reserve plan"
    assert src["alloc_dep"] == "re-planned: 245 nodes, the stored pp512 plan has 241"
    assert src["happens_before"].startswith("re-planned: the live schedule differs")
    assert "NO_ALLOC_FREE" in src["no_alloc_free"]
    # the interleaved live graph puts a planned node where the reserve plan has a view
    assert "has no slot in the stored pp512 plan" in src["interleave"]
    assert src["no_reuse"] == "replays the pp512 reserve plan"


def test_general_detector_replays_region_policies_with_the_same_regions() -> None:
    g, sched, rep = _setup()
    results = {r.policy: r for r in compare_policies(g, sched, rep, list(POLICIES), 32)}
    assert results["alloc_dep"].source == "replays the pp512 reserve plan"
    assert results["alloc_dep"].hazards == ()
    # the same pp512 schedule as a 512-token prompt of this context: replayed, race-free
    p, psched, prep = _setup(mode="prefill", tokens=512)
    (hb,) = compare_policies(p, psched, prep, ["happens_before"], 32)
    assert hb.source == "replays the pp512 reserve plan" and hb.hazards == ()


def test_replayed_figures_are_the_reserve_graphs() -> None:
    """A replayed plan is compared with the bound of the graph it was planned on."""
    g, sched, rep = _setup()
    flow = EngineFlow.for_graph(g)
    (seq,) = compare_policies(g, sched, rep, ["sequential"], 32, engine=flow)
    pp = flow.pp
    pp_plan = plan_memory(pp.graph, pp.schedule, pp.report, "sequential", 32)
    assert seq.planned_graph == "pp512 reserve"
    assert seq.arena_bytes == pp_plan.arena_bytes
    assert seq.lower_bound_bytes == lower_bound(pp.graph, pp.schedule, 32).bytes
    assert seq.lower_bound_bytes <= seq.arena_bytes
    (nf,) = compare_policies(g, sched, rep, ["no_alloc_free"], 32, engine=flow)
    assert nf.planned_graph == "live graph"
    assert nf.lower_bound_bytes == lower_bound(g, sched, 32).bytes
    assert nf.buffer_bytes >= nf.arena_bytes
    row = seq.row()
    assert row["flow"] == "engine" and row["plan_source"] == seq.source
    assert set(row["hazards_by_site"]) == {"gdn", "attn", "ffn", "moe", "other", "host"}


def test_no_alloc_free_replans_every_flagged_evaluation() -> None:
    g, sched, rep = _setup()
    res = engine_flow_plan(g, sched, rep, "no_alloc_free", 32)
    assert not res.replayed and "forces a re-plan every evaluation" in res.source
    # no region, no flag: ggml's own rule, the reserve plan is replayed
    g1, s1, r1 = _setup(detector="ggml", mode="prefill", tokens=8)
    assert not r1.regions
    assert engine_flow_plan(g1, s1, r1, "no_alloc_free", 32).replayed


# ------------------------------------------------------------------------- races, pinned
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
    assert result.source == "replays the pp512 reserve plan"


@pytest.mark.parametrize(("model", "batch"), [("tiny", 1), ("tiny", 4), ("qwen3.5-0.8b", 3)])
def test_engine_hazards_match_the_brute_force_oracle(model: str, batch: int) -> None:
    g, sched, rep = _setup(model, batch=batch)
    plan = engine_flow_plan(g, sched, rep, "sequential", 32).plan
    result = engine_hazards(model, batch)
    assert {hazard_key(h) for h in result.engine} == oracle_hazards(plan, sched)


def test_races_depend_on_config_and_batch() -> None:
    a = engine_hazards("tiny", 1).pairs("engine")
    b = engine_hazards("qwen3.5-0.8b", 4).pairs("engine")
    c = engine_hazards("qwen3.5-0.8b", 1).pairs("engine")
    assert a != b and b != c


# ------------------------------------------------------------------------- recorded engine
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", sorted(ENGINE_CONFIGS))
def test_lace_matches_the_recorded_engine(name: str, batch: int) -> None:
    """Zero node mismatches (op, order, shape, edges) in the prompt and decode steps of B
    sequences of 2B + 1 tokens, and LACE's engine flow (`sequential`, CPU alignment) gives
    every compute-buffer tensor the engine's own offset — odd batches included, whose pp
    reserve graph rounds its tokens up (513 for B = 3) but not its outputs."""
    cfg = ENGINE_CONFIGS[name]
    run = recorded_run(name, batch)
    assert (run.batch, run.prompt_tokens, run.n_ctx, run.n_ubatch) == (
        batch,
        2 * batch + 1,
        512,
        512,
    )
    assert run.config == cfg.to_dict()
    result = engine_fidelity(run, cfg)
    assert result.graph_mismatches == ()
    assert result.offset_mismatches == ()
    assert result.compute_tensors > 300


def test_the_offset_comparison_can_fail() -> None:
    """A pp reserve with 513 outputs (LACE's old rounding; here from n_ubatch 513) places
    the decode step's tensors 32 bytes off the engine's."""
    from concurrency.oracle.engine_compare import compare_offsets

    run = recorded_run("tiny", 3)
    g, sched, rep = _setup(batch=3, kv_tokens=run.prompt_tokens)
    wrong = EngineFlow("tiny", "stack", None, 3, n_ctx=512, n_ubatch=513)
    assert wrong.pp.graph["inp_out_ids"].shape[0] == 513
    plan = wrong.plan(g, sched, rep, "sequential", 32).plan
    bad = compare_offsets(g, lambda n: plan.address(g, n), run.decode)
    assert len(bad) > 100
    deltas = {int(m.what.split()[1]) - int(m.what.split()[3]) for m in bad}
    assert deltas == {32}


def test_recorded_dumps_are_small_and_named_by_their_case() -> None:
    total = 0
    for name in ENGINE_CONFIGS:
        for b in BATCHES:
            path = recorded_path(name, b)
            total += path.stat().st_size
    assert total < 2 << 20


def test_reference_dump_is_not_an_engine_result(llama_dump: dict) -> None:
    with pytest.raises(LaceError, match=re.escape("qwen35-tiny-b1.json")):
        EngineRun.from_json(json.dumps(llama_dump), source="qwen35-tiny-b1.json")


def test_hazard_checks_of_replayed_plans_use_the_live_sizes() -> None:
    """The checker sees the live graph's tensors at the replayed offsets."""
    g, sched, rep = _setup(batch=2)
    res = engine_flow_plan(g, sched, rep, "sequential", 32)
    assert res.replayed
    for name, off in res.plan.offsets.items():
        assert off + g[name].nbytes <= res.buffer_bytes
    assert check_plan(res.plan, sched).hazards == engine_hazards("tiny", 2).engine
