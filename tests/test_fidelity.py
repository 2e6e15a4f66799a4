"""LACE's allocator port against the real ggml-alloc (the oracle of issue 4).

Skipped, with the reason, only when the oracle library cannot be loaded (`make oracle` builds
it; `make test` tries first)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from concurrency.errors import LaceError
from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.oracle.fidelity import ORACLE_POLICIES, compare_plans, preset_cases
from tests.strategies import random_graphs

pytestmark = pytest.mark.oracle


@pytest.fixture(scope="module")
def ggml():  # type: ignore[no-untyped-def]
    from concurrency.oracle.ggml_lib import Ggml

    try:
        return Ggml.load()
    except LaceError as exc:
        pytest.skip(f"ggml oracle unavailable: {exc}")


CASES = preset_cases(["tiny", "qwen3.5-0.8b", "qwen3.5-9b", "qwen3-next-80b-a3b"], (1, 4))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.model}-{c.layer}-{c.mode}-B{c.batch}")
@pytest.mark.parametrize("detector", ["ggml", "general"])
def test_presets_match_ggml_exactly(ggml, case, detector: str) -> None:  # type: ignore[no-untyped-def]
    graph = build_graph(case.model, case.layer, case.mode, case.batch, case.tokens, case.layers)
    report = detect_branches(graph, detector)
    for policy in ORACLE_POLICIES:
        result = compare_plans(ggml, graph, report, policy)
        assert result.equal, (policy, result.lace_bytes, result.ggml_bytes, result.mismatched[:5])


def test_27b_layers_match_ggml(ggml) -> None:  # type: ignore[no-untyped-def]
    for layer in ("gdn", "attn"):
        for mode, tokens in (("decode", None), ("prefill", 64)):
            graph = build_graph("qwen3.5-27b", layer, mode, 2, tokens)
            for policy in ORACLE_POLICIES:
                assert compare_plans(ggml, graph, detect_branches(graph), policy).equal


@settings(max_examples=1000, deadline=None)
@given(graph=random_graphs(5, 200))
def test_random_graphs_match_ggml(ggml, graph) -> None:  # type: ignore[no-untyped-def]
    report = detect_branches(graph)
    for policy in ORACLE_POLICIES:
        result = compare_plans(ggml, graph, report, policy)
        assert result.equal, (policy, result.mismatched[:5], result.lace_bytes, result.ggml_bytes)


def _ggml_view(graph, report, policy):  # type: ignore[no-untyped-def]
    """The graph as ggml-alloc sees it under `policy` (order, dependency nodes)."""
    from concurrency.memory.engine_flow import ENGINE_RULES
    from concurrency.oracle.ggml_plan import GgmlGraph

    rule = ENGINE_RULES[policy]
    keep = rule.dependencies(graph, report) if rule.dependencies else None
    return GgmlGraph(graph, rule.order(graph, report), keep)


FLOW_CASES = [
    (model, detector, batch, mode)
    for model in ("tiny", "qwen3.5-35b-a3b")
    for detector in ("ggml", "general")
    for batch in (1, 3)
    for mode in ("decode", "prefill")
]


@pytest.mark.parametrize(("model", "detector", "batch", "mode"), FLOW_CASES, ids=lambda v: str(v))
def test_engine_flow_matches_ggml_allocs_own_reserve_and_replay(  # type: ignore[no-untyped-def]
    ggml, model: str, detector: str, batch: int, mode: str
) -> None:
    """LACE's engine flow against the real ggml-alloc running it: reserve pp, tg, pp on one
    allocator, then `ggml_gallocr_alloc_graph` the live graph (replay or re-plan by
    `ggml_gallocr_needs_realloc`). Same offsets for every tensor and the same buffer, for
    every policy ggml can express (interleaved order, #27301's dependency nodes)."""
    from concurrency.graph.schedule import stream_schedule
    from concurrency.memory.engine_flow import EngineFlow
    from concurrency.oracle.ggml_plan import ggml_engine_flow

    tokens = 7 if mode == "prefill" else None
    graph = build_graph(model, "stack", mode, batch, tokens, 4, n_ctx=512)
    report = detect_branches(graph, detector)
    schedule = stream_schedule(graph, report)
    flow = EngineFlow.for_graph(graph, detector=detector)
    for policy in ORACLE_POLICIES:
        ours = flow.plan(graph, schedule, report, policy, 32)
        reserves = [_ggml_view(r.graph, r.report, policy) for r in flow.reserves]
        theirs = ggml_engine_flow(ggml, reserves, _ggml_view(graph, report, policy))
        assert dict(ours.plan.offsets) == theirs.offsets, (policy, ours.source)
        assert ours.buffer_bytes == theirs.buffer_bytes, (policy, ours.source)


def test_replaying_by_name_would_disagree_with_ggml(ggml) -> None:  # type: ignore[no-untyped-def]
    """The planted wrong model (the reserve plan replayed by tensor name, ignoring that the
    interleaved live graph puts other nodes at its indices) is caught by the comparison."""
    from concurrency.graph.schedule import stream_schedule
    from concurrency.memory.engine_flow import EngineFlow
    from concurrency.oracle.ggml_plan import ggml_engine_flow

    graph = build_graph("tiny", "stack", "decode", 1, None, 4, n_ctx=512)
    report = detect_branches(graph, "ggml")
    flow = EngineFlow.for_graph(graph, detector="ggml")
    stored = flow.reserved("interleave", 32).stored.plan
    by_name = {n: stored.offsets[n] for n in graph.planned if n in stored.offsets}
    reserves = [_ggml_view(r.graph, r.report, "interleave") for r in flow.reserves]
    theirs = ggml_engine_flow(ggml, reserves, _ggml_view(graph, report, "interleave"))
    assert by_name != theirs.offsets
    ours = flow.plan(graph, stream_schedule(graph, report), report, "interleave", 32)
    assert dict(ours.plan.offsets) == theirs.offsets and not ours.replayed
