"""What each node costs: FLOPs, bytes read and written, and the thread blocks it launches.

Counted from the graph's shapes, for the simulator's roofline (gdn-reference §6 conventions):

- Views (RESHAPE, VIEW, PERMUTE, TRANSPOSE) and empty tensors cost nothing and launch nothing.
- One multiply-add is 2 FLOPs: MUL_MAT is 2·M·N·K; MUL_MAT_ID counts the routed rows only.
- Weights are read once per kernel at `weight_bytes_per_param` (default 2: bf16). LACE's IR
  stores weights as f32 (ggml's CPU view of the graph); a GPU engine keeps them in bf16 or
  quantized, so the IR's dtype is ignored for weights. MUL_MAT_ID reads only the experts
  in use: the expected number of distinct experts when each of T tokens picks k of E
  uniformly, E·(1 − (1 − k/E)^T). GET_ROWS reads only the gathered rows.
- Activations and states at their own dtype sizes (f32 activations and state, f16 KV cache);
  a node reads each distinct source once and writes its output once. A CPY or SET_ROWS does
  not read its destination, and SET_ROWS writes only the rows it sets.
- GATED_DELTA_NET: about 7·S_k·S_v FLOPs per value head and token (the recurrent form, which
  ggml runs for decode and prefill alike); its bytes come out of the generic rule: the state is
  read (4·Hv·S·S per sequence) and written (inside its output), i.e. 8·Hv·S·S in all.
- FLASH_ATTN_EXT: 2·D·KV per query head and row for QKᵀ, the same for PV, plus 5 per score.
- Element-wise and norm ops: 1–5 FLOPs per element (table `_FLOPS_PER_ELEMENT`).

`grid_blocks` is a plausible thread-block count: GEMMs in 128×128 output tiles (split along
K until about 128 blocks are in flight, as cuBLAS does for skinny shapes), GEMVs
(≤ 8 output columns) one block per output row as ggml's mul_mat_vec does, row-wise ops one
block per row, the GDN recurrence one block per (value head, sequence), and element-wise ops
one block per 256 output elements; always at least 1.

`op_class` sorts a node into the kernel family that runs it (the unit a calibrated GPU spec
fits one curve for, `concurrency.timing.kernel_model`): a projection with ≤ 8 activation
columns is a weight-streaming GEMV, a wider one a tensor-core GEMM (LACE's executor switches
there, `execute.gpu.launch.GEMV_MAX_COLUMNS`); copies split by whether their source is
contiguous (a strided source gathers scattered rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from concurrency.errors import ConfigError
from concurrency.graph.ir import DTYPE_BYTES, VIEW_OPS, Graph, Tensor, TensorKind

#: ops that run on tensor cores (bf16 rate); everything else runs at the fp32 rate.
TENSOR_CORE_OPS = frozenset({"MUL_MAT", "MUL_MAT_ID", "FLASH_ATTN_EXT"})

_FLOPS_PER_ELEMENT = {
    "ADD": 1,
    "ADD1": 1,
    "ADD_ID": 1,
    "SUB": 1,
    "MUL": 1,
    "DIV": 1,
    "SCALE": 1,
    "CLAMP": 1,
    "SQR": 1,
    "SQRT": 1,
    "LOG": 2,
    "RMS_NORM": 3,
    "L2_NORM": 3,
    "NORM": 5,
    "SOFT_MAX": 5,
    "ROPE": 4,
    "GLU": 5,
    "SUM_ROWS": 1,
    "CONCAT": 0,
    "CPY": 0,
    "CONT": 0,
    "DUP": 0,
    "GET_ROWS": 0,
    "SET_ROWS": 0,
    "REPEAT": 0,
    "FILL": 0,
}
_UNARY_FLOPS = {"silu": 4, "sigmoid": 4, "softplus": 5, "exp": 2, "gelu": 8, "relu": 1}
_ROW_OPS = frozenset({"RMS_NORM", "L2_NORM", "NORM", "SOFT_MAX", "ARGSORT", "SUM_ROWS"})
_THREADS_PER_BLOCK = 256
_GEMM_TILE = 128
_GEMV_MAX_COLUMNS = 8
_SPLIT_K_TARGET_BLOCKS = 128
GDN_FLOPS_PER_STATE_ELEMENT = 7


@dataclass(frozen=True)
class OpCost:
    """The work one node does on the GPU (zero everywhere for a node that launches nothing)."""

    node: str
    flops: float
    bytes_read: float
    bytes_written: float
    grid_blocks: int
    tensor_cores: bool = False
    op_class: str = ""  # the kernel family (OP_CLASSES); "" for a node that launches nothing
    columns: int = 0  # activation columns (tokens) the node works on: a GEMV's batch
    outputs: int = 0  # output elements

    @property
    def launches(self) -> bool:
        """Whether the node is a kernel launch at all (views and empty tensors are not)."""
        return self.grid_blocks > 0

    @property
    def bytes_moved(self) -> float:
        return self.bytes_read + self.bytes_written


def launches_kernel(t: Tensor) -> bool:
    """A node launches a kernel unless it is a view op or its output is empty."""
    return t.op not in VIEW_OPS and not t.is_empty


def graph_costs(graph: Graph, weight_bytes_per_param: float = 2) -> tuple[OpCost, ...]:
    """The cost of every node, index-aligned with `graph.nodes`."""
    if not weight_bytes_per_param > 0:
        raise ConfigError(
            f"weight_bytes_per_param must be > 0 (2 for bf16), got {weight_bytes_per_param!r}"
        )
    return tuple(node_cost(graph, n, weight_bytes_per_param) for n in graph.nodes)


def node_cost(graph: Graph, name: str, weight_bytes_per_param: float = 2) -> OpCost:
    """The cost of one node (see the module docstring for the conventions)."""
    t = graph[name]
    if not launches_kernel(t):
        return OpCost(name, 0.0, 0.0, 0.0, 0)
    srcs = [graph[s] for s in dict.fromkeys(t.srcs)]
    read = _bytes_read(t, srcs, weight_bytes_per_param)
    written = float(t.nbytes)
    if t.op == "SET_ROWS":
        written = float(srcs[0].nelements * DTYPE_BYTES[t.dtype])
    flops, blocks = _flops_and_blocks(t, srcs)
    if t.op == "MUL_MAT_ID":
        read += _expert_weight_bytes(t, srcs, weight_bytes_per_param)
    return OpCost(
        name,
        float(flops),
        float(read),
        written,
        max(1, int(blocks)),
        t.op in TENSOR_CORE_OPS,
        op_class(graph, name),
        _columns(t, srcs),
        t.nelements,
    )


#: Kernel families, in the order tables list them ("other": no family of its own).
OP_CLASSES = (
    "gemv",
    "gemm",
    "gather",
    "copy",
    "strided_copy",
    "concat",
    "set_rows",
    "elementwise",
    "norm",
    "rope",
    "conv",
    "gdn",
    "attention",
    "moe_matmul",
    "other",
)
_ELEMENTWISE_OPS = frozenset(
    {"ADD", "ADD1", "ADD_ID", "SUB", "MUL", "DIV", "SCALE", "CLAMP", "SQR", "SQRT", "LOG"}
    | {"UNARY", "GLU", "REPEAT", "FILL"}
)
_SINGLE_CLASS = {
    "GET_ROWS": "gather",
    "CONCAT": "concat",
    "SET_ROWS": "set_rows",
    "ROPE": "rope",
    "SSM_CONV": "conv",
    "GATED_DELTA_NET": "gdn",
    "FLASH_ATTN_EXT": "attention",
    "MUL_MAT_ID": "moe_matmul",
}


def op_class(graph: Graph, name: str) -> str:
    """The kernel family of node `name` (one of OP_CLASSES; "" when it launches nothing)."""
    t = graph[name]
    if not launches_kernel(t):
        return ""
    if t.op == "MUL_MAT":
        return "gemv" if _columns(t, [graph[s] for s in t.srcs]) <= _GEMV_MAX_COLUMNS else "gemm"
    if t.op in ("CPY", "CONT", "DUP"):
        return "copy" if graph[t.srcs[0]].is_contiguous else "strided_copy"
    if t.op in _ELEMENTWISE_OPS:
        return "elementwise"
    if t.op in _ROW_OPS and t.op != "ARGSORT":
        return "norm"
    return _SINGLE_CLASS.get(t.op, "other")


def _columns(t: Tensor, srcs: list[Tensor]) -> int:
    """The activation columns a node works on: a projection's input columns, else its output
    rows beyond the first dimension's (ggml's ne1·ne2·ne3 of the output)."""
    if t.op in ("MUL_MAT", "MUL_MAT_ID") and len(srcs) > 1:
        x = srcs[1]
        return max(1, x.nelements // max(1, x.shape[0]))
    return max(1, t.nelements // max(1, t.shape[0]))


def _element_bytes(t: Tensor, weight_bytes_per_param: float) -> float:
    return weight_bytes_per_param if t.kind is TensorKind.WEIGHT else DTYPE_BYTES[t.dtype]


def _bytes_read(t: Tensor, srcs: list[Tensor], weight_bytes_per_param: float) -> float:
    if t.op in ("CPY", "SET_ROWS"):  # the last source is the destination: written, not read
        srcs = srcs[:-1]
    total = 0.0
    for i, s in enumerate(srcs):
        if s.is_empty:
            continue
        if t.op == "GET_ROWS" and i == 0:  # only the gathered rows
            total += t.nelements * _element_bytes(s, weight_bytes_per_param)
        elif t.op == "MUL_MAT_ID" and i == 0:  # expert weights: counted per used expert
            continue
        elif s.kind is TensorKind.WEIGHT:
            total += s.nelements * weight_bytes_per_param
        else:
            total += s.nbytes
    return total


def _expert_weight_bytes(t: Tensor, srcs: list[Tensor], weight_bytes_per_param: float) -> float:
    weights = srcs[0]
    n_expert = weights.shape[2]
    used = expected_experts_used(n_expert, t.shape[1], t.shape[2] * t.shape[3])
    return weights.shape[0] * weights.shape[1] * used * weight_bytes_per_param


def expected_experts_used(n_expert: int, per_token: int, tokens: int) -> float:
    """Expected distinct experts when each token picks `per_token` of `n_expert` uniformly."""
    if n_expert <= 0:
        return 0.0
    return n_expert * (1 - (1 - min(per_token, n_expert) / n_expert) ** tokens)


def _flops_and_blocks(t: Tensor, srcs: list[Tensor]) -> tuple[float, float]:
    elements_blocks = math.ceil(t.nelements / _THREADS_PER_BLOCK)
    if t.op == "MUL_MAT":
        k = srcs[0].shape[0]
        n, m, batch = t.shape[0], t.shape[1], t.shape[2] * t.shape[3]
        return 2.0 * k * t.nelements, _gemm_blocks(n, m, batch, k)
    if t.op == "MUL_MAT_ID":
        k = srcs[0].shape[0]
        n, per_token, tokens = t.shape[0], t.shape[1], t.shape[2] * t.shape[3]
        experts = max(1.0, expected_experts_used(srcs[0].shape[2], per_token, tokens))
        rows_per_expert = per_token * tokens / experts
        if rows_per_expert <= _GEMV_MAX_COLUMNS:
            blocks: float = n * per_token * tokens
        else:
            blocks = _split_k(experts * _tiles(n) * _tiles(rows_per_expert), k)
        return 2.0 * k * t.nelements, blocks
    if t.op == "GATED_DELTA_NET":
        q, state = srcs[0], srcs[-1]
        s_k, s_v, heads, seqs = state.shape
        tokens_per_seq = q.shape[2]
        flops = GDN_FLOPS_PER_STATE_ELEMENT * s_k * s_v * heads * seqs * tokens_per_seq
        return float(flops), heads * seqs
    if t.op == "FLASH_ATTN_EXT":
        q, k = srcs[0], srcs[1]
        dim, kv = k.shape[0], k.shape[1]
        rows = q.shape[1] * q.shape[2] * q.shape[3]  # query tokens × heads × sequences
        dim_v = srcs[2].shape[0]
        flops = rows * kv * (2.0 * dim + 2.0 * dim_v + 5)
        blocks = q.shape[2] * q.shape[3] * math.ceil(q.shape[1] / 64) * math.ceil(kv / 256)
        return flops, blocks
    if t.op == "SSM_CONV":
        width = srcs[1].shape[0] if len(srcs) > 1 else srcs[0].shape[0]  # the kernel taps
        return 2.0 * width * t.nelements, elements_blocks
    if t.op == "ARGSORT":
        row = max(t.shape[0], 2)
        return t.nelements * math.log2(row), t.nrows
    if t.op == "UNARY":
        per = _UNARY_FLOPS.get(t.unary or "", 4)
        return float(per * t.nelements), elements_blocks
    per_element = _FLOPS_PER_ELEMENT.get(t.op, 1)
    counted = srcs[0].nelements if t.op == "SUM_ROWS" and srcs else t.nelements
    if t.op in _ROW_OPS:
        return float(per_element * counted), srcs[0].nrows if srcs else t.nrows
    if t.op == "SET_ROWS":
        return 0.0, math.ceil(srcs[0].nelements / _THREADS_PER_BLOCK)
    return float(per_element * counted), elements_blocks


def _tiles(n: float) -> int:
    return max(1, math.ceil(n / _GEMM_TILE))


def _gemm_blocks(n: int, m: int, batch: int, k: int) -> int:
    if m <= _GEMV_MAX_COLUMNS:
        return n * batch
    return _split_k(_tiles(n) * _tiles(m) * batch, k)


def _split_k(tiles: float, k: int) -> int:
    """Skinny GEMMs split K (as cuBLAS does) until about one wave of blocks is in flight,
    never below 256 of K per block."""
    splits = max(1, min(math.ceil(_SPLIT_K_TARGET_BLOCKS / tiles), math.ceil(k / 256)))
    return math.ceil(tiles) * splits
