"""`happens_before` (LACE, the review's ask): bytes go back to the pool after the last reader
in node order, as in ggml, but a new tensor may take them only if every node that touched them
(the old writer and all its readers) happens before the new writer under the schedule. In-place
reuse obeys the same rule. Safe for the schedule it is planned for, with no pinning at all, and
only for that one: the same regions spread over other streams can race (the plan records its
schedule; re-check it under another).

Mechanics: ggml's walk (`concurrency.memory.ggml.gallocr.Planner`) with its hooks overridden.
Each block of bytes (a tensor and the in-place chain reusing it) records, as a bitset, the
nodes that access it (`begin_node`: a node's sources; `end_node`: the node itself; view ops
move no bytes). Freed bytes keep that bitset as their `clear` (`HappensBeforeAllocator`), a
new tensor takes only bytes whose `clear` lies in the schedule's ancestors of its writer (shares
no node with `blocked`), and in-place reuse asks the same of the parent's block. Bits of
nodes that happen before every later node (`Schedule.settled_at`) are forgotten as the walk
passes them, which keeps the free list short.

Graph outputs that are views: ggml frees their base (only the view is flagged OUTPUT), which
would let a later writer overwrite the output before the host reads it; `happens_before` pins
those bases (`concurrency.memory.policies.outputs`), as outputs are, so the host's reads after
the last node are safe too.
"""

from __future__ import annotations

from concurrency.graph.branches import BranchReport
from concurrency.graph.ir import VIEW_OPS, Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.ggml.gallocr import Planner, Rules, plan_graph
from concurrency.memory.plan import MemoryPlan
from concurrency.memory.policies.happens_before_pool import HappensBeforeAllocator
from concurrency.memory.policies.outputs import output_view_bases


class HappensBeforePlanner(Planner):
    """ggml's walk where reuse must respect the schedule's happens-before order."""

    alloc: HappensBeforeAllocator

    def __init__(self, graph: Graph, schedule: Schedule, alignment: int, rules: Rules) -> None:
        super().__init__(graph, schedule, alignment, rules)
        self.block: dict[str, str] = {}  # tensor → the tensor that first took its bytes
        self.access: dict[str, int] = {}  # block → bitset of node indices touching it
        # The nodes that neither happen before the node being planned nor are it: bytes
        # they touched are not ready for it (none while the leafs are planned).
        self.blocked = 0
        self.settle_queue: dict[int, list[int]] = {}
        for m, at in enumerate(schedule.settled_at):
            self.settle_queue.setdefault(at, []).append(m)
        self.settled = 0

    def new_allocator(self, alignment: int) -> HappensBeforeAllocator:
        return HappensBeforeAllocator(alignment)

    def take_bytes(self, name: str, size: int) -> int:
        self.block[name] = name
        return self.alloc.alloc(size, self.blocked)

    def take_over(self, name: str, parent: str) -> bool:
        block = self.block[parent]
        if self.access.get(block, 0) & self.blocked:
            return False
        self.block[name] = block
        return True

    def recycle(self, name: str, offset: int, size: int) -> None:
        self.alloc.free(offset, size, self.access.get(self.block[name], 0))

    def touch(self, names: tuple[str, ...], index: int) -> None:
        """Record that node `index` accesses the bytes of each of `names`."""
        tensors, blocks, access = self.t, self.block, self.access
        bit = 1 << index
        for name in names:
            view_src = tensors[name].view_src
            block = blocks.get(name if view_src is None else view_src)
            if block is not None:
                access[block] = access.get(block, 0) | bit

    def begin_node(self, index: int, name: str) -> None:
        self.blocked = ~self.schedule.ancestors(index) & ~(1 << index)
        settling = self.settle_queue.get(index)
        if settling is not None:
            for m in settling:
                self.settled |= 1 << m
            self.alloc.settle(self.settled)
        t = self.t[name]
        if t.op not in VIEW_OPS:  # views move no bytes
            self.touch(t.srcs, index)

    def end_node(self, index: int, name: str) -> None:
        if self.t[name].op not in VIEW_OPS:
            self.touch((name,), index)


def plan(graph: Graph, schedule: Schedule, report: BranchReport, alignment: int) -> MemoryPlan:
    rules = Rules(pinned=output_view_bases(graph))
    return plan_graph(
        graph, schedule, graph.nodes, alignment, rules, "happens_before", HappensBeforePlanner
    )
