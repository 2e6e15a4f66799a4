"""Each ggml op as the kernel launches that compute it (pure: names, grids and arguments).

One function per op family, looked up by `lower`. A kernel's tensor argument is nine values
(pointer, ne0..ne3, nb0..nb3) in the order `kernels/common.cuh`'s `TEN(x)` declares; the
semantics of every op are `concurrency.execute.numpy_ops`'s, and each kernel file's header
states its shape legend and launch constraints, which the grids here follow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from concurrency.errors import LaceError
from concurrency.execute.gpu.launch import (
    GEMV_MAX_COLUMNS,
    SCRATCH,
    SCRATCH_ALIGN,
    STORAGE_BYTES,
    Arg,
    KernelLaunch,
    Launch,
    MatmulLaunch,
    Ptr,
    TensorRef,
    align_up,
)
from concurrency.execute.numpy_ops import ROPE_FREQ_BASE
from concurrency.graph.ir import Graph, Tensor

#: Threads per block of the 1-D grid-stride kernels, and the most blocks they get.
EW_BLOCK = 256
EW_MAX_BLOCKS = 8192
#: The gated delta rule (kernels/gated_delta.cu): chunk length, the value columns a block of the
#: chunked state pass and output kernels owns, the recurrent kernels' block and the value columns
#: it covers (8 lanes per column with 16-byte accesses, else a warp per column), the largest
#: head size of the tensor-core chunked kernels (DKP = dk rounded up to 32, 64 or 128), and
#: the columns per block of the one-kernel FFMA form that takes larger heads.
GDN_CHUNK = 64
GDN_TILE = 64
GDN_CHUNK_THREADS = 256
GDN_REC_THREADS = 128
#: Lanes per value column of the 16-byte recurrent kernels when the form does not name them
#: (16: on the H200 within 5 % of 8 at B = 1 and 4, 9 % faster at B = 16 and 64, scripts/
#: gdn_lanes.py; 32 is slower everywhere), and the 4-key pieces per lane each lane count is
#: compiled for (gated_delta.cu).
GDN_REC_LANES = 16
GDN_REC_PIECES = {8: (1, 2, 4, 8), 16: (1, 2, 4), 32: (1, 2)}
#: The recurrent forms of launch.GDN_FORMS and the lanes per column each runs.
GDN_REC_FORM_LANES = {
    "recurrent": GDN_REC_LANES,
    "recurrent_l8": 8,
    "recurrent_l16": 16,
    "recurrent_l32": 32,
}
GDN_REC_SCALAR_COLUMNS = GDN_REC_THREADS // 32
GDN_TC_MAX_DK = 128
GDN_COLS = 16
ATTN_WARPS = 4
#: Flash-decoding: split the keys while fewer than this many blocks would run (two per SM of a
#: 132-SM H200), into spans of at least ATTN_SPAN_KEYS keys.
ATTN_MIN_BLOCKS = 264
ATTN_SPAN_KEYS = 32
GEMV_WARPS = 8
#: mul_mat_vec16: rows per team (R in gemv.cu), warps per block, column variants, and the
#: fewest blocks worth launching (eight per SM of a 132-SM H200, about two waves of resident
#: blocks) before a team takes more warps: small blocks keep the last wave's tail short (a
#: block of 16 rows of 10 KB takes ~5 round trips alone), wider teams split K instead.
GEMV16_ROWS = 2
GEMV16_WARPS = 8
GEMV16_COLUMNS = (1, 2, 4, 8)
GEMV16_MIN_BLOCKS = 1056
MAX_SHARED_BYTES = 227 * 1024  # Hopper's opt-in limit per block
ARGSORT_MAX = 4096


@dataclass(frozen=True)
class Options:
    matmul: str = "auto"
    gdn: str = "auto"


@dataclass
class Scratch:
    """Per-node scratch regions outside the arena (never reused: two streams never share one)."""

    nbytes: int = 0
    regions: dict[str, tuple[int, int]] = field(default_factory=dict)

    def take(self, node: str, nbytes: int) -> Ptr:
        offset = self.nbytes
        self.regions[node] = (offset, nbytes)
        self.nbytes = align_up(offset + nbytes, SCRATCH_ALIGN)
        return Ptr(SCRATCH, offset)


Refs = Mapping[str, TensorRef]


def ten(ref: TensorRef) -> tuple[Arg, ...]:
    """The nine kernel arguments of a tensor: pointer, ne0..ne3, nb0..nb3 (bytes)."""
    return (
        ("ptr", ref.ptr),
        *(("i64", int(n)) for n in ref.shape),
        *(("i64", int(b)) for b in ref.strides_bytes),
    )


def _ew_grid(n: int) -> tuple[int, int, int]:
    return (max(1, min(math.ceil(n / EW_BLOCK), EW_MAX_BLOCKS)), 1, 1)


#: Row kernels (norms, softmax, sums: one block per row) use up to 1024 threads per block while
#: there are fewer rows than this (a decode step's single 5120-wide row would otherwise take 20
#: serial passes of 256 threads), else 256.
FEW_ROWS = 264


def _row_block(ne0: int, rows: int = FEW_ROWS) -> tuple[int, int, int]:
    cap = 1024 if rows < FEW_ROWS else 256
    return (min(cap, max(32, 32 * math.ceil(ne0 / 32))), 1, 1)


def _kernel(
    name: str,
    source: str,
    grid: tuple[int, int, int],
    block: tuple[int, int, int],
    args: tuple[Arg, ...],
    shared: int = 0,
) -> KernelLaunch:
    return KernelLaunch(name, source, grid, block, shared, args)


def _need(refs: Refs, t: Tensor, name: str) -> TensorRef:
    ref = refs.get(name)
    if ref is None:
        raise LaceError(f"node {t.name!r} ({t.op}) reads the empty or unknown tensor {name!r}")
    return ref


def _dtypes(t: Tensor, tensors: tuple[TensorRef, ...], allowed: tuple[str, ...]) -> None:
    for ref in tensors:
        if ref.dtype not in allowed:
            raise LaceError(
                f"node {t.name!r} ({t.op}): tensor {ref.name!r} is {ref.dtype}; the GPU "
                f"executor's kernel takes {'/'.join(allowed)}"
            )


def _elementwise(kernel: str, source: str = "elementwise.cu") -> Callable:
    def lower(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
        d = _need(refs, t, t.name)
        srcs = [_need(refs, t, s) for s in t.srcs]
        _dtypes(t, (d, *srcs), ("f32",))
        args = ten(d)
        for s in srcs:
            args += ten(s)
        return (_kernel(kernel, source, _ew_grid(t.nelements), (EW_BLOCK, 1, 1), args),)

    return lower


def _binary(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
    a, b = (_need(refs, t, s) for s in t.srcs[:2])
    if any(n % m for n, m in zip(a.shape, b.shape, strict=True)):
        raise LaceError(f"node {t.name!r}: {b.shape} does not broadcast to {a.shape}")
    return _elementwise(f"binary_{t.op.lower()}_f32")(g, t, refs, scratch, opt)


def _unary(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
    fn = t.unary
    if fn not in ("silu", "sigmoid", "softplus"):
        raise LaceError(f"unary {fn!r} (node {t.name!r}) has no GPU kernel")
    return _elementwise(f"unary_{fn}_f32")(g, t, refs, scratch, opt)


def _scale(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
    d, a = _need(refs, t, t.name), _need(refs, t, t.srcs[0])
    _dtypes(t, (d, a), ("f32",))
    args = (*ten(d), *ten(a), ("f32", float(t.params[0])))  # type: ignore[arg-type]
    return (_kernel("scale_f32", "elementwise.cu", _ew_grid(t.nelements), (EW_BLOCK, 1, 1), args),)


def _clamp(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
    d, a = _need(refs, t, t.name), _need(refs, t, t.srcs[0])
    _dtypes(t, (d, a), ("f32",))
    lo, hi = (float(x) for x in t.params)  # type: ignore[arg-type]
    args = (*ten(d), *ten(a), ("f32", lo), ("f32", hi))
    return (_kernel("clamp_f32", "elementwise.cu", _ew_grid(t.nelements), (EW_BLOCK, 1, 1), args),)


def _glu(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
    if t.params[0] != "swiglu" or len(t.srcs) != 2:
        raise LaceError(f"GLU {t.params[0]!r} (node {t.name!r}) has no GPU kernel")
    return _elementwise("swiglu_f32")(g, t, refs, scratch, opt)


def _repeat(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
    d, a = _need(refs, t, t.name), _need(refs, t, t.srcs[0])
    if STORAGE_BYTES[d.dtype] != 4 or d.dtype != a.dtype:
        raise LaceError(f"REPEAT of {a.dtype} (node {t.name!r}) has no GPU kernel")
    args = (*ten(d), *ten(a))
    return (_kernel("repeat_4b", "elementwise.cu", _ew_grid(t.nelements), (EW_BLOCK, 1, 1), args),)


def _rows(kernel: str, source: str) -> Callable:
    def lower(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
        d, x = _need(refs, t, t.name), _need(refs, t, t.srcs[0])
        _dtypes(t, (d, x), ("f32",))
        args = (*ten(d), *ten(x))
        if t.op == "RMS_NORM":
            args += (("f32", float(t.params[0])),)  # type: ignore[arg-type]
        elif t.params:
            raise LaceError(
                f"{t.op} with parameters {t.params} (node {t.name!r}) has no GPU kernel"
            )
        block = _row_block(x.shape[0], x.ncols)
        return (_kernel(kernel, source, (x.ncols, 1, 1), block, args),)

    return lower


_CPY_CONVERT = {("f32", "f32"), ("f32", "f16"), ("f32", "bf16"), ("f16", "f32"), ("bf16", "f32")}


#: Per-element work of the vectorised copy paths (copy.cu): elements per thread of a contiguous
#: CPY, of a GET_ROWS/SET_ROWS row; rows shorter than SAME_SHAPE_MIN_ROW copy per element.
CPY_VECTOR = 8
ROW_VECTOR = 4
SAME_SHAPE_MIN_ROW = 64
MAX_GRID_Y = 65535
ROW_MAX_BLOCKS_X = 1024


def contiguous(ref: TensorRef) -> bool:
    """ggml_is_contiguous on the device strides (extent-1 dimensions may have any stride)."""
    expected = STORAGE_BYTES[ref.dtype]
    for n, stride in zip(ref.shape, ref.strides_bytes, strict=True):
        if n != 1 and stride != expected:
            return False
        expected *= n
    return True


def cpy_launch(d: TensorRef, s: TensorRef) -> KernelLaunch:
    """Element i of s (ggml order) to element i of d, converting the type when they differ; the
    grid fits the path copy.cu will take (contiguous 16-byte pieces, rows × columns for equal
    shapes, or per element)."""
    if (s.dtype, d.dtype) in _CPY_CONVERT:
        name = f"cpy_{s.dtype}_{d.dtype}"
    elif s.dtype == d.dtype:
        name = f"cpy_{STORAGE_BYTES[d.dtype]}b"
    else:
        raise LaceError(f"copy from {s.dtype} to {d.dtype} (tensor {d.name!r}) has no GPU kernel")
    n = math.prod(s.shape)
    args = (*ten(d), *ten(s))
    aligned = d.ptr.offset_bytes % 16 == 0 and s.ptr.offset_bytes % 16 == 0
    if contiguous(d) and contiguous(s) and aligned:
        return _kernel(name, "copy.cu", _ew_grid(math.ceil(n / CPY_VECTOR)), (EW_BLOCK, 1, 1), args)
    if d.shape == s.shape and s.shape[0] >= SAME_SHAPE_MIN_ROW:
        return _kernel(name, "copy.cu", _row_grid(s.shape[0], s.ncols, 1), (EW_BLOCK, 1, 1), args)
    return _kernel(name, "copy.cu", _ew_grid(n), (EW_BLOCK, 1, 1), args)


def _row_grid(ne0: int, rows: int, per_thread: int) -> tuple[int, int, int]:
    """grid.x over a row's columns (`per_thread` elements per thread), grid.y over the rows."""
    x = max(1, min(math.ceil(ne0 / (per_thread * EW_BLOCK)), ROW_MAX_BLOCKS_X))
    return (x, max(1, min(rows, MAX_GRID_Y)), 1)


def _rows_launch(name: str, ne0: int, rows: int, args: tuple[Arg, ...]) -> KernelLaunch:
    block = (min(EW_BLOCK, max(32, 32 * math.ceil(ne0 / (ROW_VECTOR * 32)))), 1, 1)
    grid = _row_grid(ne0, rows, ROW_VECTOR)
    return _kernel(name, "copy.cu", grid, block, args)


def _cpy(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
    d, s = _need(refs, t, t.name), _need(refs, t, t.srcs[0])
    if math.prod(d.shape) != math.prod(s.shape):
        raise LaceError(
            f"node {t.name!r}: copying {s.shape} into {d.shape} (element counts differ)"
        )
    return (cpy_launch(d, s),)


def _concat(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
    d, a, b = (_need(refs, t, n) for n in (t.name, *t.srcs))
    _dtypes(t, (d, a, b), ("f32",))
    args = (*ten(d), *ten(a), *ten(b), ("i32", int(t.params[0])))  # type: ignore[call-overload]
    return (_kernel("concat_f32", "copy.cu", _ew_grid(t.nelements), (EW_BLOCK, 1, 1), args),)


def _get_rows(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
    d, s, idx = (_need(refs, t, n) for n in (t.name, *t.srcs))
    name = f"get_rows_{s.dtype}_{idx.dtype}"
    if d.dtype != "f32" or name not in _GET_ROWS:
        raise LaceError(
            f"GET_ROWS from {s.dtype} by {idx.dtype} (node {t.name!r}) has no GPU kernel"
        )
    if idx.shape[3] != 1:
        raise LaceError(f"GET_ROWS with 4-D indices (node {t.name!r}) is not supported")
    args = (*ten(d), *ten(s), *ten(idx))
    return (_rows_launch(name, d.shape[0], d.ncols, args),)


_GET_ROWS = {"get_rows_f32_i32", "get_rows_f32_i64", "get_rows_f16_i32", "get_rows_bf16_i32"}
_SET_ROWS = {
    "set_rows_f32_i64",
    "set_rows_f16_i64",
    "set_rows_bf16_i64",
    "set_rows_f32_i32",
    "set_rows_f16_i32",
}


def _set_rows(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
    d = _need(refs, t, t.name)
    s, idx = _need(refs, t, t.srcs[0]), _need(refs, t, t.srcs[1])
    name = f"set_rows_{d.dtype}_{idx.dtype}"
    if s.dtype != "f32" or name not in _SET_ROWS:
        raise LaceError(
            f"SET_ROWS into {d.dtype} by {idx.dtype} (node {t.name!r}) has no GPU kernel"
        )
    args = (*ten(d), *ten(s), *ten(idx))
    return (_rows_launch(name, s.shape[0], s.ncols, args),)


def _ssm_conv(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
    d, sx, w = (_need(refs, t, n) for n in (t.name, *t.srcs))
    _dtypes(t, (d, sx, w), ("f32",))
    args = (*ten(d), *ten(sx), *ten(w))
    return (_kernel("ssm_conv_f32", "conv.cu", _ew_grid(t.nelements), (EW_BLOCK, 1, 1), args),)


def gdn_chunked_shared_bytes(dk: int) -> int:
    """Dynamic shared memory of the one-kernel FFMA chunked form (gdn_chunked_f32, dk > 128)."""
    c, ct = GDN_CHUNK, GDN_COLS
    floats = 2 * c * (dk + 1) + 2 * c * (c + 1) + dk * ct + 3 * c * ct + 3 * c
    return 4 * floats


def gdn_padded_dk(dk: int) -> int:
    """DKP: the head size the tensor-core chunked kernels compute with (zero-padded)."""
    return next(p for p in (32, 64, 128) if p >= dk)


def gdn_chunk_shared_bytes(dkp: int) -> dict[str, int]:
    """Dynamic shared memory of the three tensor-core chunked kernels (gated_delta.cu's layout:
    K̂ rows with leading dimension DKP + 4 or + 8, 64×64 matrices with 68, 64-column tiles with
    72, as each operand's fragment reads need for conflict-free banks)."""
    c, ldk, ldx, ldt, ldv = GDN_CHUNK, dkp + 4, dkp + 8, 68, 72
    prep = max(c * ldk, 2 * c * ldt) + 2 * c * ldx + 16 * 52 + 3 * c
    state = c * ldk + c * ldx + dkp * ldv + 2 * c * ldv + 2 * c
    out = c * ldk + max(c * ldk, dkp * ldv) + c * ldt + c * ldv + 2 * c
    return {"prep": 4 * prep, "state": 4 * state, "out": 4 * out}


@dataclass(frozen=True)
class GdnScratch:
    """The chunked form's intermediates, f32, in the node's scratch region (outside the arena,
    like a cuBLAS workspace): γ [n_seq][H_v][NC][64], Wm [..][64][DKP], U (V_new after the
    state pass) [..][64][DVP] and the state entering each chunk [..][DKP][DVP]."""

    gam: Ptr
    wm: Ptr
    u: Ptr
    states: Ptr
    nbytes: int

    @classmethod
    def plan(cls, scratch: Scratch, node: str, heads: int, dkp: int, dvp: int) -> GdnScratch:
        sizes = [4 * heads * n for n in (GDN_CHUNK, GDN_CHUNK * dkp, GDN_CHUNK * dvp, dkp * dvp)]
        offsets, total = [], 0
        for size in sizes:
            offsets.append(total)
            total = align_up(total + size, SCRATCH_ALIGN)
        base = scratch.take(node, total)
        ptrs = [Ptr(base.buffer, base.offset_bytes + o) for o in offsets]
        return cls(*ptrs, nbytes=total)


def _rows16(ref: TensorRef) -> bool:
    """Unit stride along ne0 and 16-byte aligned rows everywhere (gated_delta.cu's rows16)."""
    return (
        ref.strides_bytes[0] == 4
        and ref.ptr.offset_bytes % 16 == 0
        and all(b % 16 == 0 for b in ref.strides_bytes[1:])
    )


def _gated_delta_net(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
    if t.params and int(t.params[0]) != 1:  # type: ignore[call-overload]
        raise LaceError(f"GATED_DELTA_NET with {t.params[0]} state snapshots has no GPU kernel")
    d = _need(refs, t, t.name)
    q, k, v, gate, beta, state = (_need(refs, t, s) for s in t.srcs)
    _dtypes(t, (d, q, k, v, gate, beta, state), ("f32",))
    dk, hk, n_tok, n_seq = q.shape
    dv, hv = v.shape[0], v.shape[1]
    if hv % hk:
        raise LaceError(
            f"node {t.name!r}: value heads ({hv}) must be a multiple of key heads ({hk})"
        )
    if dk > 256 or dv > 1 << 20:
        raise LaceError(f"node {t.name!r}: head size {dk} exceeds the GPU kernel's 256")
    if d.strides_bytes != (
        4,
        4 * d.shape[0],
        4 * d.shape[0] * d.shape[1],
        4 * math.prod(d.shape[:3]),
    ):
        raise LaceError(f"node {t.name!r}: the GATED_DELTA_NET result must be contiguous")
    tensors = (*ten(d), *ten(q), *ten(k), *ten(v), *ten(gate), *ten(beta), *ten(state))
    q_scale = ("f32", 1.0 / math.sqrt(dk))
    form = opt.gdn if opt.gdn != "auto" else ("recurrent" if n_tok == 1 else "chunked")
    if form in GDN_REC_FORM_LANES:
        out_values = dv * hv * n_tok * n_seq
        vec = (
            dk % 4 == 0
            and all(_rows16(r) for r in (q, k, state))
            and d.ptr.offset_bytes % 16 == 0
            and out_values % 4 == 0
        )
        lanes = GDN_REC_FORM_LANES[form]
        pieces = [p for p in GDN_REC_PIECES[lanes] if 4 * lanes * p >= dk]
        if vec and pieces:
            nv = pieces[0]
            suffix = "" if lanes == 8 else f"_l{lanes}"
            name, cols = f"gdn_recurrent_v{nv}{suffix}", GDN_REC_THREADS // lanes
        else:
            name, cols = f"gdn_recurrent_s{1 if dk <= 128 else 2}", GDN_REC_SCALAR_COLUMNS
        grid = (math.ceil(dv / cols), hv, n_seq)
        block = (GDN_REC_THREADS, 1, 1)
        return (_kernel(name, "gated_delta.cu", grid, block, (*tensors, q_scale)),)
    if dk > GDN_TC_MAX_DK:
        if form == "chunked_tf32":
            raise LaceError(
                f"node {t.name!r}: gdn='chunked_tf32' takes head sizes up to {GDN_TC_MAX_DK}, "
                f"not {dk}; use gdn='chunked'"
            )
        shared = gdn_chunked_shared_bytes(dk)
        grid = (math.ceil(dv / GDN_COLS), hv, n_seq)
        launch = _kernel(
            "gdn_chunked_f32", "gated_delta.cu", grid, (256, 1, 1), (*tensors, q_scale), shared
        )
        return (launch,)
    return _gdn_chunked(t, scratch, form == "chunked_tf32", d, q, k, v, gate, beta, state)


def _gdn_chunked(
    t: Tensor,
    scratch: Scratch,
    tf32: bool,
    d: TensorRef,
    q: TensorRef,
    k: TensorRef,
    v: TensorRef,
    gate: TensorRef,
    beta: TensorRef,
    state: TensorRef,
) -> tuple[KernelLaunch, ...]:
    """The tensor-core chunked form: prep (per chunk), state (the pass over chunks, per 64
    value columns), out (per chunk), in this order on the node's stream, with their
    intermediates in the node's scratch region. The node still reads only its sources and
    writes only its packed result, so the memory plan's reuse of them is unchanged."""
    dk, _, n_tok, n_seq = q.shape
    dv, hv = v.shape[0], v.shape[1]
    dkp = gdn_padded_dk(dk)
    if tf32 and dkp != GDN_TC_MAX_DK:
        dkp = GDN_TC_MAX_DK  # the TF32 kernels are built for DKP = 128 only
    n_chunks = math.ceil(n_tok / GDN_CHUNK)
    dvp = GDN_TILE * math.ceil(dv / GDN_TILE)
    buf = GdnScratch.plan(scratch, t.name, n_chunks * hv * n_seq, dkp, dvp)
    shared = gdn_chunk_shared_bytes(dkp)
    suffix = f"d{dkp}" + ("_tf32" if tf32 else "")
    block = (GDN_CHUNK_THREADS, 1, 1)
    per_chunk = (n_chunks, hv, n_seq)
    prep = _kernel(
        f"gdn_chunk_prep_{suffix}",
        "gated_delta.cu",
        per_chunk,
        block,
        (
            *ten(k),
            *ten(v),
            *ten(gate),
            *ten(beta),
            ("ptr", buf.gam),
            ("ptr", buf.wm),
            ("ptr", buf.u),
            ("i32", dvp),
        ),
        shared["prep"],
    )
    state_pass = _kernel(
        f"gdn_chunk_state_{suffix}",
        "gated_delta.cu",
        (dvp // GDN_TILE, hv, n_seq),
        block,
        (
            *ten(d),
            *ten(k),
            *ten(state),
            ("ptr", buf.gam),
            ("ptr", buf.wm),
            ("ptr", buf.u),
            ("ptr", buf.states),
            ("i32", dvp),
        ),
        shared["state"],
    )
    out = _kernel(
        f"gdn_chunk_out_{suffix}",
        "gated_delta.cu",
        per_chunk,
        block,
        (
            *ten(d),
            *ten(q),
            *ten(k),
            *ten(v),
            ("ptr", buf.gam),
            ("ptr", buf.u),
            ("ptr", buf.states),
            ("i32", dvp),
            ("f32", 1.0 / math.sqrt(dk)),
        ),
        shared["out"],
    )
    return (prep, state_pass, out)


def _rope(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
    d, x, pos = (_need(refs, t, n) for n in (t.name, *t.srcs))
    _dtypes(t, (d, x), ("f32",))
    _dtypes(t, (pos,), ("i32",))
    n_rot = int(t.params[0])  # type: ignore[call-overload]
    if n_rot % 2 or n_rot > x.shape[0]:
        raise LaceError(f"node {t.name!r}: n_rot {n_rot} must be even and ≤ the head size")
    work = x.ncols * (n_rot // 2 + x.shape[0] - n_rot)
    args = (*ten(d), *ten(x), *ten(pos), ("i32", n_rot), ("f64", ROPE_FREQ_BASE))
    return (_kernel("rope_neox_f32", "rope.cu", _ew_grid(work), (EW_BLOCK, 1, 1), args),)


def _flash_attn(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
    d, q, k, v, mask = (_need(refs, t, n) for n in (t.name, *t.srcs))
    _dtypes(t, (d, q), ("f32",))
    _dtypes(t, (mask,), ("f16",))
    if k.dtype != v.dtype or k.dtype not in ("f16", "f32"):
        raise LaceError(f"node {t.name!r}: K/V in {k.dtype}/{v.dtype} have no GPU kernel")
    head = max(q.shape[0], v.shape[0])
    if head > 256:
        raise LaceError(f"node {t.name!r}: head size {head} exceeds the GPU kernel's 256")
    if q.shape[2] % k.shape[2]:
        raise LaceError(f"node {t.name!r}: query heads must be a multiple of KV heads")
    dpl = next(p for p in (1, 2, 4, 8) if 32 * p >= head)
    args = (*ten(d), *ten(q), *ten(k), *ten(v), *ten(mask), ("f32", float(t.params[0])))  # type: ignore[arg-type]
    n_q, hq, n_str = q.shape[1], q.shape[2], q.shape[3]
    name = f"flash_attn_ext_{k.dtype}_d{dpl}"
    block = (32 * ATTN_WARPS, 1, 1)
    n_split = attention_splits(n_q * hq * n_str, k.shape[1])
    if n_split == 1:  # `part` unused: d's own address keeps every pointer inside the node
        args += (("ptr", d.ptr), ("i32", 1))
        return (_kernel(name, "attention.cu", (n_q, hq, n_str), block, args),)
    dv = v.shape[0]
    part = scratch.take(t.name, 4 * n_q * hq * n_str * n_split * (dv + 2))
    partial = _kernel(
        name,
        "attention.cu",
        (n_q, hq, n_str * n_split),
        block,
        (*args, ("ptr", part), ("i32", n_split)),
    )
    combine = _kernel(
        "flash_attn_combine_f32",
        "attention.cu",
        (n_q, hq, n_str),
        (min(1024, 32 * math.ceil(dv / 32)), 1, 1),
        (*ten(d), ("ptr", part), ("i32", n_split)),
    )
    return (partial, combine)


def attention_splits(rows: int, n_kv: int) -> int:
    """Spans the KV sequence is cut into (flash-decoding): enough blocks for ATTN_MIN_BLOCKS
    when the (query row, head, stream) blocks alone are fewer, each span ≥ ATTN_SPAN_KEYS."""
    if rows >= ATTN_MIN_BLOCKS or n_kv < 2 * ATTN_SPAN_KEYS:
        return 1
    return max(1, min(math.ceil(ATTN_MIN_BLOCKS / rows), n_kv // ATTN_SPAN_KEYS))


def _argsort(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
    d, x = _need(refs, t, t.name), _need(refs, t, t.srcs[0])
    _dtypes(t, (x,), ("f32",))
    _dtypes(t, (d,), ("i32",))
    n = x.shape[0]
    if n > ARGSORT_MAX:
        raise LaceError(
            f"node {t.name!r}: ARGSORT rows of {n} exceed the GPU kernel's {ARGSORT_MAX}"
        )
    npad = 1 << max(0, (n - 1).bit_length())
    block = (min(1024, max(32, npad // 2)), 1, 1)
    args = (*ten(d), *ten(x), ("i32", npad))
    return (_kernel("argsort_desc_f32_i32", "moe.cu", (x.ncols, 1, 1), block, args, 8 * npad),)


def _mul_mat_id(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
    d, w, x, ids = (_need(refs, t, n) for n in (t.name, *t.srcs))
    _dtypes(t, (d, x), ("f32",))
    _dtypes(t, (ids,), ("i32",))
    _dtypes(t, (w,), ("f32", "f16", "bf16"))
    m, n_used, n_tok = d.shape[0], d.shape[1], d.shape[2]
    grid = (math.ceil(m / GEMV_WARPS), n_used, n_tok)
    args = (*ten(d), *ten(w), *ten(x), *ten(ids))
    return (_kernel(f"mul_mat_id_{w.dtype}", "moe.cu", grid, (32 * GEMV_WARPS, 1, 1), args),)


def _aligned_for_vec16(w: TensorRef, x: TensorRef) -> bool:
    es = STORAGE_BYTES[w.dtype]
    return (
        w.shape[0] % (16 // es) == 0
        and w.strides_bytes[0] == es
        and w.ptr.offset_bytes % 16 == 0
        and w.strides_bytes[1] % 16 == 0
        and x.strides_bytes[0] == 4
        and x.ptr.offset_bytes % 16 == 0
        and all(s % 16 == 0 for n, s in zip(x.shape[1:], x.strides_bytes[1:], strict=True) if n > 1)
    )


def gemv16_launch(w: TensorRef, m: int, n: int, args: tuple[Arg, ...]) -> KernelLaunch:
    """mul_mat_vec16 for `m` weight rows and `n` ≤ 8 columns: the narrowest column variant,
    and the fewest warps per row team (wpr) that still launch GEMV16_MIN_BLOCKS blocks (a thin
    output, such as the 48-row β projection, takes whole blocks per row pair instead), never
    more warps than the row has 16-byte pieces for (K = 5120 bf16: 640 pieces, all 8 warps)."""
    nc = next(c for c in GEMV16_COLUMNS if c >= n)
    teams = math.ceil(m / GEMV16_ROWS)
    pieces = w.shape[0] * STORAGE_BYTES[w.dtype] // 16
    widths = [p for p in (1, 2, 4, 8) if p == 1 or 32 * p <= pieces]
    wpr = next(
        (p for p in widths if math.ceil(teams / (GEMV16_WARPS // p)) >= GEMV16_MIN_BLOCKS),
        widths[-1],
    )
    grid = (math.ceil(teams / (GEMV16_WARPS // wpr)), 1, 1)
    name = f"mul_mat_vec16_{w.dtype}_c{nc}"
    return _kernel(name, "gemv.cu", grid, (32 * GEMV16_WARPS, 1, 1), (*args, ("i32", wpr)))


def _rows_collapse(x: TensorRef) -> bool:
    """x's columns (ne1·ne2·ne3) are evenly spaced by nb1 and each is contiguous along ne0."""
    n, s = x.shape, x.strides_bytes
    return (
        s[0] == STORAGE_BYTES[x.dtype]
        and (n[2] == 1 or s[2] == n[1] * s[1])
        and (n[3] == 1 or s[3] == n[2] * s[2])
    )


def _mul_mat(g: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options) -> tuple:
    d, w, x = _need(refs, t, t.name), _need(refs, t, t.srcs[0]), _need(refs, t, t.srcs[1])
    _dtypes(t, (d, x), ("f32",))
    _dtypes(t, (w,), ("f32", "f16", "bf16"))
    if w.shape[2] != 1 or w.shape[3] != 1:
        raise LaceError(f"node {t.name!r}: MUL_MAT with a batched src0 {w.shape} has no GPU kernel")
    k, m = w.shape[0], w.shape[1]
    n = x.ncols
    custom_path = opt.matmul == "custom" or (opt.matmul == "auto" and n <= GEMV_MAX_COLUMNS)
    if custom_path:
        args = (*ten(d), *ten(w), *ten(x))
        if n <= GEMV_MAX_COLUMNS and _aligned_for_vec16(w, x):
            return (gemv16_launch(w, m, n, args),)
        if n <= GEMV_MAX_COLUMNS:
            grid = (math.ceil(m / GEMV_WARPS), 1, 1)
            block = (32 * GEMV_WARPS, 1, 1)
            return (_kernel(f"mul_mat_vec_{w.dtype}", "gemv.cu", grid, block, args),)
        grid = (math.ceil(m / 64), math.ceil(n / 64), 1)
        return (_kernel(f"gemm_{w.dtype}", "gemv.cu", grid, (256, 1, 1), args),)
    if not _rows_collapse(d) or w.strides_bytes[0] != STORAGE_BYTES[w.dtype]:
        raise LaceError(f"node {t.name!r}: cuBLASLt needs a contiguous result and weight rows")
    launches: list[Launch] = []
    if x.dtype == w.dtype and _rows_collapse(x):
        xp, x_row = x.ptr, x.strides_bytes[1]
    else:  # the activations in the weight's type, packed, in this node's scratch region
        es = STORAGE_BYTES[w.dtype]
        xp = scratch.take(t.name, k * n * es)
        packed = TensorRef(
            f"{t.name}:x_{w.dtype}",
            xp,
            x.shape,
            (es, es * k, es * k * x.shape[1], es * k * x.shape[1] * x.shape[2]),
            w.dtype,
        )
        launches.append(cpy_launch(packed, x))
        x_row = es * k
    launches.append(
        MatmulLaunch(
            node=t.name,
            m=m,
            n=n,
            k=k,
            x=xp,
            x_row_bytes=x_row,
            w=w.ptr,
            w_row_bytes=w.strides_bytes[1],
            d=d.ptr,
            d_row_bytes=d.strides_bytes[1],
            dtype=w.dtype,
        )
    )
    return tuple(launches)


_LOWER: Mapping[str, Callable] = {
    "ADD": _binary,
    "MUL": _binary,
    "DIV": _binary,
    "UNARY": _unary,
    "SCALE": _scale,
    "CLAMP": _clamp,
    "GLU": _glu,
    "REPEAT": _repeat,
    "RMS_NORM": _rows("rms_norm_f32", "norm.cu"),
    "SOFT_MAX": _rows("soft_max_f32", "reduce.cu"),
    "SUM_ROWS": _rows("sum_rows_f32", "reduce.cu"),
    "CPY": _cpy,
    "CONT": _cpy,
    "CONCAT": _concat,
    "GET_ROWS": _get_rows,
    "SET_ROWS": _set_rows,
    "SSM_CONV": _ssm_conv,
    "GATED_DELTA_NET": _gated_delta_net,
    "ROPE": _rope,
    "FLASH_ATTN_EXT": _flash_attn,
    "ARGSORT": _argsort,
    "MUL_MAT_ID": _mul_mat_id,
    "MUL_MAT": _mul_mat,
}

#: The ggml ops the GPU executor runs (view ops launch nothing).
SUPPORTED_OPS = frozenset(_LOWER)


def lower(
    graph: Graph, t: Tensor, refs: Refs, scratch: Scratch, opt: Options
) -> tuple[Launch, ...]:
    """The launches that compute node `t` (a compute op, not a view, not empty)."""
    fn = _LOWER.get(t.op)
    if fn is None:
        raise LaceError(
            f"op {t.op} (node {t.name!r}) is not implemented by the GPU executor; it runs "
            f"{', '.join(sorted(SUPPORTED_OPS))}"
        )
    return fn(graph, t, refs, scratch, opt)
