"""`happens_before` (LACE, the review's ask): bytes go back to the pool after the last reader
in node order, as in ggml, but a new tensor may take them only if every node that touched them
(the old writer and all its readers) happens before the new writer under the schedule. In-place
reuse obeys the same rule. Safe for the schedule it is planned for, with no pinning at all, and
only for that one: the same regions spread over other streams can race (the plan records its
schedule; re-check it under another).
"""

from __future__ import annotations

from concurrency.graph.branches import BranchReport
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.ggml.gallocr import Rules, plan_graph
from concurrency.memory.plan import MemoryPlan


def plan(graph: Graph, schedule: Schedule, report: BranchReport, alignment: int) -> MemoryPlan:
    return plan_graph(
        graph, schedule, graph.nodes, alignment, Rules(respect=schedule), "happens_before"
    )
