"""The graph IR: ggml-shaped tensors and the node order llama.cpp appends them in.

A `Graph` is what ggml's allocator sees: leafs (weights, caches, inputs) and nodes in the
order `ggml_build_forward_expand` appended them. Every tensor has a unique, stable LACE name
(`attn_norm-3`, `z-3`) for DOT, traces, errors and golden tests, and keeps the name llama.cpp
gives it (`ggml_name`) for comparing against the running engine.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from types import MappingProxyType

from concurrency.errors import LaceError
from concurrency.graph.config import ModelConfig
from concurrency.graph.deps import node_dependencies
from concurrency.graph.ops import DTYPE_BYTES, INPLACE_OPS, VIEW_OPS

__all__ = [
    "DTYPE_BYTES",
    "INPLACE_OPS",
    "VIEW_OPS",
    "Graph",
    "GraphMeta",
    "Tensor",
    "TensorKind",
    "contiguous_strides",
]


class TensorKind(str, Enum):
    """What a tensor is, for the allocator and for drawing."""

    WEIGHT = "weight"  # model parameters: own buffer, never planned
    STATE = "state"  # KV cache, conv and recurrent state: own buffer, never planned
    INPUT = "input"  # graph inputs (tokens, positions, masks): planned first, flagged input
    INTERMEDIATE = "intermediate"  # activations: planned in the compute buffer
    OUTPUT = "output"  # flagged output: planned, never freed
    VIEW = "view"  # shares the memory of another tensor (`view_src`)


@dataclass(frozen=True)
class Tensor:
    """One ggml tensor: a leaf (op NONE) or a node.

    `shape` is ggml's `ne` (fastest dimension first, always 4 entries) and `strides_bytes` its
    `nb`. A view has `view_src` (the base tensor it aliases, never itself a view) and
    `view_offset_bytes` into it. `external` tensors live in buffers the graph allocator does
    not plan (weights, caches, and views of them).
    """

    name: str
    op: str
    shape: tuple[int, int, int, int]
    strides_bytes: tuple[int, int, int, int]
    dtype: str
    kind: TensorKind
    srcs: tuple[str, ...] = ()
    view_src: str | None = None
    view_offset_bytes: int = 0
    params: tuple[object, ...] = ()
    ggml_name: str = ""
    layer: int | None = None
    is_input: bool = False
    is_output: bool = False
    external: bool = False

    @property
    def is_leaf(self) -> bool:
        return self.op == "NONE"

    @property
    def is_view(self) -> bool:
        return self.view_src is not None

    @property
    def is_empty(self) -> bool:
        return any(n == 0 for n in self.shape)

    @property
    def nelements(self) -> int:
        return math.prod(self.shape)

    @property
    def nrows(self) -> int:
        """ggml_nrows: elements outside the first dimension."""
        return self.shape[1] * self.shape[2] * self.shape[3]

    @cached_property
    def nbytes(self) -> int:
        """ggml_nbytes: the byte span the tensor touches (0 for an empty tensor)."""
        if self.is_empty:
            return 0
        span = DTYPE_BYTES[self.dtype]
        for n, stride in zip(self.shape, self.strides_bytes, strict=True):
            span += (n - 1) * stride
        return span

    @property
    def is_contiguous(self) -> bool:
        return self.strides_bytes == contiguous_strides(self.shape, self.dtype)

    @property
    def unary(self) -> str | None:
        """The unary function (silu, sigmoid, softplus, …) of a UNARY node."""
        return str(self.params[0]) if self.op == "UNARY" and self.params else None

    @property
    def label(self) -> str:
        """Short op label for drawings: the unary/glu function where there is one."""
        if self.op in ("UNARY", "GLU") and self.params:
            return str(self.params[0])
        return self.op.lower()


def contiguous_strides(shape: tuple[int, ...], dtype: str) -> tuple[int, int, int, int]:
    """ggml's nb for a contiguous tensor of this shape."""
    nb = [DTYPE_BYTES[dtype]]
    for n in shape[:3]:
        nb.append(nb[-1] * n)
    return (nb[0], nb[1], nb[2], nb[3])


@dataclass(frozen=True)
class GraphMeta:
    """How a graph was requested: the layer kind, mode and batch it models."""

    model: str
    layer: str  # "gdn", "attn" or "stack"
    mode: str  # "decode" or "prefill"
    batch: int  # sequences
    tokens: int  # tokens per sequence (1 in decode)
    n_layers: int  # decoder layers in the graph
    n_ctx: int = 4096
    kv_tokens: int = 0
    reserve: bool = False  # llama.cpp's worst-case reserve graph, not a real step

    @property
    def n_tokens(self) -> int:
        return self.batch * self.tokens


@dataclass(frozen=True)
class Graph:
    """An immutable compute graph in ggml's node order.

    `nodes` is the order llama.cpp appends nodes (and the order ggml's allocator assumes they
    run in); `leafs` the leaf tensors in first-visit order.
    """

    tensors: Mapping[str, Tensor]
    nodes: tuple[str, ...]
    leafs: tuple[str, ...]
    meta: GraphMeta
    config: ModelConfig | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))

    def __getitem__(self, name: str) -> Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise LaceError(f"graph has no tensor named {name!r}") from None

    def __len__(self) -> int:
        """The number of nodes (leafs are not counted)."""
        return len(self.nodes)

    def __iter__(self) -> Iterator[str]:
        """The node names, in order (leafs are in `leafs`)."""
        return iter(self.nodes)

    def __contains__(self, name: object) -> bool:
        """Whether the graph has a tensor (node or leaf) of this name."""
        return name in self.tensors

    def __hash__(self) -> int:
        # Equal graphs have equal node and leaf names and metadata; hashing the names (not
        # every tensor) keeps hash() cheap on a 4 000-node stack.
        return hash((self.nodes, self.leafs, self.meta))

    @cached_property
    def index(self) -> Mapping[str, int]:
        """Node name → position in `nodes`."""
        return MappingProxyType({n: i for i, n in enumerate(self.nodes)})

    @cached_property
    def consumers(self) -> Mapping[str, tuple[str, ...]]:
        """Tensor name → the nodes that read it directly, in node order."""
        out: dict[str, list[str]] = {name: [] for name in self.tensors}
        for n in self.nodes:
            for s in self.tensors[n].srcs:
                out[s].append(n)
        return MappingProxyType({k: tuple(v) for k, v in out.items()})

    def base(self, name: str) -> str:
        """The tensor whose memory `name` uses: its view_src, or itself."""
        t = self.tensors[name]
        return t.view_src if t.view_src is not None else name

    @cached_property
    def dependencies(self) -> tuple[tuple[int, ...], ...]:
        """`concurrency.graph.deps.node_dependencies`, computed once per graph."""
        return node_dependencies(self)

    @cached_property
    def planned(self) -> tuple[str, ...]:
        """The tensors the graph allocator places in the compute buffer (the arena), leafs
        first, then nodes in order: every tensor that is neither a view nor external. This
        is the one definition the planner, the checker, the bound and the executors share;
        `validate` guarantees that the only planned leafs are graph inputs."""
        return tuple(
            n
            for n in (*self.leafs, *self.nodes)
            if self.tensors[n].view_src is None and not self.tensors[n].external
        )

    @cached_property
    def memory_touches(self) -> tuple[tuple[int, str, str, int, int, bool], ...]:
        """Every byte range a node touches, plan-independently: (node index, tensor, base
        tensor, offset in the base, bytes, is_write). A compute node writes its own tensor
        and reads each distinct source; view ops touch nothing; empty tensors and tensors
        outside the arena (not `planned`) are left out. A plan turns these into arena ranges
        by adding the base's offset."""
        planned = set(self.planned)
        out = []
        for i, name in enumerate(self.nodes):
            t = self.tensors[name]
            if t.op in VIEW_OPS:
                continue
            for tensor, write in ((name, True), *((s, False) for s in dict.fromkeys(t.srcs))):
                x = self.tensors[tensor]
                base = x.view_src if x.view_src is not None else tensor
                if x.nbytes == 0 or base not in planned:
                    continue
                out.append((i, tensor, base, x.view_offset_bytes, x.nbytes, write))
        return tuple(out)

    def node_tensors(self) -> list[Tensor]:
        return [self.tensors[n] for n in self.nodes]

    def validate(self) -> None:
        """Check the graph's invariants; raise LaceError naming the first broken one."""
        seen: set[str] = set(self.leafs)
        for name in self.leafs:
            leaf = self.tensors[name]
            if not leaf.is_leaf:
                raise LaceError(f"leaf {name!r} has op {leaf.op}")
            if not (leaf.external or leaf.is_input):
                raise LaceError(
                    f"leaf {name!r} is neither a graph input nor external (weight or cache): "
                    "the host must fill it, so flag it as an input (TensorKind.INPUT), or give "
                    "it its own buffer (TensorKind.WEIGHT / STATE)"
                )
        for name in self.nodes:
            t = self.tensors[name]
            if t.is_leaf:
                raise LaceError(f"node {name!r} has no op")
            for s in t.srcs:
                if s not in seen:
                    raise LaceError(f"node {name!r} reads {s!r} before it is computed")
            if t.view_src is not None:
                src = self.tensors.get(t.view_src)
                if src is None or src.view_src is not None:
                    raise LaceError(f"view {name!r} must alias a base tensor, got {t.view_src!r}")
                if t.nbytes and t.view_offset_bytes + t.nbytes > src.nbytes:
                    raise LaceError(f"view {name!r} reaches past the end of {t.view_src!r}")
            seen.add(name)
        if len(seen) != len(self.tensors):
            missing = sorted(set(self.tensors) - seen)[:5]
            raise LaceError(f"tensors {missing} are neither leafs nor nodes")
