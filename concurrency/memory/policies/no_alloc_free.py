"""`no_alloc_free` (PR #21897): branch nodes, their sources and the sources' view sources are
flagged GGML_TENSOR_FLAG_NO_ALLOC_FREE and never freed.

The PR's allocator side was not visible in the review excerpts; LACE reads the flag like
OUTPUT: a flagged tensor is never freed and never taken over in place. Inside LACE's general
regions the flag covers every interior node but the last join (see `regions.interior`).

Graph outputs that are views keep ggml's rule, as the PR does: only the view is flagged OUTPUT,
ggml frees the base once its readers and views are done, and the PR flags only region tensors,
so a base outside them is freed and a later tensor may overwrite the output before the host
reads it, under any schedule. LACE stays faithful to the PR here: the policy is safe with
streams (`STREAM_SAFE_POLICIES`) but not on such graphs (not in `SAFE_POLICIES`).
"""

from __future__ import annotations

from concurrency.graph.branches import BranchReport
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.ggml.gallocr import Rules, plan_graph
from concurrency.memory.plan import MemoryPlan
from concurrency.memory.policies.regions import interior


def flagged(graph: Graph, report: BranchReport) -> frozenset[str]:
    """The tensors #21897's graph_optimize would flag."""
    out: set[str] = set()
    for region in report.regions:
        for n in interior(graph, region)[:-1]:
            out.add(n)
            for s in graph[n].srcs:
                out.add(s)
                if graph[s].view_src is not None:
                    out.add(graph[s].view_src)  # type: ignore[arg-type]
    return frozenset(out)


def plan(graph: Graph, schedule: Schedule, report: BranchReport, alignment: int) -> MemoryPlan:
    rules = Rules(pinned=flagged(graph, report))
    return plan_graph(graph, schedule, graph.nodes, alignment, rules, "no_alloc_free")
