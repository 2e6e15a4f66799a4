"""Running a planned graph on the GPU and comparing it with the float64 NumPy reference.

`reference_inputs` gives both sides identical values: `make_inputs`' draws with the cast weights
rounded to the executor's weight type and the f16 leaves (KV caches, the mask) rounded to f16,
so a comparison measures the kernels' arithmetic, not the inputs' rounding.

A projection with more than GEMV_MAX_COLUMNS activation columns and f16/bf16 weights runs
through cuBLASLt, which needs its activations in the weight's type: the device rounds them
(`cpy_f32_<type>` into the node's scratch region). `check_gpu` then makes two comparisons:

* modelled — the reference fed, at each such projection, the very activations the device cast
  (read back from the scratch region), after checking that they ARE its own exact activations
  rounded to nearest (`rounding_excess` ≤ 1: every element within half an ulp of the type, plus
  a 1e-4 RMS allowance for the f32-vs-float64 difference upstream); likewise it continues from
  the K/V rows the device stored in its f16 cache (`f16_stores`, checked the same way), so the
  activations downstream of attention agree to f32 noise too. The reference then computes
  what the device computes, so fp32's threshold holds: 1e-5 (gdn-reference §5.4; the CPU
  emulation of the 4-layer stacks measures ≤ 1e-6). Feeding the device's
  values is what keeps this tight: rounding the reference's own float64 values instead flips
  the rare element that sits within f32 noise of a rounding midpoint, and a 4-layer
  random-weight stack amplifies those flips to 1e-3–1e-2.
* exact — the reference with exact activations. Its threshold is gdn-reference §5.4's for the
  type ("bf16 activations end to end ≤ 1e-2"; f16 (and TF32/bf16 MMA) ≤ 5e-3), or twice the
  error that the roundings alone explain when larger: the NumPy reference with the same casts
  and f16 stores against the exact one. One layer rounded measures ≤ 3.5e-3 (as §5.4's
  3.7e-3), within 1e-2; the 4-layer 27B-scaled stack at 64 prompt tokens compounds it to 4.8e-2
  (the GPU measured 4.80e-2), which no fixed per-layer figure bounds. The factor 2 covers the
  rounding flips the device's f32 arithmetic causes (NumPy, 1e-6 relative noise before each
  cast: +1.3e-2 on that stack).
Without rounded activations both comparisons are the same one, against the exact reference
with `tolerance(graph, "f32")` (≤ 3e-3 where the f16 KV cache rounds).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from concurrency.execute.gpu.launch import (
    SCRATCH,
    STORAGE_BYTES,
    LaunchPlan,
    MatmulLaunch,
    build_launch_plan,
    cast_weights,
)
from concurrency.execute.gpu.storage import HOST_TYPES, round_to, to_float64
from concurrency.execute.numpy_arena import make_inputs, reference_run
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.plan import MemoryPlan

TOL_F32 = 1e-5
TOL_F16 = 5e-3
TOL_BF16 = 1e-2
#: gdn="chunked_tf32" (single-pass TF32 tensor-core products in the chunked GDN kernels):
#: gdn-reference §5.4's gate for CUDA with TF32 MMA. The default "chunked" form splits each
#: operand (3xTF32) and meets TOL_F32.
TOL_TF32 = 5e-3
#: The exact comparison allows this many times the error the device's roundings alone explain.
ROUNDING_MARGIN = 2.0
#: Significand bits (with the implicit one) and smallest normal exponent of the cast types.
_PRECISION = {"f16": (11, -14), "bf16": (8, -126)}
#: RMS-relative allowance for the f32-vs-float64 difference of an activation before its cast.
#: Per-head normalisation amplifies upstream f32 noise where a head's output is small: on the
#: H200 the input of `linear_attn_out-1` (gated RMS norm after the tensor-core chunked GDN form,
#: 27B-scaled 4-layer stack, 64 prompt tokens) had one element of 49 152 off by 5.5e-5 of the
#: tensor's RMS. 1e-4 covers it and is still a fifth of half an ulp at the RMS (f16: ≥ 2.4e-4),
#: so truncation or a wrong type still shows as ≥ 1.5 half-ulps.
CAST_NOISE = 1e-4
#: Per-element allowance for the same f32-vs-float64 difference: an element within f32 noise of a
#: rounding midpoint rounds the other way on the device, so its cast can sit that far beyond half
#: an ulp of the reference's value. 2e-5 of |x| covers the 4-layer stacks (one measured 1.038
#: half-ulps without it on the H200).
CAST_NOISE_REL = 2e-5
#: New K/V rows are rounded to the f16 cache on the device (the reference keeps them exact):
#: ≈ 3e-4 RMS relative per element, a few 1e-4 after attention.
TOL_KV_F16 = 3e-3
LAUNCHES = ("eager", "graph")


def reference_inputs(
    graph: Graph,
    seed: int = 0,
    weight_dtype: str = "f32",
    values: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Inputs for a GPU run and its reference: `values` (default `make_inputs(graph, seed)`)
    with the cast weights rounded to `weight_dtype` and every f16 leaf rounded to f16."""
    out = dict(make_inputs(graph, seed) if values is None else values)
    for name in cast_weights(graph):
        out[name] = round_to(out[name], weight_dtype)
    for name in graph.leafs:
        if graph[name].dtype == "f16":
            out[name] = round_to(out[name], "f16")
    return out


def tolerance(graph: Graph, weight_dtype: str) -> float:
    """The relative-error threshold for `graph` run with `weight_dtype` weights against the
    float64 reference with exact activations (gdn-reference §5.4); "f32" is also the threshold
    of the modelled comparison, whatever the weights."""
    tol = {"f32": TOL_F32, "f16": TOL_F16, "bf16": TOL_BF16}[weight_dtype]
    if any(_writes_f16(graph, n) for n in graph.nodes):
        tol = max(tol, TOL_KV_F16)
    return tol


def gdn_tolerance(graph: Graph, gdn: str) -> float:
    """TOL_TF32 when `gdn` runs the gated delta rule's products in single-pass TF32 and the
    graph has such a node, else 0 (no allowance beyond the types' tolerances)."""
    has_gdn = any(graph[n].op == "GATED_DELTA_NET" for n in graph.nodes)
    return TOL_TF32 if gdn == "chunked_tf32" and has_gdn else 0.0


def f16_stores(graph: Graph) -> dict[str, dict[int, Callable[[np.ndarray], np.ndarray]]]:
    """The device's f16 stores as reference roundings: node → {0: round to f16} for every
    SET_ROWS or CPY into an f16 tensor (the new K/V rows the cache keeps in f16; source 0 is
    the rows or the copied tensor)."""
    to_f16 = functools.partial(round_to, dtype="f16")
    return {
        n: {0: to_f16}
        for n in graph.nodes
        if graph[n].op in ("SET_ROWS", "CPY") and graph[n].dtype == "f16"
    }


def _writes_f16(graph: Graph, name: str) -> bool:
    """Attention, or a node that stores into an f16 tensor (a KV-cache row, a CPY into an f16
    state): the device rounds there and the reference does not."""
    t = graph[name]
    return t.op == "FLASH_ATTN_EXT" or (t.op in ("SET_ROWS", "CPY") and t.dtype == "f16")


def activation_casts(lp: LaunchPlan) -> dict[str, MatmulLaunch]:
    """The projections whose activations the device rounds: node → its cuBLASLt launch (the
    operand X, cast to the f16/bf16 weight type into the node's scratch region)."""
    return {
        node.node: launch
        for node in lp.nodes
        for launch in node.launches
        if isinstance(launch, MatmulLaunch) and launch.dtype != "f32" and launch.x.buffer == SCRATCH
    }


def read_activations(lp: LaunchPlan, scratch: np.ndarray) -> dict[str, np.ndarray]:
    """The cast activations of every `activation_casts` node, from a host copy of the scratch
    buffer (uint8), as float64 arrays in the NumPy order of the node's src1."""
    out = {}
    for name, mm in activation_casts(lp).items():
        es = STORAGE_BYTES[mm.dtype]
        view = np.ndarray(
            (mm.n, mm.k),
            dtype=HOST_TYPES[mm.dtype],
            buffer=scratch,
            offset=mm.x.offset_bytes,
            strides=(mm.x_row_bytes, es),
        )
        src1 = lp.graph[lp.graph[name].srcs[1]]
        out[name] = to_float64(view, mm.dtype).reshape(src1.shape[::-1])
    return out


def rounding_excess(exact: np.ndarray, cast: np.ndarray, dtype: str) -> float:
    """How far the device's cast `cast` is from `exact` rounded to nearest `dtype`: the largest
    |cast − exact| over (half an ulp of `dtype` at exact + CAST_NOISE · RMS(exact)). At most 1
    when every element was rounded to nearest; truncation or a wrong type exceeds it."""
    bits, min_exp = _PRECISION[dtype]
    x = np.asarray(exact, dtype=np.float64)
    c = np.asarray(cast, dtype=np.float64).reshape(x.shape)
    if not np.all(np.isfinite(c)):
        return float("inf")
    with np.errstate(divide="ignore"):
        exp = np.maximum(np.floor(np.log2(np.abs(x))), min_exp)
    half_ulp = np.ldexp(1.0, (exp - bits).astype(np.int64))
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    bound = half_ulp * (1.0 + 2.0**-10) + CAST_NOISE * rms + CAST_NOISE_REL * np.abs(x)
    return float(np.max(np.abs(c - x) / bound)) if x.size else 0.0


def relative_errors(
    ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """‖ref − got‖ / ‖ref‖ per key (inf where got is non-finite and ref is not)."""
    errors = {}
    for name, r in ref.items():
        r64 = np.asarray(r, dtype=np.float64)
        g64 = np.asarray(got[name], dtype=np.float64).reshape(r64.shape)
        if not np.all(np.isfinite(g64) | ~np.isfinite(r64)):
            errors[name] = float("inf")
            continue
        finite = np.isfinite(r64)
        denom = max(float(np.linalg.norm(r64[finite])), 1e-30)
        errors[name] = float(np.linalg.norm((r64 - g64)[finite])) / denom
    return errors


@dataclass(frozen=True)
class GpuCheck:
    """One GPU run compared with the float64 reference (module doc: modelled and exact)."""

    label: str
    errors: Mapping[str, float]  # against the reference that computes what the device does
    tolerance: float
    exact_errors: Mapping[str, float] = field(default_factory=dict)  # exact activations
    exact_tolerance: float = 0.0
    rounding_excess: float = 0.0  # of the device's activation casts (≤ 1: round to nearest)
    rounding_error: float = 0.0  # what the casts alone explain (NumPy, against exact)

    @property
    def error(self) -> float:
        return max(self.errors.values(), default=0.0)

    @property
    def exact_error(self) -> float:
        return max(self.exact_errors.values(), default=0.0)

    @property
    def ok(self) -> bool:
        return (
            self.error <= self.tolerance
            and self.exact_error <= self.exact_tolerance
            and self.rounding_excess <= 1.0
        )

    @property
    def worst(self) -> str:
        return max(self.errors, key=lambda k: self.errors[k]) if self.errors else ""

    @property
    def exact_worst(self) -> str:
        e = self.exact_errors
        return max(e, key=lambda k: e[k]) if e else ""

    def summary(self) -> dict[str, object]:
        """Every figure of the check, for an assertion message."""
        return {
            "modelled": (f"{self.error:.3e}", self.tolerance, self.worst),
            "exact": (f"{self.exact_error:.3e}", f"{self.exact_tolerance:.3e}", self.exact_worst),
            "rounding_excess": f"{self.rounding_excess:.3f}",
            "rounding_error": f"{self.rounding_error:.3e}",
        }


def run_gpu(
    launch_plan: LaunchPlan,
    inputs: Mapping[str, np.ndarray],
    launch: str = "graph",
    *,
    replays: int = 1,
    activations: dict[str, np.ndarray] | None = None,
    stores: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Upload `inputs`, run the plan (eagerly, or captured as one CUDA graph and replayed
    `replays` times from the same inputs), and read outputs and states back (float64).
    `activations`, when given, receives the device's cast activations (`read_activations`);
    `stores` the values of every `f16_stores` node (the cache view it wrote)."""
    from concurrency.execute.gpu.runner import DeviceRun

    if launch not in LAUNCHES:
        from concurrency.errors import LaceError

        raise LaceError(f"launch must be one of {', '.join(LAUNCHES)}, not {launch!r}")
    run = DeviceRun(launch_plan)
    try:
        run.upload(inputs)
        run.run_eager()  # also the warm-up that nvmath needs before capture
        if launch == "eager":
            values = run.read()
        else:
            exec_ = run.capture()
            values = {}
            for _ in range(replays):
                run.upload(inputs)  # the eager run changed the states; start every replay afresh
                run.replay(exec_)
                values = run.read()
        if activations is not None and activation_casts(launch_plan):
            activations.update(read_activations(launch_plan, run.read_buffer(SCRATCH)))
        if stores is not None:
            stores.update(run.read(list(f16_stores(launch_plan.graph))))
        return values
    finally:
        run.free()


def _forced(
    device: np.ndarray, dtype: str, excess: dict[str, float], node: str
) -> Callable[[np.ndarray], np.ndarray]:
    def take(exact: np.ndarray) -> np.ndarray:
        excess[node] = rounding_excess(exact, device, dtype)
        return device.reshape(exact.shape)

    return take


def check_gpu(
    graph: Graph,
    schedule: Schedule,
    plan: MemoryPlan,
    *,
    weight_dtype: str = "f32",
    launch: str = "graph",
    matmul: str = "auto",
    gdn: str = "auto",
    seed: int = 0,
    inputs: Mapping[str, np.ndarray] | None = None,
    reference: Mapping[str, np.ndarray] | None = None,
    label: str = "",
) -> GpuCheck:
    """Run `graph` with `plan` under `schedule` on the GPU and compare every output and state
    with `reference_run` on the same (rounded) inputs: modelled and exact (module doc).
    `reference`, when given, is the exact reference of these inputs."""
    values = reference_inputs(graph, seed, weight_dtype) if inputs is None else dict(inputs)
    exact = reference_run(graph, values) if reference is None else reference
    lp = build_launch_plan(graph, schedule, plan, weight_dtype=weight_dtype, matmul=matmul, gdn=gdn)
    device_casts: dict[str, np.ndarray] = {}
    device_stores: dict[str, np.ndarray] = {}
    got = run_gpu(lp, values, launch, activations=device_casts, stores=device_stores)
    label = label or graph.meta.model
    exact_errors = relative_errors(exact, got)
    arithmetic = gdn_tolerance(graph, gdn)
    tol = max(tolerance(graph, "f32"), arithmetic)
    casts = activation_casts(lp)
    if not casts:
        return GpuCheck(label, exact_errors, tol, exact_errors, tol)
    stores = f16_stores(graph)
    excess: dict[str, float] = {}
    forced = {
        node: {1: _forced(device_casts[node], mm.dtype, excess, node)} for node, mm in casts.items()
    }
    kept = {node: _forced(device_stores[node], "f16", excess, node) for node in stores}
    modelled = reference_run(graph, values, round_sources=forced, force_results=kept)
    own_casts = {
        node: {1: functools.partial(round_to, dtype=mm.dtype)} for node, mm in casts.items()
    }
    own = reference_run(graph, values, round_sources={**stores, **own_casts})
    explained = max(relative_errors(exact, own).values(), default=0.0)
    exact_tol = max(tolerance(graph, weight_dtype), ROUNDING_MARGIN * explained, arithmetic)
    return GpuCheck(
        label,
        relative_errors(modelled, got),
        max(TOL_F32, arithmetic),  # every rounding the device makes is fed back: its arithmetic
        exact_errors,
        exact_tol,
        max(excess.values(), default=0.0),
        explained,
    )
