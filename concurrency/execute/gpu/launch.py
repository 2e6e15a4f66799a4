"""The launch plan: everything the GPU executor will do, as plain values, with no CuPy.

`build_launch_plan(graph, schedule, plan)` decides, for every node in graph order, the stream it
runs on (the schedule's), the events it waits for and records (the schedule's waits), and the
kernels it launches with their arguments expressed as buffer + byte offset, ggml shape and byte
strides. Every planned tensor is addressed at `arena + plan.address(tensor)`: the GPU sees exactly
the memory reuse the plan decided (so an unsafe plan races on the GPU just as the hazard checker
says). Weights, caches and states live in their own buffers (`weight:<leaf>`, `state:<leaf>`),
as in llama.cpp; the activations that cuBLASLt needs in the weight's type go to a `scratch`
buffer outside the arena, one region per node (never shared by two streams).

A thin CuPy runner (`runner.py`) turns this value into device buffers, kernel launches on streams
and a CUDA graph; CI tests assert on the value itself without a GPU. Any plan is accepted, unsafe
ones included: replaying those is how their races show on the GPU.

One graph node is one kernel (two for a cuBLASLt projection that first casts its activations).
kernels/ also has fused kernels (RMSNorm + weight, L2 norm, gated RMSNorm, conv + SiLU, the GDN
gates), tested against the ops they fuse, which the lowering does not pick yet: a fused kernel
reads its first op's sources at its last op's node, later than the graph says, so the memory
plan must see the fused node first (fusion belongs in the graph, before planning).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from concurrency.errors import LaceError
from concurrency.graph.ir import DTYPE_BYTES, VIEW_OPS, Graph, Tensor, TensorKind
from concurrency.graph.schedule import Schedule
from concurrency.memory.plan import MemoryPlan

#: Storage types the executor knows (ggml's plus bf16 for weights) and their element bytes.
STORAGE_BYTES: Mapping[str, int] = MappingProxyType(
    {"f32": 4, "f16": 2, "bf16": 2, "i32": 4, "i64": 8}
)
WEIGHT_DTYPES = ("f32", "f16", "bf16")
#: How projections (MUL_MAT) run: "auto" = LACE's GEMV for ≤ GEMV_MAX_COLUMNS activation
#: columns, cuBLASLt (nvmath-python) above; "nvmath" = always cuBLASLt; "custom" = LACE's
#: kernels only (GEMV, or the tiled GEMM above GEMV_MAX_COLUMNS), no nvmath needed.
MATMUL_MODES = ("auto", "nvmath", "custom")
#: Which gated-delta-rule kernel: "auto" = recurrent for one token, chunked for prompts (as the
#: NumPy reference and llama.cpp's fused op choose); or force one form for every node.
#: "chunked" computes its products on the tensor cores in split TF32 (3xTF32: fp32-accurate,
#: gdn-reference §5.4's 1e-5); "chunked_tf32" in plain TF32 (≈1e-3, §5.4's 5e-3 gate), the
#: speed of a single tensor-core pass, for head sizes up to 128.
GDN_FORMS = (
    "auto",
    "recurrent",
    "recurrent_l8",
    "recurrent_l16",
    "recurrent_l32",
    "chunked",
    "chunked_tf32",
)
#: Up to this many activation columns a projection is a weight-streaming GEMV: LACE's kernel
#: reads each weight row once with 16-byte loads and the f32 activations directly (ggml strides,
#: no conversion pass), which is the memory floor of a decode step at one column. Its time grows
#: with every further column while cuBLASLt's tensor-core GEMM stays near the weight read: on
#: the H200 (`lace bench --matmul auto|nvmath`, 27B widths, five streams, bf16) the 4-layer
#: stack took 982 / 1128 / 1585 / 2741 µs at B = 1 / 2 / 4 / 8 through the GEMV and
#: 1122 / 1149 / 1206 / 1289 µs through cuBLASLt; the GDN layer at B = 2 was 123 against 117 µs.
#: Two columns is where they cross.
GEMV_MAX_COLUMNS = 2
SCRATCH_ALIGN = 256
ARENA = "arena"
SCRATCH = "scratch"


@dataclass(frozen=True)
class Ptr:
    """A device address: a buffer of the launch plan and a byte offset into it."""

    buffer: str
    offset_bytes: int


@dataclass(frozen=True)
class TensorRef:
    """A tensor as a kernel sees it: where it lives, its ggml shape and its DEVICE byte strides
    in its storage type (a weight stored as bf16 has half the f32 graph strides)."""

    name: str
    ptr: Ptr
    shape: tuple[int, int, int, int]
    strides_bytes: tuple[int, int, int, int]
    dtype: str

    @property
    def nbytes(self) -> int:
        """Bytes from the first to one past the last element (ggml_nbytes on device strides)."""
        if any(n == 0 for n in self.shape):
            return 0
        return STORAGE_BYTES[self.dtype] + sum(
            (n - 1) * s for n, s in zip(self.shape, self.strides_bytes, strict=True)
        )

    @property
    def ncols(self) -> int:
        """ne1·ne2·ne3: the rows of ggml (columns of a projection's activation)."""
        return self.shape[1] * self.shape[2] * self.shape[3]


Arg = tuple[str, object]  # ("ptr", Ptr) | ("i64" | "i32", int) | ("f32" | "f64", float)


@dataclass(frozen=True)
class KernelLaunch:
    """One launch of an `extern "C"` kernel of kernels/<source>."""

    kernel: str
    source: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_bytes: int
    args: tuple[Arg, ...]

    def pointers(self) -> Iterator[Ptr]:
        for kind, value in self.args:
            if kind == "ptr":
                assert isinstance(value, Ptr)
                yield value


@dataclass(frozen=True)
class MatmulLaunch:
    """D[n, m] = Σ_k X[n, k] · W[m, k] through cuBLASLt (nvmath-python), row-major views:
    X (n × k, row stride x_row_bytes, unit stride along k), W (m × k, row stride w_row_bytes),
    D (n × m, row stride d_row_bytes, f32), all at fixed addresses (planned once, captured)."""

    node: str
    m: int
    n: int
    k: int
    x: Ptr
    x_row_bytes: int
    w: Ptr
    w_row_bytes: int
    d: Ptr
    d_row_bytes: int
    dtype: str  # the type of X and W (D is f32)

    def pointers(self) -> Iterator[Ptr]:
        yield from (self.x, self.w, self.d)


Launch = KernelLaunch | MatmulLaunch


@dataclass(frozen=True)
class NodeLaunch:
    """What one graph node does on the GPU: wait for `waits` (indices of nodes on other
    streams, each recorded as an event after that node), launch `launches` on `stream`, then
    record its own event when `record` (a later node on another stream waits for it)."""

    index: int
    node: str
    op: str
    stream: int
    waits: tuple[int, ...]
    record: bool
    launches: tuple[Launch, ...]


@dataclass(frozen=True)
class BufferSpec:
    """A device buffer: the arena, one per external leaf (weight or state), or the scratch."""

    name: str
    kind: str  # "arena" | "weight" | "state" | "scratch"
    nbytes: int
    tensor: str | None = None  # the leaf a weight/state buffer holds
    dtype: str = "u8"  # storage type of the leaf's elements (weights may be cast)


@dataclass(frozen=True)
class LaunchPlan:
    """The GPU executor's program for one (graph, schedule, plan) and weight type."""

    nodes: tuple[NodeLaunch, ...]
    buffers: Mapping[str, BufferSpec]
    tensors: Mapping[str, TensorRef]
    n_streams: int
    weight_dtype: str
    matmul: str
    gdn: str
    graph: Graph = field(compare=False, repr=False)
    schedule: Schedule = field(compare=False, repr=False)
    plan: MemoryPlan = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "buffers", MappingProxyType(dict(self.buffers)))
        object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))

    @property
    def side_streams(self) -> tuple[int, ...]:
        """Streams other than the main one (0) that run at least one node: each waits for the
        fork event at the start and is joined back into stream 0 at the end (ggml's pattern,
        and what stream capture needs to end on the origin stream)."""
        return tuple(sorted({n.stream for n in self.nodes} - {0}))

    def kernels(self) -> frozenset[tuple[str, str]]:
        """(source file, kernel name) of every kernel the plan launches."""
        return frozenset(
            (launch.source, launch.kernel)
            for node in self.nodes
            for launch in node.launches
            if isinstance(launch, KernelLaunch)
        )

    def matmuls(self) -> tuple[MatmulLaunch, ...]:
        return tuple(
            launch
            for node in self.nodes
            for launch in node.launches
            if isinstance(launch, MatmulLaunch)
        )

    def result_keys(self) -> tuple[str, ...]:
        """What a run returns (as `numpy_arena.reference_run`): graph outputs, then states."""
        g = self.graph
        outs = [n for n in g.nodes if g[n].is_output]
        states = [n for n in g.leafs if g[n].kind is TensorKind.STATE]
        return (*outs, *states)


# ---------------------------------------------------------------------------- weights
def cast_weights(graph: Graph) -> frozenset[str]:
    """The weight leaves stored in the executor's weight type (f16/bf16 when asked): those read
    only as the matrix of a projection (src0 of MUL_MAT, MUL_MAT_ID) or an embedding table
    (src0 of GET_ROWS). Norm weights, biases, ssm_a and the conv kernel stay f32, as in GGUF
    files. The reference rounds exactly these (`check.reference_inputs`)."""
    matrix_ops = ("MUL_MAT", "MUL_MAT_ID", "GET_ROWS")
    out = set()
    for name in graph.leafs:
        t = graph[name]
        if t.kind is not TensorKind.WEIGHT or t.dtype != "f32":
            continue
        users = graph.consumers[name]
        if users and all(graph[u].op in matrix_ops and graph[u].srcs[0] == name for u in users):
            out.add(name)
    return frozenset(out)


# ---------------------------------------------------------------------------- locations
def _storage_dtype(graph: Graph, base: str, cast: frozenset[str], weight_dtype: str) -> str:
    return weight_dtype if base in cast else graph[base].dtype


def _scaled(value: int, stored: int, ggml: int, what: str) -> int:
    if value * stored % ggml:
        raise LaceError(f"{what}: offset/stride {value} is not a whole number of elements")
    return value * stored // ggml


def tensor_refs(
    graph: Graph, plan: MemoryPlan, weight_dtype: str
) -> tuple[dict[str, TensorRef], dict[str, BufferSpec]]:
    """Where every non-empty tensor lives on the device, and the buffers that hold them.

    Planned tensors (graph.planned and their views) are at `arena + plan.address(name)`;
    external ones in their base leaf's own buffer (`weight:` or `state:`), at the view offset
    scaled to the storage type."""
    cast = cast_weights(graph)
    refs: dict[str, TensorRef] = {}
    buffers: dict[str, BufferSpec] = {
        ARENA: BufferSpec(ARENA, "arena", max(int(plan.arena_bytes), 1))
    }
    for name, t in graph.tensors.items():
        base = graph.base(name)
        b = graph[base]
        if b.external:
            kind = "weight" if b.kind is TensorKind.WEIGHT else "state"
            buf = f"{kind}:{base}"
            stored = _storage_dtype(graph, base, cast, weight_dtype)
            s_bytes, g_bytes = STORAGE_BYTES[stored], DTYPE_BYTES[b.dtype]
            if buf not in buffers:
                nbytes = _scaled(b.nbytes, s_bytes, g_bytes, base) if b.nbytes else 1
                buffers[buf] = BufferSpec(buf, kind, nbytes, base, stored)
            if t.is_empty:
                continue
            offset = _scaled(t.view_offset_bytes, s_bytes, g_bytes, name)
            strides = tuple(_scaled(s, s_bytes, g_bytes, name) for s in t.strides_bytes)
            refs[name] = TensorRef(name, Ptr(buf, offset), t.shape, strides, stored)  # type: ignore[arg-type]
            continue
        if t.is_empty:
            continue
        addr = plan.address(graph, name)
        if addr is None:
            raise LaceError(
                f"the {plan.policy!r} plan does not place tensor {name!r}; plan this graph "
                "with plan_memory (or engine_flow_plan) before running it"
            )
        if addr < 0 or addr + t.nbytes > plan.arena_bytes:
            raise LaceError(
                f"tensor {name!r} at [{addr}, {addr + t.nbytes}) lies outside the "
                f"{plan.arena_bytes}-byte arena of plan {plan.policy!r}"
            )
        refs[name] = TensorRef(name, Ptr(ARENA, addr), t.shape, t.strides_bytes, t.dtype)
    return refs, buffers


# ---------------------------------------------------------------------------- the plan
def build_launch_plan(
    graph: Graph,
    schedule: Schedule,
    plan: MemoryPlan,
    *,
    weight_dtype: str = "f32",
    matmul: str = "auto",
    gdn: str = "auto",
) -> LaunchPlan:
    """The GPU program for `graph` run under `schedule` with `plan`'s offsets.

    weight_dtype: "f32", "f16" (what llama.cpp runs) or "bf16" for the projection weights;
    matmul: one of MATMUL_MODES; gdn: one of GDN_FORMS. The plan must be one of `graph`'s
    plans; the schedule may be another than the plan's own (running a plan under another
    schedule is how its fragility shows), as for the NumPy arena executor."""
    from concurrency.execute.gpu import lowering

    if weight_dtype not in WEIGHT_DTYPES:
        raise LaceError(
            f"weight_dtype must be one of {', '.join(WEIGHT_DTYPES)}, not {weight_dtype!r}"
        )
    if matmul not in MATMUL_MODES:
        raise LaceError(f"matmul must be one of {', '.join(MATMUL_MODES)}, not {matmul!r}")
    if gdn not in GDN_FORMS:
        raise LaceError(f"gdn must be one of {', '.join(GDN_FORMS)}, not {gdn!r}")
    plan.bound_to(graph, schedule)
    refs, buffers = tensor_refs(graph, plan, weight_dtype)
    scratch = lowering.Scratch()
    options = lowering.Options(matmul=matmul, gdn=gdn)
    recorded = {j for waits in schedule.waits for j in waits}
    nodes = []
    for i, name in enumerate(graph.nodes):
        t = graph[name]
        launches: tuple[Launch, ...] = ()
        if not (t.op in VIEW_OPS or t.is_empty):
            launches = lowering.lower(graph, t, refs, scratch, options)
        nodes.append(
            NodeLaunch(
                index=i,
                node=name,
                op=t.op,
                stream=schedule.stream[i],
                waits=tuple(schedule.waits[i]),
                record=i in recorded,
                launches=launches,
            )
        )
    if scratch.nbytes:
        buffers[SCRATCH] = BufferSpec(SCRATCH, "scratch", scratch.nbytes)
    return LaunchPlan(
        nodes=tuple(nodes),
        buffers=buffers,
        tensors=refs,
        n_streams=max(schedule.n_streams, 1),
        weight_dtype=weight_dtype,
        matmul=matmul,
        gdn=gdn,
        graph=graph,
        schedule=schedule,
        plan=plan,
    )


def node_touches(graph: Graph, t: Tensor) -> tuple[str, ...]:
    """The tensors a node may touch: itself and its sources (a kernel touching anything else
    would bypass the plan)."""
    return (t.name, *t.srcs)


def align_up(n: int, a: int) -> int:
    return int(math.ceil(n / a) * a)
