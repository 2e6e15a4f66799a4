"""One layer, every policy: the table behind `lace plan --policy all` and notebook 02."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from concurrency.graph.branches import BranchReport
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.bound import lower_bound
from concurrency.memory.check import RACE, USE_AFTER_REUSE, Hazard, check_plan
from concurrency.memory.plan import MemoryPlan
from concurrency.memory.policies import DEFAULT_ALIGNMENT, plan_memory
from concurrency.memory.sites import SiteMap

if TYPE_CHECKING:
    from concurrency.memory.engine_flow import EngineFlow


@dataclass(frozen=True)
class PolicyResult:
    """A policy's plan for one graph and schedule, checked.

    `plan` holds the offsets the graph runs with; `hazards` are its hazards under the schedule,
    both kinds (`races`: timing-dependent; `uses_after_reuse`: wrong in every run).
    The memory figures compare like with like: `arena_bytes` is the arena of the plan the
    offsets come from, made for `planned_graph` (this graph in the graph flow; in the engine
    flow the reserve graph whose plan is replayed, or this graph when it is re-planned), and
    `lower_bound_bytes` is that same graph's bound. `buffer_bytes` is the compute buffer the
    flow ends with (the engine's grows to its largest reserve). `source` says in a sentence
    which plan the figures come from.
    """

    policy: str
    plan: MemoryPlan
    hazards: tuple[Hazard, ...]
    lower_bound_bytes: int
    planning_ms: float
    flow: str = "graph"
    graph: str = ""  # the graph checked: "tiny stack decode B=1"
    planned_graph: str = "this graph"
    source: str = "planned on this graph"
    planned_arena_bytes: int = -1
    buffer_bytes: int = -1
    sites: Mapping[str, int] = field(default_factory=dict)

    @property
    def races(self) -> tuple[Hazard, ...]:
        return tuple(h for h in self.hazards if h.kind == RACE)

    @property
    def uses_after_reuse(self) -> tuple[Hazard, ...]:
        return tuple(h for h in self.hazards if h.kind == USE_AFTER_REUSE)

    @property
    def arena_bytes(self) -> int:
        """The arena of the plan the figures come from (made for `planned_graph`)."""
        return self.planned_arena_bytes if self.planned_arena_bytes >= 0 else self.plan.arena_bytes

    @property
    def efficiency(self) -> float:
        """lower bound / arena of the same graph: 1.0 means no race-free plan of that graph
        can use less memory."""
        return self.lower_bound_bytes / self.arena_bytes if self.arena_bytes else 1.0

    def row(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "flow": self.flow,
            "graph": self.graph,
            "planned_graph": self.planned_graph,
            "plan_source": self.source,
            "arena_bytes": self.arena_bytes,
            "lower_bound_bytes": self.lower_bound_bytes,
            "efficiency": round(self.efficiency, 4),
            "buffer_bytes": self.buffer_bytes if self.buffer_bytes >= 0 else self.arena_bytes,
            "hazards": len(self.hazards),
            "races": len(self.races),
            "uses_after_reuse": len(self.uses_after_reuse),
            "hazards_by_site": dict(self.sites),
            "planning_ms": round(self.planning_ms, 3),
        }


def graph_label(graph: Graph) -> str:
    """'tiny stack decode B=1' (with T for prefill): how tables and JSON name a graph."""
    m = graph.meta
    extra = f" T={m.tokens}" if m.mode == "prefill" else ""
    layers = f"×{m.n_layers}" if m.layer == "stack" else ""
    return f"{m.model} {m.layer}{layers} {m.mode} B={m.batch}{extra}"


def default_flow(graph: Graph) -> str:
    """The engine's flow for whole-model graphs (llama.cpp runs them), else the graph's own."""
    return "engine" if graph.meta.layer == "stack" else "graph"


def compare_policies(
    graph: Graph,
    schedule: Schedule,
    report: BranchReport,
    policies: Sequence[str],
    alignment: int = DEFAULT_ALIGNMENT,
    *,
    flow: str | None = None,
    max_streams: int = 8,
    n_ubatch: int | None = None,
    engine: EngineFlow | None = None,
    on_policy: Callable[[str], None] | None = None,
) -> list[PolicyResult]:
    """Plan with each policy, check every plan for hazards against the schedule (counted by
    site too), and put each next to the lower bound of the graph it planned.

    flow: "graph" plans this graph itself; "engine" places it as llama.cpp would (reserve the
    worst-case graphs, then replay or re-plan by each policy's rule:
    `concurrency.memory.engine_flow`). Default: "engine" for whole-model graphs (layer
    "stack"), which llama.cpp really runs; "graph" for single layers. engine: a context built
    once for this graph's model and batch (`EngineFlow.for_graph`), else one is built here with
    `max_streams` and `n_ubatch` (default 512). on_policy: called with each policy's name
    before it is planned (the CLI's progress line).
    """
    from concurrency.memory.engine_flow import DEFAULT_N_UBATCH, FLOWS, EngineFlow

    if flow is None:
        flow = default_flow(graph)
    if flow not in FLOWS:
        from concurrency.errors import UnknownNameError

        raise UnknownNameError("flow", flow, FLOWS)
    if flow == "engine" and engine is None:
        engine = EngineFlow.for_graph(
            graph,
            detector=report.detector,
            max_streams=max_streams,
            n_ubatch=DEFAULT_N_UBATCH if n_ubatch is None else n_ubatch,
        )
    sites = SiteMap(graph, report)
    label = graph_label(graph)
    live_bound: list[int] = []

    def bound_of(planned: MemoryPlan) -> int:
        if planned.graph is not graph:
            assert engine is not None
            return engine.reserve_bound(planned.graph, alignment)
        if not live_bound:
            live_bound.append(lower_bound(graph, schedule, alignment).bytes)
        return live_bound[0]

    out = []
    for name in policies:
        if on_policy is not None:
            on_policy(name)
        start = time.perf_counter()
        if engine is not None:
            res = engine.plan(graph, schedule, report, name, alignment)
            plan, planned, buffer = res.plan, res.planned, res.buffer_bytes
            planned_graph, source = res.planned_graph, res.source
        else:
            plan = planned = plan_memory(graph, schedule, report, name, alignment)
            buffer = plan.arena_bytes
            planned_graph, source = "this graph", "planned on this graph"
        elapsed_ms = (time.perf_counter() - start) * 1e3
        hazards = check_plan(plan, schedule).hazards
        out.append(
            PolicyResult(
                name,
                plan,
                hazards,
                bound_of(planned),
                elapsed_ms,
                flow=flow,
                graph=label,
                planned_graph=planned_graph,
                source=source,
                planned_arena_bytes=planned.arena_bytes,
                buffer_bytes=buffer,
                sites=MappingProxyType(sites.count(hazards)),
            )
        )
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
    from concurrency.execute.numpy_arena import compare_runs

    rows: list[dict[str, object]] = []
    for name in policies:
        plan = plan_memory(graph, schedule, report, name, alignment)
        runs = compare_runs(graph, schedule, plan, seeds)
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
