"""`no_reuse`: every tensor its own bytes (no frees, no in-place reuse) — the baseline."""

from __future__ import annotations

from concurrency.alloc.gallocr import Rules, plan_graph
from concurrency.branches import BranchReport
from concurrency.ir import Graph
from concurrency.plan import MemoryPlan
from concurrency.schedule import Schedule


def plan(graph: Graph, schedule: Schedule, report: BranchReport, alignment: int) -> MemoryPlan:
    every = frozenset(graph.tensors)
    return plan_graph(graph, graph.nodes, alignment, Rules(pinned=every, inplace=False), "no_reuse")
