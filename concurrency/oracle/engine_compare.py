"""LACE's graph against the node list the running engine computed (op by op).

The op mapping is one to one and the identity: LACE records ggml's op names. Names differ
(llama.cpp repeats names such as `norm-0` and leaves many nodes unnamed), so nodes are matched
by position and source edges by the position of the node a source name refers to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from concurrency.ir import Graph


@dataclass(frozen=True)
class NodeMismatch:
    index: int
    lace: str
    engine: str
    what: str


def compare_nodes(graph: Graph, engine: Sequence[Mapping[str, object]]) -> list[NodeMismatch]:
    """Every difference in op, shape, source count and source edges (and view offset for
    views), node by node; an empty list means the graphs are the same."""
    out: list[NodeMismatch] = []
    if len(graph.nodes) != len(engine):
        out.append(NodeMismatch(-1, str(len(graph.nodes)), str(len(engine)), "node count"))
    seen: dict[str, set[int]] = {}
    for i, (name, e) in enumerate(zip(graph.nodes, engine, strict=False)):
        t = graph[name]
        ename = str(e["name"])
        srcs = [str(s) for s in e["srcs"]]  # type: ignore[attr-defined]
        if t.op != e["op"]:
            out.append(NodeMismatch(i, name, ename, f"op {t.op} vs {e['op']}"))
        if list(t.shape) != list(e["ne"]):  # type: ignore[call-overload]
            out.append(NodeMismatch(i, name, ename, f"shape {list(t.shape)} vs {e['ne']}"))
        if len(t.srcs) != len(srcs):
            out.append(NodeMismatch(i, name, ename, f"{len(t.srcs)} vs {len(srcs)} sources"))
        for s, es in zip(t.srcs, srcs, strict=False):
            want = seen.get(es, {-1})
            got = graph.index.get(s, -1)
            if got not in want:
                out.append(NodeMismatch(i, name, ename, f"source {s} (node {got}) vs {es}"))
        offs = e.get("view_offs")
        if e.get("view_src") is not None and t.view_src is not None and t.view_offset_bytes != offs:
            out.append(NodeMismatch(i, name, ename, f"view offset {t.view_offset_bytes} vs {offs}"))
        seen.setdefault(ename, set()).add(i)
    return out
