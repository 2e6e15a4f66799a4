"""Graph outputs that are views: ggml-alloc frees their base once the base's readers and views
are done (only the view carries the OUTPUT flag), so its bytes can go to a later tensor before
the host reads the output. The ggml policies and the PR models keep that rule; LACE's own
policies and the PyTorch model keep the base to the end."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from random_cases import random_graph, random_streams, view_output_graph

from concurrency.graph.branches import detect_branches
from concurrency.graph.schedule import serial_schedule, stream_schedule
from concurrency.memory.check import HOST, USE_AFTER_REUSE, check_plan
from concurrency.memory.policies import (
    FREES_VIEW_OUTPUT_BASES,
    POLICIES,
    SAFE_POLICIES,
    STREAM_SAFE_POLICIES,
    plan_memory,
)
from concurrency.memory.policies.outputs import output_view_bases


def test_output_view_bases_are_the_planned_bases_of_view_outputs() -> None:
    graph = view_output_graph()
    assert output_view_bases(graph) == frozenset({"a-0"})
    rng = random.Random(3)
    for _ in range(50):
        g = random_graph(rng, forks=True, size=14)
        want = {
            g[n].view_src
            for n in (*g.leafs, *g.nodes)
            if g[n].is_output and g[n].view_src is not None and g[n].view_src in g.planned
        }
        assert output_view_bases(g) == want


@pytest.mark.parametrize("policy", list(POLICIES))
def test_the_base_of_a_view_output_is_freed_only_by_ggmls_rule(policy: str) -> None:
    """On one stream: ggml's rule (and the PRs, which keep it) hands `a`'s bytes to `c`
    before the host reads `v`; every other policy keeps `a` to the end."""
    graph = view_output_graph()
    schedule = serial_schedule(graph)
    checked = check_plan(plan_memory(graph, schedule, detect_branches(graph), policy, 32))
    host_reads = {
        (h.first_node, h.second_tensor)
        for h in checked.hazards
        if h.kind == USE_AFTER_REUSE and h.second_node == HOST
    }
    if policy in FREES_VIEW_OUTPUT_BASES:
        assert "a-0" in checked.plan.freed_after
        assert host_reads == {("c-0", "v-0")}, checked.hazards
    else:
        assert "a-0" not in checked.plan.freed_after
        assert checked.ok, checked.hazards[0].explanation


def test_the_policy_sets_partition_as_documented() -> None:
    assert set(SAFE_POLICIES) <= set(STREAM_SAFE_POLICIES) <= set(POLICIES)
    assert set(STREAM_SAFE_POLICIES) - set(SAFE_POLICIES) == {"no_alloc_free", "alloc_dep"}
    ggml_rule = {"sequential", "interleave", "no_alloc_free", "alloc_dep"}
    assert set(FREES_VIEW_OUTPUT_BASES) == ggml_rule


def test_safe_policies_keep_view_outputs_on_random_graphs(record_property) -> None:  # type: ignore[no-untyped-def]
    """400 random graphs with view outputs, each under one stream, LACE's streams and random
    streams: every safe policy's plan is hazard-free under the schedule it was planned for,
    while ggml's rule overwrites some view output before the host reads it."""
    rng = random.Random(2026)
    host_hits: Counter[str] = Counter()
    for _ in range(400):
        graph = random_graph(rng, forks=rng.random() < 0.6, size=rng.randint(5, 22))
        report = detect_branches(graph)
        schedules = (serial_schedule(graph), stream_schedule(graph, report))
        for k, schedule in enumerate((*schedules, random_streams(rng, graph))):
            for policy in POLICIES:
                checked = check_plan(plan_memory(graph, schedule, report, policy, 32))
                if policy in SAFE_POLICIES:
                    assert checked.ok, (policy, checked.hazards[0].explanation)
                elif policy in STREAM_SAFE_POLICIES and k < len(schedules):
                    # the PRs: no race; what is left is ggml's own, read by the host
                    assert checked.races == (), (policy, checked.races[0].explanation)
                    assert all(h.second_node == HOST for h in checked.hazards), policy
                host_hits[policy] += any(h.second_node == HOST for h in checked.hazards)
    record_property("view outputs overwritten before the host reads them", dict(host_hits))
    for policy in FREES_VIEW_OUTPUT_BASES:
        assert host_hits[policy] > 0, policy
