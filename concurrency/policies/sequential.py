"""`sequential`: ggml-alloc as it is — bytes recycled after the last reader in node order."""

from __future__ import annotations

from concurrency.alloc.gallocr import Rules, plan_graph
from concurrency.branches import BranchReport
from concurrency.ir import Graph
from concurrency.plan import MemoryPlan
from concurrency.schedule import Schedule


def plan(graph: Graph, schedule: Schedule, report: BranchReport, alignment: int) -> MemoryPlan:
    return plan_graph(graph, graph.nodes, alignment, Rules(), "sequential")
