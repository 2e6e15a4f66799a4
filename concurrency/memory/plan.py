"""The value an allocator policy returns: where every planned tensor lives in one arena."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from concurrency.graph.ir import Graph


@dataclass(frozen=True)
class MemoryPlan:
    """Offsets of the tensors a policy placed in the compute buffer (the arena).

    `offsets` holds every tensor the allocator placed itself: graph inputs and non-view nodes
    (a node reusing its parent in place shares the parent's offset). Views live inside their
    `view_src`; weights and caches are external and not in the arena.
    `order` is the node order the plan was made on (ggml plans in graph order; `interleave`
    plans on ggml-cuda's interleaved order). `freed_after` maps each freed tensor to the node
    after which its bytes went back to the pool (never-freed tensors are absent).
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

    def __post_init__(self) -> None:
        for name in ("offsets", "sizes", "freed_after", "inplace_of"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

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
