"""`no_reuse`: every tensor its own bytes (no frees, no in-place reuse) — the baseline."""

from __future__ import annotations

from concurrency.graph.branches import BranchReport
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.ggml.gallocr import Rules, plan_graph
from concurrency.memory.plan import MemoryPlan


def plan(graph: Graph, schedule: Schedule, report: BranchReport, alignment: int) -> MemoryPlan:
    every = frozenset(graph.tensors)
    return plan_graph(
        graph, schedule, graph.nodes, alignment, Rules(pinned=every, inplace=False), "no_reuse"
    )
