"""The value an allocator policy returns: where every planned tensor lives in one arena."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from concurrency.errors import LaceError
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule


@dataclass(frozen=True)
class MemoryPlan:
    """Offsets of the tensors a policy placed in the compute buffer (the arena).

    `offsets` holds every tensor the allocator placed itself: graph inputs and non-view nodes
    (a node reusing its parent in place shares the parent's offset). Views live inside their
    `view_src`; weights and caches are external and not in the arena.
    `order` is the node order the plan was made on (ggml plans in graph order; `interleave`
    plans on ggml-cuda's interleaved order). `freed_after` maps each freed tensor to the node
    after which its bytes went back to the pool (never-freed tensors are absent).

    A plan is made for one graph and one schedule, and records both (`graph`, `schedule`):
    offsets are meaningful only for that graph, and a plan that is safe under its schedule
    (above all `happens_before`'s) can race under another one. `bound_to` says whether a
    graph and schedule are the plan's own; the checker, the drawings and the executors call
    it, re-check and say so when the schedule differs, and refuse another graph.
    """

    policy: str
    alignment: int
    offsets: Mapping[str, int]
    sizes: Mapping[str, int]
    arena_bytes: int
    order: tuple[str, ...]
    freed_after: Mapping[str, str] = field(default_factory=dict)
    inplace_of: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    graph: Graph = field(kw_only=True, compare=False, repr=False)
    schedule: Schedule = field(kw_only=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("offsets", "sizes", "freed_after", "inplace_of"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        if tuple(self.schedule.nodes) != tuple(self.graph.nodes):
            raise LaceError(
                f"a {self.policy} plan needs a schedule of its own graph: the schedule lists "
                f"{len(self.schedule.nodes)} nodes, the graph has {len(self.graph.nodes)} "
                "(or in another order); build the schedule from this graph"
            )

    def bound_to(self, graph: Graph, schedule: Schedule) -> str | None:
        """None when `graph` and `schedule` are the ones this plan was made for; otherwise a
        sentence saying how the schedule differs (the caller re-checks the plan under it and
        shows the sentence). A different graph is an error: offsets are by tensor name and
        mean nothing for another graph."""
        if graph is not self.graph and graph != self.graph:
            raise LaceError(
                f"this {self.policy} plan was made for {_describe(self.graph)}, not for "
                f"{_describe(graph)}; plan the graph you want to check, draw or run"
            )
        if schedule is self.schedule or schedule == self.schedule:
            return None
        if tuple(schedule.nodes) != tuple(graph.nodes):
            raise LaceError("the schedule was made for a different graph; rebuild it for this one")
        return (
            f"planned for a schedule of {self.schedule.n_streams} stream(s), used under another "
            f"of {schedule.n_streams} stream(s): re-checked under the new schedule"
        )

    def address(self, graph: Graph, name: str) -> int | None:
        """Byte offset in the arena of tensor `name`'s first byte; None when the tensor is
        external (weights, caches and views of them) or not placed by this plan."""
        t = graph[name]
        if t.view_src is not None:
            base = self.offsets.get(t.view_src)
            return None if base is None else base + t.view_offset_bytes
        return self.offsets.get(name)

    def byte_range(self, graph: Graph, name: str) -> tuple[int, int] | None:
        """[start, end) of the bytes `name` touches in the arena, or None (external/empty)."""
        start = self.address(graph, name)
        t = graph[name]
        if start is None or t.nbytes == 0:
            return None
        return start, start + t.nbytes


def _describe(graph: Graph) -> str:
    m = graph.meta
    return f"{m.model} {m.layer} {m.mode} B={m.batch} ({len(graph.nodes)} nodes)"
