"""Which nodes must run before which: data edges plus ordering on shared external memory.

ggml records data edges only (`src`). Writes into caches are ordered by node index alone:
`set_rows` fills the KV cache and the attention later reads a *view* of the cache, with no
edge between them. Once nodes may run out of index order, those orderings must be explicit,
so `node_dependencies` adds them: a node that touches an external state tensor (KV cache,
conv or recurrent state) depends on the last earlier node that wrote it (read-after-write and
write-after-write) and, if it writes, on every earlier reader since that write
(write-after-read). Planned (compute-buffer) memory is deliberately left out: ordering reuse
of planned memory is the allocator's job, and the hazard checker's to verify.
"""

from __future__ import annotations

from concurrency.ir import VIEW_OPS, Graph, TensorKind


def writes_state(graph: Graph, name: str) -> str | None:
    """The external state tensor a node writes in place (CPY, SET_ROWS, in-place SCALE into
    a cache), or None."""
    t = graph[name]
    if t.view_src is None or t.op in VIEW_OPS or t.is_empty:
        return None
    base = graph[t.view_src]
    return t.view_src if base.kind is TensorKind.STATE else None


def reads_state(graph: Graph, name: str) -> set[str]:
    """External state tensors a node touches through its sources, or (a view) by aliasing.

    A destination operand (CPY, SET_ROWS) counts too: ordering a write after earlier reads
    and writes of the same state is exactly what it needs.
    """
    t = graph[name]
    touched = [s for s in t.srcs if not graph[s].is_empty]
    if t.op in VIEW_OPS and not t.is_empty:
        touched.append(name)
    return {graph.base(s) for s in touched if graph[graph.base(s)].kind is TensorKind.STATE}


def node_dependencies(graph: Graph) -> tuple[tuple[int, ...], ...]:
    """For each node index, the sorted indices of earlier nodes it must wait for."""
    index = graph.index
    last_writer: dict[str, int] = {}
    readers_since_write: dict[str, list[int]] = {}
    out: list[tuple[int, ...]] = []
    for i, name in enumerate(graph.nodes):
        t = graph[name]
        deps = {index[s] for s in t.srcs if s in index}
        for base in reads_state(graph, name):
            if base in last_writer:
                deps.add(last_writer[base])
            readers_since_write.setdefault(base, []).append(i)
        written = writes_state(graph, name)
        if written is not None:
            if written in last_writer:
                deps.add(last_writer[written])
            deps.update(r for r in readers_since_write.get(written, ()) if r != i)
            last_writer[written] = i
            readers_since_write[written] = []
        deps.discard(i)
        out.append(tuple(sorted(deps)))
    return tuple(out)
