"""Export a LACE graph to ggml and let the real `ggml_gallocr` plan it.

Every tensor is created with `ggml_new_tensor` and then given LACE's exact fields: type, ne,
nb, op, sources, view source and offset, input/output flags, and (for weights, caches and
views of them) a non-NULL data pointer, which is how ggml recognises memory it must not plan.
Nodes are expanded in LACE's order, which is already topological, so ggml's depth-first
expand appends them in exactly that order (checked). The op mapping is the identity: LACE
records ggml's own op names, so in-place eligibility and sizes are ggml's by construction.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from concurrency.errors import LaceError
from concurrency.graph.ir import Graph, Tensor
from concurrency.oracle.ggml_lib import (
    FLAG_INPUT,
    FLAG_OUTPUT,
    GGML_MAX_SRC,
    GGML_TYPES,
    Ggml,
    GgmlTensor,
    InitParams,
)

#: The largest compute buffer the oracle lets ggml allocate (it really mallocs it).
MAX_ORACLE_BYTES = 4 << 30


@dataclass(frozen=True)
class GgmlPlan:
    """What ggml-alloc decided: byte offset of every tensor it placed, and the buffer size."""

    offsets: dict[str, int]
    buffer_bytes: int
    alignment: int


def ggml_plan(
    ggml: Ggml,
    graph: Graph,
    order: Sequence[str] | None = None,
    keep_until: Mapping[str, Sequence[str]] | None = None,
) -> GgmlPlan:
    """Plan `graph` with ggml's own graph allocator on the CPU buffer type.

    order: the node order to plan in (a topological order; default the graph's).
    keep_until: #27301's allocation dependencies, inserted exactly as ggml's scheduler does:
    after node `until`, a GGML_OP_NONE view node per ten kept tensors, with them as sources.
    """
    return ggml_engine_flow(ggml, [], GgmlGraph(graph, order, keep_until))


@dataclass(frozen=True)
class GgmlGraph:
    """A LACE graph as ggml-alloc should see it: node order and dependency nodes."""

    graph: Graph
    order: Sequence[str] | None = None
    keep_until: Mapping[str, Sequence[str]] | None = None


def ggml_engine_flow(ggml: Ggml, reserves: Sequence[GgmlGraph], live: GgmlGraph) -> GgmlPlan:
    """The real ggml-alloc's flow on one allocator: `ggml_gallocr_reserve` each of `reserves`
    in turn (the buffer grows to the largest), then `ggml_gallocr_alloc_graph` the live
    graph, which replays the stored offsets when `ggml_gallocr_needs_realloc` allows it and
    plans afresh otherwise. Every graph gets fresh tensors, as llama.cpp builds each graph
    anew. Returns the live graph's offsets and the final buffer size."""
    dummy = ctypes.create_string_buffer(64)  # data for external tensors: never written
    with ExitStack() as stack:
        built = [stack.enter_context(_built(ggml, g, ctypes.addressof(dummy))) for g in reserves]
        ptrs, cgraph = stack.enter_context(_built(ggml, live, ctypes.addressof(dummy)))
        galloc = ggml.base.ggml_gallocr_new(ggml.cpu_buffer_type)
        try:
            for _, reserve_graph in built:
                if not ggml.base.ggml_gallocr_reserve(galloc, reserve_graph):
                    raise LaceError("ggml_gallocr_reserve failed")
            if not ggml.base.ggml_gallocr_alloc_graph(galloc, cgraph):
                raise LaceError("ggml_gallocr_alloc_graph failed")
            buffer_bytes = ggml.base.ggml_gallocr_get_buffer_size(galloc, 0)
            offsets: dict[str, int] = {}
            for name, t in live.graph.tensors.items():
                if t.external or t.view_src is not None or not (t.is_input or t.op != "NONE"):
                    continue
                gt = ptrs[name].contents
                if not gt.buffer or gt.data is None:
                    continue
                base = ggml.base.ggml_backend_buffer_get_base(gt.buffer)
                offsets[name] = gt.data - base
        finally:
            ggml.base.ggml_gallocr_free(galloc)
    alignment = ggml.base.ggml_backend_buft_get_alignment(ggml.cpu_buffer_type)
    return GgmlPlan(offsets, buffer_bytes, alignment)


@contextmanager
def _built(
    ggml: Ggml, spec: GgmlGraph, dummy: int
) -> Iterator[tuple[dict[str, ctypes._Pointer], int]]:
    """`spec`'s graph as a ggml context of tensors and a cgraph in the requested order (with
    dependency nodes), freed on exit."""
    graph = spec.graph
    order = tuple(graph.nodes) if spec.order is None else tuple(spec.order)
    keep_until = spec.keep_until or {}
    n_deps = sum(-(-len(k) // GGML_MAX_SRC) for k in keep_until.values())
    overhead = ggml.base.ggml_tensor_overhead()
    size = max(64, 2 * len(graph.tensors) + n_deps + 16)
    mem = overhead * (len(graph.tensors) + n_deps + 16)
    mem += ggml.base.ggml_graph_overhead_custom(size, False)
    ctx = ggml.base.ggml_init(InitParams(mem + (1 << 16), None, True))
    if not ctx:
        raise LaceError("ggml_init failed")
    try:
        ptrs = _create_tensors(ggml, ctx, graph, dummy)
        cgraph = ggml.base.ggml_new_graph_custom(ctx, size, False)
        expected: list[int] = []
        for name in graph.leafs:  # ggml lists leafs in the order expand meets them: LACE's
            ggml.base.ggml_build_forward_expand(cgraph, ptrs[name])
        for name in order:
            ggml.base.ggml_build_forward_expand(cgraph, ptrs[name])
            expected.append(ctypes.addressof(ptrs[name].contents))
            kept = list(keep_until.get(name, ()))
            for k in range(0, len(kept), GGML_MAX_SRC):
                dep = _dependency_node(ggml, ctx, graph, ptrs, kept[k : k + GGML_MAX_SRC])
                ggml.base.ggml_graph_add_node(cgraph, dep)
                expected.append(ctypes.addressof(dep.contents))
        _check_order(ggml, cgraph, expected, order)
        yield ptrs, cgraph
    finally:
        ggml.base.ggml_free(ctx)


def _create_tensors(ggml: Ggml, ctx: int, graph: Graph, dummy: int) -> dict[str, ctypes._Pointer]:
    ptrs: dict[str, ctypes._Pointer] = {}
    need = sum(t.nbytes for t in graph.tensors.values() if not t.external and not t.is_view)
    if need > MAX_ORACLE_BYTES:
        raise LaceError(
            f"graph too large for the oracle ({need} bytes of activations); "
            "use a smaller preset, batch or layer count"
        )
    for name, t in graph.tensors.items():
        ne = (ctypes.c_int64 * 4)(*t.shape)
        ptrs[name] = ggml.base.ggml_new_tensor(ctx, _type(t), 4, ne)
    for name, t in graph.tensors.items():
        gt = ptrs[name].contents
        gt.nb[:] = list(t.strides_bytes)
        gt.op = ggml.op_ids[t.op]
        gt.flags = (FLAG_INPUT if t.is_input else 0) | (FLAG_OUTPUT if t.is_output else 0)
        gt.name = name.encode()[:63]
        if len(t.srcs) > GGML_MAX_SRC:
            raise LaceError(f"{name!r} has {len(t.srcs)} sources; ggml allows {GGML_MAX_SRC}")
        for i, s in enumerate(t.srcs):
            gt.src[i] = ctypes.addressof(ptrs[s].contents)
        if t.view_src is not None:
            gt.view_src = ctypes.addressof(ptrs[t.view_src].contents)
            gt.view_offs = t.view_offset_bytes
        if t.external:
            gt.data = dummy
    return ptrs


def _type(t: Tensor) -> int:
    try:
        return GGML_TYPES[t.dtype]
    except KeyError:
        raise LaceError(f"tensor {t.name!r} has dtype {t.dtype}, unknown to the oracle") from None


def _dependency_node(
    ggml: Ggml, ctx: int, graph: Graph, ptrs: dict[str, ctypes._Pointer], kept: list[str]
) -> ctypes._Pointer:
    """ggml-backend's alloc-dep node: `ggml_view_tensor(kept[0])` turned into a NONE op whose
    sources are the kept tensors."""
    first = graph[kept[0]]
    ne = (ctypes.c_int64 * 4)(*first.shape)
    dep = ggml.base.ggml_new_tensor(ctx, _type(first), 4, ne)
    gt = dep.contents
    gt.nb[:] = list(first.strides_bytes)
    gt.op = ggml.op_ids["NONE"]
    base = first.view_src if first.view_src is not None else kept[0]
    gt.view_src = ctypes.addressof(ptrs[base].contents)
    gt.view_offs = first.view_offset_bytes
    for i, s in enumerate(kept):
        gt.src[i] = ctypes.addressof(ptrs[s].contents)
    return dep


def _check_order(ggml: Ggml, cgraph: int, expected: list[int], order: Sequence[str]) -> None:
    n = ggml.base.ggml_graph_n_nodes(cgraph)
    if n != len(expected):
        raise LaceError(
            f"ggml's graph has {n} nodes, {len(expected)} were expected (is the order topological?)"
        )
    for i, want in enumerate(expected):
        if ctypes.addressof(ggml.base.ggml_graph_node(cgraph, i).contents) != want:
            raise LaceError(f"ggml appended node {i} out of order (order starts {order[:3]})")


__all__ = ["GgmlGraph", "GgmlPlan", "GgmlTensor", "ggml_engine_flow", "ggml_plan"]
