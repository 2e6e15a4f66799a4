"""`alloc_dep` (PR #27301): `add_alloc_dep(tensor, until=join)` for every region node and
each of its sources, so nothing a region touches is freed before its last join is computed.

ggml's scheduler honours the dependencies by inserting, after `until`, a NONE node whose
sources are the kept tensors; `Rules.keep_until` reproduces that exactly.

Graph outputs that are views keep ggml's rule, as the PR does: only the view is flagged OUTPUT,
and once the dependency nodes have released it ggml frees the base, so a later tensor may
overwrite the output before the host reads it, under any schedule. LACE stays faithful to the
PR (and to ggml, which `lace fidelity` compares it with): the policy is safe with streams
(`STREAM_SAFE_POLICIES`) but not on such graphs (not in `SAFE_POLICIES`).
"""

from __future__ import annotations

from concurrency.graph.branches import BranchReport
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.ggml.gallocr import Rules, plan_graph
from concurrency.memory.plan import MemoryPlan
from concurrency.memory.policies.regions import interior


def dependencies(graph: Graph, report: BranchReport) -> dict[str, tuple[str, ...]]:
    """until-node → tensors kept alive until it has been computed (in add order)."""
    keep: dict[str, dict[str, None]] = {}
    for region in report.regions:
        kept = keep.setdefault(region.end, {})
        for n in interior(graph, region)[:-1]:
            kept[n] = None
            for s in graph[n].srcs:
                kept[s] = None
    return {until: tuple(k) for until, k in keep.items()}


def plan(graph: Graph, schedule: Schedule, report: BranchReport, alignment: int) -> MemoryPlan:
    rules = Rules(keep_until=dependencies(graph, report))
    return plan_graph(graph, schedule, graph.nodes, alignment, rules, "alloc_dep")
