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
