"""One layer, every policy: the table behind `lace plan --policy all` and notebook 02."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from concurrency.graph.branches import BranchReport
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.bound import lower_bound
from concurrency.memory.check import Hazard, check_plan
from concurrency.memory.plan import MemoryPlan
from concurrency.memory.policies import DEFAULT_ALIGNMENT, plan_memory


@dataclass(frozen=True)
class PolicyResult:
    """A policy's plan for one graph and schedule, checked."""

    policy: str
    plan: MemoryPlan
    hazards: tuple[Hazard, ...]
    lower_bound_bytes: int
    planning_ms: float

    @property
    def arena_bytes(self) -> int:
        return self.plan.arena_bytes

    @property
    def efficiency(self) -> float:
        """lower bound / arena: 1.0 means no race-free plan can use less memory."""
        return self.lower_bound_bytes / self.arena_bytes if self.arena_bytes else 1.0

    def row(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "arena_bytes": self.arena_bytes,
            "lower_bound_bytes": self.lower_bound_bytes,
            "efficiency": round(self.efficiency, 4),
            "hazards": len(self.hazards),
            "planning_ms": round(self.planning_ms, 3),
        }


def compare_policies(
    graph: Graph,
    schedule: Schedule,
    report: BranchReport,
    policies: Sequence[str],
    alignment: int = DEFAULT_ALIGNMENT,
    *,
    flow: str | None = None,
    max_streams: int = 8,
) -> list[PolicyResult]:
    """Plan with each policy, check every plan for hazards against the schedule, and put each
    next to the schedule's lower bound (computed once).

    flow: "graph" plans this graph itself; "engine" plans it as llama.cpp would place it
    (reserve the worst-case graphs, then replay their offsets: `concurrency.memory.engine_flow`).
    Default: "engine" for whole-model graphs (layer "stack"), which llama.cpp really runs;
    "graph" for single layers.
    """
    from concurrency.memory.engine_flow import FLOWS, engine_flow_plan

    if flow is None:
        flow = "engine" if graph.meta.layer == "stack" else "graph"
    if flow not in FLOWS:
        from concurrency.errors import UnknownNameError

        raise UnknownNameError("flow", flow, FLOWS)
    bound = lower_bound(graph, schedule, alignment).bytes
    out = []
    for name in policies:
        start = time.perf_counter()
        if flow == "engine":
            plan = engine_flow_plan(
                graph, schedule, report, name, alignment, max_streams=max_streams
            ).plan
        else:
            plan = plan_memory(graph, schedule, report, name, alignment)
        elapsed_ms = (time.perf_counter() - start) * 1e3
        hazards = check_plan(plan, schedule).hazards
        out.append(PolicyResult(name, plan, hazards, bound, elapsed_ms))
    return out


def policy_sweep(
    model: str,
    layer: str,
    batches: Sequence[int],
    policies: Sequence[str],
    *,
    mode: str = "decode",
    tokens: int | None = None,
    detector: str = "general",
    max_streams: int = 8,
    alignment: int = DEFAULT_ALIGNMENT,
) -> list[dict[str, object]]:
    """`compare_policies` rows for each batch size (plus a `batch` column)."""
    from concurrency.graph.branches import detect_branches
    from concurrency.graph.builders import build_graph
    from concurrency.graph.schedule import stream_schedule

    rows: list[dict[str, object]] = []
    for b in batches:
        graph = build_graph(model, layer, mode, b, tokens)
        report = detect_branches(graph, detector)
        schedule = stream_schedule(graph, report, max_streams)
        for r in compare_policies(graph, schedule, report, policies, alignment):
            rows.append({"batch": b, **r.row()})
    return rows


def policy_runs(
    graph: Graph,
    schedule: Schedule,
    report: BranchReport,
    policies: Sequence[str],
    seeds: Sequence[int],
    alignment: int = DEFAULT_ALIGNMENT,
    tolerance: float = 1e-4,
) -> list[dict[str, object]]:
    """Run each policy's plan on the CPU executor for every seed: how many execution orders
    the schedule allows give wrong numbers (the race, shown without a GPU)."""
    from concurrency.execute.numpy_arena import check_plan

    rows: list[dict[str, object]] = []
    for name in policies:
        plan = plan_memory(graph, schedule, report, name, alignment)
        runs = check_plan(graph, schedule, plan, seeds)
        wrong = [r.seed for r in runs if not r.ok(tolerance)]
        rows.append(
            {
                "policy": name,
                "orders tried": len(runs),
                "wrong results": len(wrong),
                "max rel error": max(r.error for r in runs),
                "wrong seeds": wrong,
            }
        )
    return rows
