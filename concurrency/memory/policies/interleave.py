"""`interleave` (PR #16991): ggml-cuda reorders each region round-robin across its branches
before the allocator plans, stretching branch outputs' lifetimes; sources read across branches
(the fork output above all) are not stretched, which is the bug #21897 describes.
"""

from __future__ import annotations

from concurrency.graph.branches import BranchReport, is_noop
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.ggml.gallocr import Rules, plan_graph
from concurrency.memory.plan import MemoryPlan
from concurrency.memory.policies.regions import interior


def interleaved_nodes(graph: Graph, report: BranchReport) -> tuple[str, ...]:
    """Node order after ggml-cuda's interleave of every region.

    Lanes are the branches (plus, for LACE's general regions, the main-stream nodes inside
    them); each turn takes the next lane whose head has all its dependencies placed (data
    edges and the ordering of writes through views, `concurrency.graph.deps`), emits one node
    that is not a no-op and the no-ops queued behind it, and moves to the next lane. For
    ggml-cuda's own regions this is exactly its interleave (branches are independent).
    """
    order = list(graph.nodes)
    deps = graph.dependencies
    for region in report.regions:
        inside = interior(graph, region)
        body, end = inside[:-1], inside[-1]
        lanes = [list(b.nodes) for b in region.branches]
        in_branch = {n for lane in lanes for n in lane}
        main = [n for n in body if n not in in_branch]
        if main:
            lanes.append(main)
        placed = set(graph.nodes[: graph.index[region.fork] + 1])
        out: list[str] = []

        def ready(name: str, placed: set[str] = placed) -> bool:
            return all(graph.nodes[j] in placed for j in deps[graph.index[name]])

        k = 0
        while any(lanes):
            for step in range(len(lanes)):
                lane = lanes[(k + step) % len(lanes)]
                if lane and ready(lane[0]):
                    k = (k + step) % len(lanes)
                    break
            else:  # no lane is ready: fall back to graph order (keeps dependencies)
                nxt = min((ln for ln in lanes if ln), key=lambda ln: graph.index[ln[0]])
                k = lanes.index(nxt)
            lane = lanes[k]
            out.append(lane.pop(0))
            placed.add(out[-1])
            while lane and is_noop(graph, lane[0]) and ready(lane[0]):
                out.append(lane.pop(0))
                placed.add(out[-1])
            k = (k + 1) % len(lanes)
        lo = graph.index[region.fork] + 1
        order[lo : lo + len(body)] = out
        assert order[lo + len(body)] == end
    return tuple(order)


def plan(graph: Graph, schedule: Schedule, report: BranchReport, alignment: int) -> MemoryPlan:
    return plan_graph(
        graph, schedule, interleaved_nodes(graph, report), alignment, Rules(), "interleave"
    )
