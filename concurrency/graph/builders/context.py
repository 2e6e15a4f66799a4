"""A minimal ggml graph context: tensor creation with ggml's shape rules and
`ggml_build_forward_expand`'s depth-first post-order.

Builders call these functions in the same order llama.cpp's model code calls the ggml API,
so node order, views and sources come out as the engine builds them. Nothing is computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from concurrency.graph.config import ModelConfig
from concurrency.graph.ir import (
    DTYPE_BYTES,
    Graph,
    GraphMeta,
    Tensor,
    TensorKind,
    contiguous_strides,
)

Shape = tuple[int, int, int, int]


def _shape(*ne: int) -> Shape:
    dims = [int(n) for n in ne] + [1] * (4 - len(ne))
    return (dims[0], dims[1], dims[2], dims[3])


@dataclass
class GraphContext:
    """Creates tensors (as handles: their unique names) and records expand order."""

    layer: int | None = None
    _tensors: dict[str, Tensor] = field(default_factory=dict)
    _nodes: list[str] = field(default_factory=list)
    _leafs: list[str] = field(default_factory=list)
    _visited: set[str] = field(default_factory=set)

    # ----------------------------------------------------------------- naming and creation
    def _unique(self, base: str, layer: int | None) -> str:
        name = f"{base}-{layer}" if layer is not None else base
        if name not in self._tensors:
            return name
        k = 2
        while f"{name}.{k}" in self._tensors:
            k += 1
        return f"{name}.{k}"

    def _add(self, t: Tensor) -> str:
        self._tensors[t.name] = t
        return t.name

    def __getitem__(self, name: str) -> Tensor:
        return self._tensors[name]

    def leaf(
        self, base: str, dtype: str, ne: tuple[int, ...], kind: TensorKind, *, ggml_name: str = ""
    ) -> str:
        """A leaf: a weight, a cache or a graph input (inputs are flagged input)."""
        shape = _shape(*ne)
        name = self._unique(base, None)
        return self._add(
            Tensor(
                name=name,
                op="NONE",
                shape=shape,
                strides_bytes=contiguous_strides(shape, dtype),
                dtype=dtype,
                kind=kind,
                ggml_name=ggml_name or name,
                is_input=kind is TensorKind.INPUT,
                external=kind in (TensorKind.WEIGHT, TensorKind.STATE),
            )
        )

    def _node(
        self,
        op: str,
        base: str,
        srcs: tuple[str, ...],
        ne: tuple[int, ...],
        *,
        dtype: str = "f32",
        params: tuple[object, ...] = (),
        ggml_name: str = "",
    ) -> str:
        shape = _shape(*ne)
        return self._add(
            Tensor(
                name=self._unique(base, self.layer),
                op=op,
                shape=shape,
                strides_bytes=contiguous_strides(shape, dtype),
                dtype=dtype,
                kind=TensorKind.INTERMEDIATE,
                srcs=srcs,
                params=params,
                ggml_name=ggml_name,
                layer=self.layer,
            )
        )

    def _view(
        self,
        op: str,
        base: str,
        a: str,
        ne: tuple[int, ...],
        nb: tuple[int, ...],
        offset_bytes: int,
        *,
        srcs: tuple[str, ...] | None = None,
        params: tuple[object, ...] = (),
        ggml_name: str = "",
    ) -> str:
        src = self._tensors[a]
        view_src = src.view_src if src.view_src is not None else a
        offs = (src.view_offset_bytes if src.view_src is not None else 0) + offset_bytes
        shape = _shape(*ne)
        strides = list(nb)
        while len(strides) < 4:  # ggml derives the strides a view call leaves out
            strides.append(strides[-1] * shape[len(strides) - 1])
        return self._add(
            Tensor(
                name=self._unique(base, self.layer),
                op=op,
                shape=shape,
                strides_bytes=(strides[0], strides[1], strides[2], strides[3]),
                dtype=src.dtype,
                kind=TensorKind.VIEW,
                srcs=srcs if srcs is not None else (a,),
                view_src=view_src,
                view_offset_bytes=offs,
                params=params,
                ggml_name=ggml_name,
                layer=self.layer,
                external=self._tensors[view_src].external,
            )
        )

    def name(self, t: str, ggml_name: str) -> str:
        """Record the name llama.cpp's callback gives a tensor (`cb(cur, "z", il)`)."""
        self._tensors[t] = replace(self._tensors[t], ggml_name=ggml_name)
        return t

    def set_output(self, t: str) -> None:
        self._tensors[t] = replace(self._tensors[t], is_output=True, kind=TensorKind.OUTPUT)

    # ----------------------------------------------------------------- expand
    def expand(self, t: str) -> None:
        """ggml_build_forward_expand: append unvisited ancestors depth-first, sources left to
        right, then `t` itself; tensors without an op become leafs."""
        stack: list[tuple[str, int]] = [(t, 0)]
        while stack:
            name, i = stack.pop()
            if i == 0:
                if name in self._visited:
                    continue
                self._visited.add(name)
            srcs = self._tensors[name].srcs
            if i < len(srcs):
                stack.append((name, i + 1))
                if srcs[i] not in self._visited:
                    stack.append((srcs[i], 0))
                continue
            if self._tensors[name].op == "NONE":
                self._leafs.append(name)
            else:
                self._nodes.append(name)

    def finish(self, meta: GraphMeta, config: ModelConfig | None) -> Graph:
        # Only tensors reached by an expand are part of the graph, as in ggml.
        keep = set(self._nodes) | set(self._leafs)
        tensors = {k: v for k, v in self._tensors.items() if k in keep}
        graph = Graph(
            tensors=tensors,
            nodes=tuple(self._nodes),
            leafs=tuple(self._leafs),
            meta=meta,
            config=config,
        )
        graph.validate()
        return graph

    # ----------------------------------------------------------------- views
    def reshape(self, a: str, *ne: int, base: str | None = None) -> str:
        t = self._tensors[a]
        shape = _shape(*ne)
        return self._view(
            "RESHAPE",
            base or f"{_stem(a)}_reshaped",
            a,
            shape,
            contiguous_strides(shape, t.dtype),
            0,
        )

    def view(
        self,
        a: str,
        ne: tuple[int, ...],
        nb: tuple[int, ...],
        offset_bytes: int,
        base: str | None = None,
    ) -> str:
        """ggml_view_{1..4}d: `nb` holds the strides of dimensions 1.. (nb[0] is the type size)."""
        t = self._tensors[a]
        strides = (DTYPE_BYTES[t.dtype], *nb)
        return self._view("VIEW", base or f"{_stem(a)}_view", a, ne, strides, offset_bytes)

    def transpose(self, a: str, base: str | None = None) -> str:
        t = self._tensors[a]
        ne, nb = list(t.shape), list(t.strides_bytes)
        ne[0], ne[1] = ne[1], ne[0]
        nb[0], nb[1] = nb[1], nb[0]
        return self._view("TRANSPOSE", base or f"{_stem(a)}_transposed", a, tuple(ne), tuple(nb), 0)

    def permute(self, a: str, axes: tuple[int, int, int, int], base: str | None = None) -> str:
        """ggml_permute: source dimension i moves to position axes[i]."""
        t = self._tensors[a]
        ne, nb = [0] * 4, [0] * 4
        for i, ax in enumerate(axes):
            ne[ax], nb[ax] = t.shape[i], t.strides_bytes[i]
        return self._view(
            "PERMUTE",
            base or f"{_stem(a)}_permuted",
            a,
            tuple(ne),
            tuple(nb),
            0,
            params=axes,
        )

    # ----------------------------------------------------------------- compute ops
    def mul_mat(self, w: str, x: str, base: str) -> str:
        a, b = self._tensors[w], self._tensors[x]
        return self._node("MUL_MAT", base, (w, x), (a.shape[1], b.shape[1], b.shape[2], b.shape[3]))

    def _like(self, op: str, a: str, srcs: tuple[str, ...], base: str, **kw: object) -> str:
        return self._node(op, base, srcs, self._tensors[a].shape, **kw)  # type: ignore[arg-type]

    def rms_norm(self, a: str, eps: float, base: str = "norm") -> str:
        return self._like("RMS_NORM", a, (a,), base, params=(eps,))

    def mul(self, a: str, b: str, base: str) -> str:
        return self._like("MUL", a, (a, b), base)

    def add(self, a: str, b: str, base: str) -> str:
        return self._like("ADD", a, (a, b), base)

    def div(self, a: str, b: str, base: str) -> str:
        return self._like("DIV", a, (a, b), base)

    def unary(self, a: str, fn: str, base: str) -> str:
        return self._like("UNARY", a, (a,), base, params=(fn,))

    def scale(self, a: str, factor: float, base: str, *, inplace: bool = False) -> str:
        if inplace:
            t = self._tensors[a]
            return self._view("SCALE", base, a, t.shape, t.strides_bytes, 0, params=(factor,))
        return self._like("SCALE", a, (a,), base, params=(factor,))

    def cont(self, a: str, ne: tuple[int, ...], base: str) -> str:
        return self._node("CONT", base, (a,), ne, dtype=self._tensors[a].dtype)

    def concat(self, a: str, b: str, dim: int, base: str) -> str:
        ta, tb = self._tensors[a], self._tensors[b]
        ne = list(ta.shape)
        ne[dim] += tb.shape[dim]
        return self._node("CONCAT", base, (a, b), tuple(ne), params=(dim,))

    def cpy(self, a: str, b: str, base: str) -> str:
        """ggml_cpy: the result is a view of the destination `b`."""
        t = self._tensors[b]
        return self._view("CPY", base, b, t.shape, t.strides_bytes, 0, srcs=(a, b))

    def get_rows(self, a: str, idx: str, base: str) -> str:
        ta, ti = self._tensors[a], self._tensors[idx]
        return self._node(
            "GET_ROWS", base, (a, idx), (ta.shape[0], ti.shape[0], ti.shape[1], ti.shape[2])
        )

    def set_rows(self, dst: str, values: str, idx: str, base: str) -> str:
        """ggml_set_rows: a view of `dst`; sources are (values, indices, dst)."""
        t = self._tensors[dst]
        return self._view(
            "SET_ROWS", base, dst, t.shape, t.strides_bytes, 0, srcs=(values, idx, dst)
        )

    def ssm_conv(self, sx: str, kernel: str, base: str) -> str:
        ts, tk = self._tensors[sx], self._tensors[kernel]
        return self._node(
            "SSM_CONV",
            base,
            (sx, kernel),
            (ts.shape[1], ts.shape[0] - tk.shape[0] + 1, ts.shape[2]),
        )

    def gated_delta_net(
        self, q: str, k: str, v: str, g: str, beta: str, state: str, base: str, snapshots: int = 1
    ) -> str:
        """Fused GDN: one tensor holding the outputs, then `snapshots` final states."""
        tv = self._tensors[v]
        s_v, h_v, n_tok, n_seq = tv.shape
        return self._node(
            "GATED_DELTA_NET",
            base,
            (q, k, v, g, beta, state),
            (s_v * h_v, n_tok * n_seq + s_v * n_seq * snapshots),
            params=(snapshots,),
        )

    def rope(self, a: str, pos: str, n_rot: int, base: str) -> str:
        return self._like("ROPE", a, (a, pos), base, params=(n_rot,))

    def flash_attn_ext(self, q: str, k: str, v: str, mask: str, scale: float, base: str) -> str:
        tq, tv = self._tensors[q], self._tensors[v]
        return self._node(
            "FLASH_ATTN_EXT",
            base,
            (q, k, v, mask),
            (tv.shape[0], tq.shape[2], tq.shape[1], tq.shape[3]),
            params=(scale,),
        )

    def glu(self, gate: str, up: str, fn: str, base: str) -> str:
        return self._like("GLU", gate, (gate, up), base, params=(fn,))

    def soft_max(self, a: str, base: str) -> str:
        return self._like("SOFT_MAX", a, (a,), base)

    def argsort_top_k(self, a: str, k: int, base: str) -> str:
        """ggml_argsort_top_k: a descending ARGSORT, then a view of its first k columns."""
        ta = self._tensors[a]
        order = self._node("ARGSORT", f"{base}_argsort", (a,), ta.shape, dtype="i32")
        t = self._tensors[order]
        return self.view(order, (k, *ta.shape[1:]), t.strides_bytes[1:], 0, base=base)

    def clamp(self, a: str, lo: float, hi: float, base: str) -> str:
        return self._like("CLAMP", a, (a,), base, params=(lo, hi))

    def repeat(self, a: str, ne: tuple[int, ...], base: str) -> str:
        """ggml_repeat_4d: tile `a` up to shape `ne`."""
        return self._node("REPEAT", base, (a,), ne, dtype=self._tensors[a].dtype)

    def sum_rows(self, a: str, base: str) -> str:
        ta = self._tensors[a]
        return self._node("SUM_ROWS", base, (a,), (1, *ta.shape[1:]))

    def mul_mat_id(self, w: str, x: str, ids: str, base: str) -> str:
        tw, tx, ti = self._tensors[w], self._tensors[x], self._tensors[ids]
        return self._node("MUL_MAT_ID", base, (w, x, ids), (tw.shape[1], ti.shape[0], tx.shape[2]))


def _stem(name: str) -> str:
    """A tensor's name without its layer suffix, for naming derived views."""
    head, sep, tail = name.rpartition("-")
    return head if sep and tail.split(".")[0].isdigit() else name
