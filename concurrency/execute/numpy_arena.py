"""A CPU executor for LACE graphs: the ggml ops in NumPy, run two ways.

* `reference_run` gives every tensor its own float64 array and runs the nodes in graph order:
  the answer.
* `arena_run` puts every planned tensor into ONE byte buffer at the offset a `MemoryPlan` gave
  it, and runs the nodes one at a time in a seeded random order that a `Schedule` allows. Each
  op reads its sources from the arena when it runs and writes its result there, so two tensors
  that share bytes while the schedule lets their uses interleave corrupt each other for some
  seeds; a safe plan reproduces the reference (to float32 rounding) for every seed.

Memory follows ggml exactly: a tensor with ne (n0, n1, n2, n3) and nb (b0, b1, b2, b3) is the
NumPy array of shape (n3, n2, n1, n0) and strides (b3, b2, b1, b0), scaled to the element size
of the dtype the executor stores it in, at its view offset inside its base tensor. Arrays here
are always in that NumPy order (fastest ggml dimension last).

Conventions the ops pick where ggml leaves room (documented again at each op):

* GATED_DELTA_NET: value head h reads key head h // (Hv/Hk) ("grouped", as transformers and
  fla; llama.cpp's GGUF converter tiles the value heads, which would change this mapping). The
  state is ggml [S, S, Hv, n_seqs] with ne0 the KEY index and ne1 the VALUE index (each value
  column's S keys are contiguous), i.e. the NumPy array [seq, head, v, k] holds Sᵀ. The output
  holds the per-token outputs [S, Hv, n_tokens, n_seqs] followed by the final states.
* ROPE: NeoX (split-half) rotation of the first params[0] dims of each head, by the positions
  in the first n_tokens entries of the position input, frequency base `numpy_ops.ROPE_FREQ_BASE`.
  llama.cpp runs M-RoPE for Qwen3.5; with equal positions in every section (text tokens, as
  `make_inputs` writes them) that is the same rotation.
* K/V caches are f16 in ggml; here they are float64 (reference) or float32 (arena): the arena
  run is not bit-exact to the engine, only to float32 rounding of the same maths.
* The arena starts filled with 0xFF bytes (NaN as float32), so reading bytes nobody wrote
  shows up; row indices are wrapped into range, so a corrupted index gives a wrong output
  rather than a crash.

Nothing here imports GPU or drawing packages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from concurrency.errors import LaceError
from concurrency.execute.numpy_ops import (
    Array,
    gated_delta_rule,
    gated_delta_rule_chunked,
    run_node,
)
from concurrency.graph.ir import DTYPE_BYTES, Graph, Tensor, TensorKind
from concurrency.graph.schedule import Schedule
from concurrency.memory.plan import MemoryPlan

MiB = 1 << 20
#: Largest arena (and largest sum of planned tensors in the reference) the executor allocates.
MAX_ARENA_BYTES = 512 * MiB
#: Largest total of weights and caches (ggml bytes) the executor allocates.
MAX_EXTERNAL_BYTES = 512 * MiB

_REF_DTYPES = {"f32": np.float64, "f16": np.float64, "i32": np.int64, "i64": np.int64}
_ARENA_DTYPES = {"f32": np.float32, "f16": np.float16, "i32": np.int32, "i64": np.int64}
_EXTERNAL_DTYPES = {"f32": np.float32, "f16": np.float32, "i32": np.int32, "i64": np.int64}


# ---------------------------------------------------------------------------- size guard
def check_size(graph: Graph, arena_bytes: int | None = None) -> None:
    """Refuse graphs too large for a CPU run, naming the fix (a small preset)."""
    external = sum(
        graph[n].nbytes
        for n in graph.leafs
        if graph[n].kind in (TensorKind.WEIGHT, TensorKind.STATE)
    )
    planned = sum(t.nbytes for t in graph.tensors.values() if not t.external and t.view_src is None)
    what = graph.meta.model
    if external > MAX_EXTERNAL_BYTES:
        raise LaceError(
            f"{what}: weights and caches take {external / MiB:.0f} MiB, more than the NumPy "
            f"executor's {MAX_EXTERNAL_BYTES // MiB} MiB; use a small preset such as tiny"
        )
    biggest = max(planned, arena_bytes or 0)
    if biggest > MAX_ARENA_BYTES:
        raise LaceError(
            f"{what}: the compute tensors take {biggest / MiB:.0f} MiB, more than the NumPy "
            f"executor's {MAX_ARENA_BYTES // MiB} MiB; use a small preset such as tiny"
        )


# ---------------------------------------------------------------------------- memory
def _view_array(buf: Array, t: Tensor, offset_bytes: int, dtype: type) -> Array:
    """The NumPy view of ggml tensor `t` inside `buf`, whose elements are `dtype`.

    `offset_bytes` and the strides are ggml bytes; they are scaled by itemsize / ggml size so
    a tensor stored wider than in ggml (f32 as float64) keeps its element layout."""
    item = np.dtype(dtype).itemsize
    ggml = DTYPE_BYTES[t.dtype]
    parts = (offset_bytes, *t.strides_bytes)
    if buf.dtype == np.uint8:  # the arena: stored at ggml's own size, scale 1
        scaled = parts
    else:
        if any(p * item % ggml for p in parts):
            raise LaceError(f"tensor {t.name!r}: offset/strides are not whole {t.dtype} elements")
        scaled = tuple(p * item // ggml for p in parts)
    try:
        return np.ndarray(
            t.shape[::-1], dtype=dtype, buffer=buf, offset=scaled[0], strides=scaled[:0:-1]
        )
    except (TypeError, ValueError) as exc:
        raise LaceError(f"tensor {t.name!r} does not fit its buffer ({exc})") from None


def _own_buffers(graph: Graph, names: Iterable[str], dtypes: Mapping[str, type]) -> dict:
    """A zeroed array per base tensor, holding its ggml bytes in the dtype `dtypes` picks."""
    out: dict[str, Array] = {}
    for name in names:
        t = graph[name]
        out[name] = np.zeros(t.nbytes // DTYPE_BYTES[t.dtype], dtype=dtypes[t.dtype])
    return out


def _bind(graph: Graph, locate: Callable[[Tensor], tuple[Array, int, type]]) -> dict:
    """Tensor name → its array (None for empty tensors); `locate` gives buffer, offset, dtype."""
    arrays: dict[str, Array | None] = {}
    for name, t in graph.tensors.items():
        if t.is_empty:
            arrays[name] = None
            continue
        buf, offset, dtype = locate(t)
        arrays[name] = _view_array(buf, t, offset, dtype)
    return arrays


def _load_leafs(graph: Graph, arrays: Mapping[str, Array | None], values: Mapping) -> None:
    for name in graph.leafs:
        dst = arrays[name]
        if dst is None:
            continue
        if name not in values:
            raise LaceError(f"no input value for leaf {name!r}; make_inputs(graph) builds them all")
        src = np.asarray(values[name])
        if src.size != dst.size:
            raise LaceError(
                f"input {name!r} has {src.size} elements; the tensor has {dst.size} "
                f"(ggml shape {graph[name].shape})"
            )
        dst[...] = src.reshape(dst.shape)


def _result_keys(graph: Graph) -> list[str]:
    outs = [n for n in graph.nodes if graph[n].is_output]
    states = [n for n in graph.leafs if graph[n].kind is TensorKind.STATE]
    return outs + states


def _collect(graph: Graph, arrays: Mapping[str, Array | None], keys: Iterable[str]) -> dict:
    out: dict[str, Array] = {}
    for name in keys:
        a = arrays[name]
        shape = graph[name].shape[::-1]
        out[name] = np.zeros(shape) if a is None else np.array(a, dtype=np.float64)
    return out


# ---------------------------------------------------------------------------- runs
def reference_run(
    graph: Graph,
    inputs: Mapping[str, Array],
    *,
    keep: Iterable[str] = (),
    round_sources: Mapping[str, Mapping[int, Callable[[Array], Array]]] | None = None,
    force_results: Mapping[str, Callable[[Array], Array]] | None = None,
) -> dict[str, Array]:
    """Run every node in graph order in float64, each base tensor in its own array.

    Returns float64 copies (NumPy order) of every graph output and every state tensor
    (caches, after their writes), plus the tensors named in `keep` (for inspection).
    `round_sources` maps a node to {source index: rounding}, applied before it runs: the
    reference of a device that rounds there (the GPU executor casts a cuBLASLt projection's
    activations, source 1, to the f16/bf16 weight type, and stores K/V rows, source 0 of
    SET_ROWS, in the f16 cache). `force_results` maps a node to a function of its computed
    result that returns the value to keep (a device's own stored values, fed back so the
    reference continues from exactly what the device holds)."""
    rounding = dict(round_sources or {})
    forcing = dict(force_results or {})
    unknown = sorted((set(rounding) | set(forcing)) - set(graph.nodes))
    if unknown:
        raise LaceError(f"round_sources/force_results name unknown nodes: {unknown[:3]}")
    check_size(graph)
    bases = [n for n, t in graph.tensors.items() if t.view_src is None]
    buffers = _own_buffers(graph, bases, _REF_DTYPES)
    arrays = _bind(
        graph,
        lambda t: (buffers[graph.base(t.name)], t.view_offset_bytes, _REF_DTYPES[t.dtype]),
    )
    _load_leafs(graph, arrays, inputs)
    with np.errstate(all="ignore"):
        for name in graph.nodes:
            run_node(graph, name, arrays, rounding.get(name), forcing.get(name))
    return _collect(graph, arrays, [*_result_keys(graph), *keep])


@lru_cache(maxsize=16)
def _precedence(schedule: Schedule) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """Per node: how many nodes happen before it, and which nodes it happens before."""
    n = len(schedule.nodes)
    waiting = [0] * n
    successors: list[list[int]] = [[] for _ in range(n)]
    for b in range(n):
        for a in range(n):
            if a != b and schedule.happens_before(a, b):
                waiting[b] += 1
                successors[a].append(b)
    return tuple(waiting), tuple(tuple(x) for x in successors)


def linearization(schedule: Schedule, seed: int) -> tuple[int, ...]:
    """A random order of the schedule's nodes that respects happens-before: at each step a
    uniformly chosen node (np.random.default_rng(seed)) among those whose every predecessor
    has run."""
    counts, successors = _precedence(schedule)
    waiting = list(counts)
    rng = np.random.default_rng(seed)
    ready = [b for b, w in enumerate(waiting) if w == 0]
    order: list[int] = []
    while ready:
        k = int(rng.integers(len(ready)))
        node = ready[k]
        ready[k] = ready[-1]
        ready.pop()
        order.append(node)
        for b in successors[node]:
            waiting[b] -= 1
            if waiting[b] == 0:
                ready.append(b)
    if len(order) != len(waiting):
        raise LaceError("the schedule's happens-before relation has a cycle")
    return tuple(order)


def _arena_arrays(graph: Graph, plan: MemoryPlan) -> dict[str, Array | None]:
    """Planned tensors as views of one uint8 arena (filled with 0xFF: NaN as float32, so a
    read of never-written bytes shows); external tensors in their own float32 arrays."""
    arena = np.full(plan.arena_bytes, 0xFF, dtype=np.uint8)
    ext_names = [n for n, t in graph.tensors.items() if t.view_src is None and t.external]
    external = _own_buffers(graph, ext_names, _EXTERNAL_DTYPES)

    def locate(t: Tensor) -> tuple[Array, int, type]:
        base = graph.base(t.name)
        if graph[base].external:
            return external[base], t.view_offset_bytes, _EXTERNAL_DTYPES[t.dtype]
        addr = plan.address(graph, t.name)
        if addr is None:
            raise LaceError(f"the {plan.policy!r} plan does not place tensor {t.name!r}")
        if addr < 0 or addr + t.nbytes > plan.arena_bytes:
            raise LaceError(
                f"tensor {t.name!r} at [{addr}, {addr + t.nbytes}) lies outside the "
                f"{plan.arena_bytes}-byte arena of plan {plan.policy!r}"
            )
        return arena, addr, _ARENA_DTYPES[t.dtype]

    return _bind(graph, locate)


@dataclass(frozen=True)
class ArenaRun:
    """One arena run: the values (as `reference_run` returns them) and the node order used."""

    values: Mapping[str, Array]
    order: tuple[str, ...]


def arena_run_detailed(
    graph: Graph, schedule: Schedule, plan: MemoryPlan, inputs: Mapping[str, Array], seed: int
) -> ArenaRun:
    """`arena_run`, also returning the linearization it ran."""
    check_size(graph, plan.arena_bytes)
    if tuple(schedule.nodes) != tuple(graph.nodes):
        raise LaceError("the schedule was made for a different graph (node lists differ)")
    arrays = _arena_arrays(graph, plan)
    _load_leafs(graph, arrays, inputs)
    order = linearization(schedule, seed)
    with np.errstate(all="ignore"):
        for i in order:
            run_node(graph, graph.nodes[i], arrays)
    values = _collect(graph, arrays, _result_keys(graph))
    return ArenaRun(values, tuple(graph.nodes[i] for i in order))


def arena_run(
    graph: Graph, schedule: Schedule, plan: MemoryPlan, inputs: Mapping[str, Array], seed: int
) -> dict[str, Array]:
    """Run the graph in float32 with every planned tensor in one arena at the plan's offsets,
    nodes in a seeded random order the schedule allows; same keys as `reference_run`."""
    return dict(arena_run_detailed(graph, schedule, plan, inputs, seed).values)


# ---------------------------------------------------------------------------- comparing
def max_rel_error(ref: Mapping[str, Array], got: Mapping[str, Array]) -> float:
    """max over keys of ‖ref − got‖ / ‖ref‖ (denominator at least 1e-30); inf where `got`
    holds a non-finite value the reference does not."""
    if set(ref) != set(got):
        raise LaceError(f"result keys differ: {sorted(set(ref) ^ set(got))}")
    worst = 0.0
    for name, r in ref.items():
        r64 = np.asarray(r, dtype=np.float64)
        g64 = np.asarray(got[name], dtype=np.float64)
        if not np.all(np.isfinite(g64) | ~np.isfinite(r64)):
            return math.inf
        denom = max(float(np.linalg.norm(r64)), 1e-30)
        worst = max(worst, float(np.linalg.norm(r64 - g64)) / denom)
    return worst


@dataclass(frozen=True)
class RunResult:
    """One seeded arena run compared with the reference."""

    seed: int
    error: float
    order: tuple[str, ...]

    def ok(self, tol: float = 1e-4) -> bool:
        return self.error <= tol


def compare_runs(
    graph: Graph,
    schedule: Schedule,
    plan: MemoryPlan,
    seeds: Sequence[int] = range(5),
    *,
    inputs: Mapping[str, Array] | None = None,
    input_seed: int = 0,
) -> tuple[RunResult, ...]:
    """Run the plan under the schedule once per seed and compare each run with the reference
    (inputs from `make_inputs(graph, input_seed)` unless given). The plan must be one of
    `graph`'s; a schedule other than the plan's own is allowed (running a plan under another
    schedule is how its fragility shows), and `plan.bound_to` names the difference."""
    plan.bound_to(graph, schedule)
    values = make_inputs(graph, input_seed) if inputs is None else inputs
    ref = reference_run(graph, values)
    results = []
    for seed in seeds:
        run = arena_run_detailed(graph, schedule, plan, values, seed)
        results.append(RunResult(seed, max_rel_error(ref, run.values), run.order))
    return tuple(results)


# ---------------------------------------------------------------------------- inputs
def make_inputs(graph: Graph, seed: int = 0) -> dict[str, Array]:
    """Deterministic values (NumPy order) for every leaf of `graph`.

    Weights: normal with std 1/sqrt(ne0) (fan-in, so activations stay O(1) through every
    layer); `*norm.weight` 1 + N(0, 0.1²); `ssm_a` = −exp(N(0, 0.5²)) (negative: decay);
    `ssm_dt.bias` N(0, 0.5²). Caches and states: N(0, 0.1²).
    Graph inputs, for B sequences of T tokens after `kv_tokens` cached ones (token i = s·T + t):
    `inp_tokens` uniform in [0, n_vocab); `rs_s_copy` arange (each sequence keeps its cell);
    `inp_pos` kv_tokens + t in the first three M-RoPE sections, 0 in the fourth;
    `attn_inp_k_idxs`/`v_idxs` kv_tokens + i (token i's KV cell); `attn_inp_kq_mask` 0 where
    token (s, t) may attend, −inf elsewhere: the first kv_tokens cells (a history every
    sequence shares) and its own sequence's cells kv_tokens + s·T + t' with t' ≤ t;
    `inp_out_ids` the last token of each sequence; `inp_layer` (the layer input) N(0, 1).
    """
    check_size(graph)
    rng = np.random.default_rng(seed)
    out: dict[str, Array] = {}
    for name in graph.leafs:
        t = graph[name]
        shape = t.shape[::-1]
        if t.kind is TensorKind.WEIGHT:
            out[name] = _weight(t, rng)
        elif t.kind is TensorKind.STATE:
            out[name] = rng.normal(0.0, 0.1, shape)
        else:
            out[name] = np.reshape(_graph_input(graph, t, rng), shape)
    return out


def make_graph_inputs(graph: Graph, seed: int = 0) -> dict[str, Array]:
    """Values for the graph INPUT leaves only (tokens, positions, masks, the layer input), with
    `make_inputs`' rules but without drawing weights or caches (and without the size limit), for
    executors that fill large weights themselves (the GPU benchmark draws them on the device).
    The random inputs differ from `make_inputs(graph, seed)`'s, which interleaves the draws."""
    rng = np.random.default_rng(seed)
    return {
        name: np.reshape(_graph_input(graph, graph[name], rng), graph[name].shape[::-1])
        for name in graph.leafs
        if not graph[name].external
    }


def _weight(t: Tensor, rng: np.random.Generator) -> Array:
    shape = t.shape[::-1]
    label = t.ggml_name or t.name
    if label.endswith("norm.weight"):
        return 1.0 + rng.normal(0.0, 0.1, shape)
    if label.endswith("ssm_a"):
        return -np.exp(rng.normal(0.0, 0.5, shape))
    if label.endswith("ssm_dt.bias"):
        return rng.normal(0.0, 0.5, shape)
    return rng.normal(0.0, 1.0 / math.sqrt(t.shape[0]), shape)


def _graph_input(graph: Graph, t: Tensor, rng: np.random.Generator) -> Array:
    meta = graph.meta
    b, n_tok, kv = meta.batch, meta.tokens, meta.kv_tokens
    n_all = b * n_tok
    label = t.ggml_name or t.name
    seq_pos = kv + np.tile(np.arange(n_tok), b)  # position of token i = s·T + t
    if label == "inp_tokens":
        if graph.config is None:
            raise LaceError("make_inputs needs graph.config (n_vocab) for token ids")
        return rng.integers(0, graph.config.n_vocab, t.nelements)
    if label == "rs_s_copy":
        return np.arange(t.nelements)
    if label == "inp_pos":
        sections = t.nelements // n_all
        pos = np.zeros((sections, n_all), dtype=np.int64)
        pos[: min(3, sections)] = seq_pos
        return pos
    if label in ("attn_inp_k_idxs", "attn_inp_v_idxs"):
        return _kv_cells(graph, b, n_tok, kv)
    if label == "attn_inp_kq_mask":
        return _causal_mask(t, b, n_tok, kv)
    if label == "inp_out_ids":
        return np.arange(b) * n_tok + n_tok - 1
    if t.dtype in ("i32", "i64"):
        raise LaceError(f"make_inputs does not know integer input {label!r}; pass it yourself")
    return rng.normal(0.0, 1.0, t.nelements)


def _kv_cells(graph: Graph, n_seqs: int, n_tok: int, kv: int) -> Array:
    """The KV cell each token writes (row of the streams' merged buffer): with one stream per
    sequence (llama.cpp's default for B > 1) token (s, t) goes to stream s, cell kv + t; with a
    single stream the sequences share it, token i = s·T + t in cell kv + i."""
    caches = [t for t in graph.tensors.values() if t.name.startswith("cache_k_l")]
    n_streams = caches[0].shape[2] if caches else 1
    if n_streams == 1:
        return kv + np.arange(n_seqs * n_tok)
    kv_size = caches[0].shape[1]
    return np.concatenate([s * kv_size + kv + np.arange(n_tok) for s in range(n_seqs)])


def _causal_mask(t: Tensor, n_seqs: int, n_tok: int, kv: int) -> Array:
    """Mask per stream [n_streams, 1, rows, n_kv]: 0 where a token may attend — the kv cached
    cells (a history every sequence shares) and its own sequence's cells up to itself."""
    n_kv, rows, _, n_streams = t.shape
    per_stream = n_seqs // n_streams  # sequences sharing a stream (all of them when 1)
    if kv + per_stream * n_tok > n_kv:
        raise LaceError(
            f"kv_tokens + tokens = {kv + per_stream * n_tok} KV cells do not fit the {n_kv} "
            "cells attention reads; use fewer sequences or tokens, or a larger kv_tokens padding"
        )
    mask = np.full((n_streams, 1, rows, n_kv), -np.inf)
    mask[..., :kv] = 0.0
    for stream in range(n_streams):
        for j in range(per_stream):
            for i in range(n_tok):
                row = j * n_tok + i
                if row < rows:
                    mask[stream, 0, row, kv + j * n_tok : kv + j * n_tok + i + 1] = 0.0
    return mask


__all__ = [
    "MAX_ARENA_BYTES",
    "MAX_EXTERNAL_BYTES",
    "ArenaRun",
    "RunResult",
    "arena_run",
    "arena_run_detailed",
    "check_size",
    "compare_runs",
    "gated_delta_rule",
    "gated_delta_rule_chunked",
    "linearization",
    "make_graph_inputs",
    "make_inputs",
    "max_rel_error",
    "reference_run",
    "run_node",
]
