"""`ggml_gallocr_alloc_graph_impl`: walk the nodes once, allocate each on first need, free a
tensor when its last reader (in plan order) has been planned.

Ported rule by rule from ggml-alloc.c (llama-cpp-python 0.3.36):

1. leafs first, in leaf order: graph inputs get memory; weights and caches are external;
2. a counting pass: views add to their `view_src`'s view count; every source slot adds a child;
3. per node: allocate it (views and external tensors never are); an in-place-eligible op takes
   a parent's memory when the parent is owned, not an output (nor a view of one), has the same
   layout, exactly one child left and no views; then each source loses a child, and a source
   with no children and no views is freed (a view passes the release on to its `view_src`
   once that has no views and no children left); outputs are never freed.

`Rules` carries what the region policies change: tensors never to free (and never to reuse in
place), extra "keep alive until" dependencies (#27301's dependency nodes, honoured exactly as
ggml's scheduler inserts them: a NONE node after `until` whose sources are the kept tensors),
and whether in-place reuse is allowed; its defaults are ggml's own.

`Planner` is the walk. A policy that decides reuse differently subclasses it and overrides its
hooks (`new_allocator`, `take_bytes`, `take_over`, `recycle`, `begin_node`, `end_node`); every
default does exactly what ggml does (or nothing), so the port stays ggml's rule by rule.
`happens_before` is the one such policy (`concurrency.memory.policies.happens_before`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from concurrency.graph.ir import INPLACE_OPS, Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.ggml.tallocr import DynAllocator, align_up
from concurrency.memory.plan import MemoryPlan


@dataclass(frozen=True)
class Rules:
    """What a policy changes in ggml's mechanics (the defaults are ggml's own)."""

    pinned: frozenset[str] = frozenset()
    keep_until: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    inplace: bool = True


@dataclass
class _Hash:
    n_children: int = 0
    n_views: int = 0
    allocated: bool = False
    offset: int = -1


def plan_graph(
    graph: Graph,
    schedule: Schedule,
    order: Sequence[str],
    alignment: int,
    rules: Rules,
    policy: str,
    planner: type[Planner] | None = None,
) -> MemoryPlan:
    """Plan `graph`'s compute buffer visiting nodes in `order` under `rules` (with ggml's
    `Planner`, or a policy's subclass); the plan records `schedule` as the one it is meant
    to run under."""
    return (planner or Planner)(graph, schedule, alignment, rules).run(order, policy)


class Planner:
    """`ggml_gallocr_alloc_graph_impl` for one graph; hooks for policies (defaults: ggml)."""

    def __init__(self, graph: Graph, schedule: Schedule, alignment: int, rules: Rules) -> None:
        self.g = graph
        self.schedule = schedule
        self.rules = rules
        self.alloc = self.new_allocator(alignment)
        self.alignment = alignment
        self.t = dict(graph.tensors)  # plain dict: the walk looks tensors up ~10⁵ times
        self.hash: defaultdict[str, _Hash] = defaultdict(_Hash)
        self.offsets: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.freed_after: dict[str, str] = {}
        self.inplace_of: dict[str, str] = {}

    def h(self, name: str) -> _Hash:
        return self.hash[name]

    # ------------------------------------------------------------------ hooks (ggml's defaults)
    def new_allocator(self, alignment: int) -> DynAllocator:
        """The free list the walk allocates from."""
        return DynAllocator(alignment)

    def take_bytes(self, name: str, size: int) -> int:
        """Fresh bytes for tensor `name`: ggml_dyn_tallocr_alloc."""
        return self.alloc.alloc(size)

    def take_over(self, name: str, parent: str) -> bool:
        """Last say on `name` reusing `parent`'s bytes in place, asked once every ggml
        condition holds; True means the reuse happens. ggml: always."""
        return True

    def recycle(self, name: str, offset: int, size: int) -> None:
        """Give `size` bytes at `offset`, part of tensor `name`'s memory, back to the pool."""
        self.alloc.free(offset, size)

    def begin_node(self, index: int, name: str) -> None:
        """Called before node `index` (`name`) is planned. ggml: nothing."""

    def end_node(self, index: int, name: str) -> None:
        """Called once node `index` has memory, before its sources are released."""

    # ------------------------------------------------------------------ ggml's predicates
    def is_allocated(self, name: str) -> bool:
        return self.t[name].external or self.hash[name].allocated

    def same_layout(self, a: str, b: str) -> bool:
        ta, tb = self.g[a], self.g[b]
        return (ta.dtype, ta.shape, ta.strides_bytes) == (tb.dtype, tb.shape, tb.strides_bytes)

    # ------------------------------------------------------------------ allocate / free
    def allocate(self, name: str) -> None:
        t = self.t[name]
        if t.view_src is not None or t.external or self.hash[name].allocated:
            return
        hn = self.h(name)
        hn.allocated = True
        if self.rules.inplace and t.op in INPLACE_OPS:
            for parent in t.srcs:
                if self.try_inplace(name, parent):
                    return
        size = t.nbytes
        hn.offset = self.take_bytes(name, size)
        self.offsets[name] = hn.offset
        self.sizes[name] = align_up(size, self.alignment)

    def try_inplace(self, name: str, parent: str) -> bool:
        p = self.g[parent]
        if not self.h(parent).allocated:  # external, a view, or not ours
            return False
        if p.is_output or (p.view_src is not None and self.g[p.view_src].is_output):
            return False
        if parent in self.rules.pinned or not self.same_layout(name, parent):
            return False
        ph = self.h(parent)
        if ph.n_children != 1 or ph.n_views != 0:
            return False
        if not self.take_over(name, parent):
            return False
        # (ggml's branch for a view parent cannot be taken: views are never "allocated".)
        hn = self.h(name)
        hn.offset = ph.offset
        ph.allocated = False
        self.offsets[name] = hn.offset
        self.sizes[name] = self.sizes[parent]
        self.inplace_of[name] = parent
        node_size = align_up(self.g[name].nbytes, self.alignment)
        if self.sizes[parent] > node_size:  # ggml_gallocr_free_extra_space
            self.recycle(name, ph.offset + node_size, self.sizes[parent] - node_size)
        return True

    def free(self, name: str, after: str) -> None:
        t = self.g[name]
        if t.is_output or name in self.rules.pinned:
            return
        hn = self.h(name)
        self.recycle(name, hn.offset, t.nbytes)
        hn.allocated = False
        self.freed_after[name] = after

    def release(self, parent: str, after: str) -> None:
        """A source lost a child: free it (or pass the release to its view_src) when unused."""
        ph = self.hash[parent]
        ph.n_children -= 1
        if ph.n_children != 0 or ph.n_views != 0:
            return
        view_src = self.t[parent].view_src
        if view_src is not None:
            vh = self.h(view_src)
            vh.n_views -= 1
            if vh.n_views == 0 and vh.n_children == 0 and vh.allocated:
                self.free(view_src, after)
        elif ph.allocated:
            self.free(parent, after)

    # ------------------------------------------------------------------ the walk
    def run(self, order: Sequence[str], policy: str) -> MemoryPlan:
        tensors, hashes, keep = self.t, self.hash, self.rules.keep_until
        allocate, release = self.allocate, self.release
        begin_node, end_node = self.begin_node, self.end_node
        for leaf in self.g.leafs:  # graph_optimize reorders nodes only: leafs keep their order
            allocate(leaf)
        for name in order:  # counting pass
            t = tensors[name]
            if t.view_src is not None:
                hashes[t.view_src].n_views += 1
            if t.is_input:
                allocate(name)
            for s in t.srcs:
                hashes[s].n_children += 1
                if tensors[s].is_input:
                    allocate(s)
            for kept in keep.get(name, ()):  # the dependency node inserted after `name`
                hashes[kept].n_children += 1
        index = self.g.index
        for name in order:
            t = tensors[name]
            i = index[name]
            begin_node(i, name)
            for s in t.srcs:
                ts = tensors[s]  # only leafs can still be unplaced here
                if ts.view_src is None and not ts.external and not hashes[s].allocated:
                    allocate(s)
            allocate(name)
            end_node(i, name)
            for s in t.srcs:
                release(s, name)
            for kept in keep.get(name, ()):
                release(kept, name)
        return MemoryPlan(
            policy=policy,
            alignment=self.alignment,
            offsets=self.offsets,
            sizes=self.sizes,
            arena_bytes=self.alloc.max_size,
            order=tuple(order),
            freed_after=self.freed_after,
            inplace_of=self.inplace_of,
            graph=self.g,
            schedule=self.schedule,
        )
