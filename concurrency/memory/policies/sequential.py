"""`sequential`: ggml-alloc as it is — bytes recycled after the last reader in node order."""

from __future__ import annotations

from concurrency.graph.branches import BranchReport
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.ggml.gallocr import Rules, plan_graph
from concurrency.memory.plan import MemoryPlan


def plan(graph: Graph, schedule: Schedule, report: BranchReport, alignment: int) -> MemoryPlan:
    return plan_graph(graph, schedule, graph.nodes, alignment, Rules(), "sequential")
