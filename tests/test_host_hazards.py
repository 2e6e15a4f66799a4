"""Hazards whose one side is the host (it writes the graph inputs before the first node and
reads the outputs after the last): counted at their own site, "host", and shown by every
consumer of hazards (sites, compare, engine hazards, `lace plan`, `lace hazards`, the hazard
table and the memory map) without a node of the graph to look up."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from random_cases import view_output_graph

from concurrency.cli import main
from concurrency.graph.branches import BranchReport, detect_branches
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule, serial_schedule
from concurrency.memory.check import HOST, HOST_STREAM, USE_AFTER_REUSE, Hazard, check_plan
from concurrency.memory.compare import compare_policies
from concurrency.memory.engine_hazards import EngineHazards
from concurrency.memory.plan import MemoryPlan
from concurrency.memory.policies import plan_memory
from concurrency.memory.sites import SITE_LABELS, SITES, SiteMap, format_sites
from concurrency.render.memory_map import hazard_rows, memory_map_chart
from concurrency.render.tables import hazard_frame


@dataclass(frozen=True)
class HostCase:
    """`sequential` on the view-output graph, one stream: `c` overwrites the output `v`
    before the host reads it."""

    graph: Graph
    report: BranchReport
    schedule: Schedule
    plan: MemoryPlan
    hazards: tuple[Hazard, ...]


@pytest.fixture
def case() -> HostCase:
    graph = view_output_graph()
    report = detect_branches(graph)
    schedule = serial_schedule(graph)
    plan = plan_memory(graph, schedule, report, "sequential", 32)
    hazards = check_plan(plan).hazards
    assert [(h.kind, h.first_node, h.second_node) for h in hazards] == [
        (USE_AFTER_REUSE, "c-0", HOST)
    ]
    return HostCase(graph, report, schedule, plan, hazards)


def host_write(graph: Graph) -> Hazard:
    """A planted hazard whose first side is the host writing an input."""
    return Hazard(USE_AFTER_REUSE, HOST, "b-0", "inp", "v-0", HOST_STREAM, 0, 0, 32, "planted")


def test_a_host_hazard_is_counted_at_the_host_site(case: HostCase) -> None:
    sites = SiteMap(case.graph, case.report)
    assert SITES[-1] == "host" and SITE_LABELS["host"] == "graph input/output"
    assert sites.hazard_site(case.hazards[0]) == "host"
    assert sites.hazard_site(host_write(case.graph)) == "host"
    counts = sites.count([*case.hazards, host_write(case.graph)])
    assert counts == {"gdn": 0, "attn": 0, "ffn": 0, "moe": 0, "other": 0, "host": 2}
    assert format_sites(counts) == "host 2"


def test_compare_policies_counts_host_hazards(case: HostCase) -> None:
    (r,) = compare_policies(case.graph, case.schedule, case.report, ["sequential"], 32)
    assert r.hazards == case.hazards
    assert dict(r.sites) == {**dict.fromkeys(SITES, 0), "host": 1}
    assert r.row()["hazards_by_site"] == dict(r.sites)


def test_engine_hazards_take_host_hazards(case: HostCase) -> None:
    both = (*case.hazards, host_write(case.graph))
    eh = EngineHazards("view-out", 1, both, case.hazards, case.graph, case.plan, case.report, "x")
    assert eh.count("engine", "host") == 2 and eh.count("graph", "host") == 1
    # a hazard's layer is that of its node side (the host has none)
    assert eh.pairs("engine", layer=0) == {("c-0", HOST), (HOST, "b-0")}
    assert eh.pairs("engine", layer=1) == set()
    row = eh.row()
    assert row["engine: graph input/output"] == 2 and row["alone: graph input/output"] == 1


def _patch_graph(monkeypatch: pytest.MonkeyPatch, case: HostCase) -> None:
    """Make `lace plan` and `lace hazards` run on the view-output graph (the CLI builds only
    model graphs, none of which has a host hazard)."""
    from concurrency.cli import common

    built = (case.graph, case.report, case.schedule)
    monkeypatch.setattr(common, "schedule_from_args", lambda args, progress: built)


def test_lace_plan_and_hazards_show_host_hazards(
    case: HostCase, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _patch_graph(monkeypatch, case)
    args = ["--model", "tiny", "--layer", "gdn", "--policy", "sequential"]
    assert main(["plan", *args]) == 0
    assert "host 1" in capsys.readouterr().out
    assert main(["plan", *args, "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["policies"]
    assert row["hazards_by_site"]["host"] == 1
    assert main(["hazards", *args]) == 0
    out = capsys.readouterr().out
    assert "[use after reuse, host]" in out and "which the host reads" in out
    assert main(["hazards", *args, "--format", "json"]) == 0
    (policy,) = json.loads(capsys.readouterr().out)["policies"]
    assert [h["site"] for h in policy["hazards"]] == ["host"]
    assert policy["hazards"][0]["second_node"] == HOST


def test_tables_and_memory_map_show_host_hazards(case: HostCase) -> None:
    both = (*case.hazards, host_write(case.graph))
    frame = hazard_frame(both)
    assert list(frame["second node"]) == ["the host, after the last node", "b-0"]
    assert list(frame["first node"]) == ["c-0", "the host, before the first node"]
    rows = hazard_rows(case.graph, both, plan=case.plan)
    assert len(rows) == 2
    n = len(case.plan.order)
    read, write = rows
    # the host's read spans to the end of the plan, its write starts at its beginning
    assert (read["x0"], read["x1"]) == (case.plan.order.index("c-0"), n)
    assert (write["x0"], write["x1"]) == (0, case.plan.order.index("b-0") + 1)
    assert read["second"] == "the host, after the last node"
    chart = memory_map_chart(case.graph, case.schedule, case.plan, both)
    assert chart is not None


def test_a_hazard_between_two_host_events_is_drawn(case: HostCase) -> None:
    both_host = Hazard(USE_AFTER_REUSE, HOST, HOST, "inp", "v-0", -1, -1, 0, 32, "planted")
    (row,) = hazard_rows(case.graph, [both_host], plan=case.plan)
    assert (row["x0"], row["x1"]) == (0, len(case.plan.order))
    assert SiteMap(case.graph, case.report).hazard_site(both_host) == "host"
