"""Which nodes must run before which: data edges plus ordering of writes through views.

ggml records data edges only (`src`). Writes *through a view* into memory another tensor
owns — `set_rows` filling the KV cache, `cpy` into the conv and recurrent state, an in-place
`scale` — are ordered by node index alone: the attention later reads a *view* of the cache,
with no edge to the `set_rows` that filled it. Once nodes may run out of index order those
orderings must be explicit, so `node_dependencies` adds them for every tensor that some node
writes through a view: a node touching it depends on the last earlier node that wrote it
through a view (read-after-write, write-after-write) and such a write depends on every
earlier node that touched it since the previous one (write-after-read).

Reuse of planned memory by *different* tensors is deliberately left out: ordering that is
the allocator's job, and the hazard checker's to verify.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concurrency.graph.ops import VIEW_OPS

if TYPE_CHECKING:
    from concurrency.graph.ir import Graph


def view_write_target(graph: Graph, name: str) -> str | None:
    """The base tensor a node writes through a view (CPY, SET_ROWS, an in-place op), or None."""
    t = graph[name]
    if t.view_src is None or t.op in VIEW_OPS or t.is_empty:
        return None
    return t.view_src


def touched_bases(graph: Graph, name: str) -> set[str]:
    """Base tensors a node touches through its sources, or (a view) by aliasing.

    A destination operand (CPY, SET_ROWS) counts too: ordering a write after earlier reads
    and writes of the same memory is exactly what it needs.
    """
    t = graph[name]
    touched = [s for s in t.srcs if not graph[s].is_empty]
    if t.op in VIEW_OPS and not t.is_empty:
        touched.append(name)
    return {graph.base(s) for s in touched}


def node_dependencies(graph: Graph) -> tuple[tuple[int, ...], ...]:
    """For each node index, the sorted indices of earlier nodes it must wait for."""
    index = graph.index
    written = {b for n in graph.nodes if (b := view_write_target(graph, n)) is not None}
    last_writer: dict[str, int] = {}
    touched_since_write: dict[str, list[int]] = {}
    out: list[tuple[int, ...]] = []
    for i, name in enumerate(graph.nodes):
        deps = {index[s] for s in graph[name].srcs if s in index}
        for base in touched_bases(graph, name) & written:
            if base in last_writer:
                deps.add(last_writer[base])
            touched_since_write.setdefault(base, []).append(i)
        target = view_write_target(graph, name)
        if target is not None:
            if target in last_writer:
                deps.add(last_writer[target])
            deps.update(touched_since_write.get(target, ()))
            last_writer[target] = i
            touched_since_write[target] = []
        deps.discard(i)
        out.append(tuple(sorted(deps)))
    return tuple(out)
