"""What LACE's own policies keep that ggml-alloc does not: the bases of graph outputs that are
views.

ggml flags only the view as OUTPUT; `ggml_gallocr_free_node` tests the flag of the tensor it
frees, the base, so once the base's readers and views are done its bytes go back to the pool
and a later tensor may overwrite the output before the host reads it (ggml-alloc.c,
`ggml_gallocr_free_node` and the parent update of `ggml_gallocr_alloc_graph_impl`). The ggml
port keeps that rule; a policy that must be safe pins these bases (never freed, never reused in
place), as if they were outputs themselves.
"""

from __future__ import annotations

from concurrency.graph.ir import Graph


def output_view_bases(graph: Graph) -> frozenset[str]:
    """The planned tensors (in the arena) that some graph output is a view of."""
    planned = set(graph.planned)
    out: set[str] = set()
    for name in (*graph.leafs, *graph.nodes):
        t = graph[name]
        if t.is_output and t.view_src is not None and t.view_src in planned:
            out.add(t.view_src)
    return frozenset(out)
