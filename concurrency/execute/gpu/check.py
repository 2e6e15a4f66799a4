"""Running a planned graph on the GPU and comparing it with the float64 NumPy reference.

`reference_inputs` gives both sides identical values: `make_inputs`' draws with the cast weights
rounded to the executor's weight type and the f16 leaves (KV caches, the mask) rounded to f16,
so a comparison measures the kernels' arithmetic, not the inputs' rounding. `tolerance` is the
pass threshold for a graph (gdn-reference §5.4): fp32 kernels without tensor cores ≤ 1e-5;
anything through the f16 KV cache or f16 operands (cuBLASLt) ≤ 5e-3; bf16 operands ≤ 1e-2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from concurrency.execute.gpu.launch import LaunchPlan, build_launch_plan, cast_weights
from concurrency.execute.gpu.storage import round_to
from concurrency.execute.numpy_arena import make_inputs, reference_run
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.plan import MemoryPlan

TOL_F32 = 1e-5
TOL_F16 = 5e-3
TOL_BF16 = 1e-2
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
    """The relative-error threshold for `graph` run with `weight_dtype` weights."""
    tol = {"f32": TOL_F32, "f16": TOL_F16, "bf16": TOL_BF16}[weight_dtype]
    if any(graph[n].op in ("FLASH_ATTN_EXT", "SET_ROWS") for n in graph.nodes):
        tol = max(tol, TOL_KV_F16)
    return tol


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
    """One GPU run compared with the float64 reference."""

    label: str
    errors: Mapping[str, float]
    tolerance: float

    @property
    def error(self) -> float:
        return max(self.errors.values(), default=0.0)

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance

    @property
    def worst(self) -> str:
        return max(self.errors, key=lambda k: self.errors[k]) if self.errors else ""


def run_gpu(
    launch_plan: LaunchPlan,
    inputs: Mapping[str, np.ndarray],
    launch: str = "graph",
    *,
    replays: int = 1,
) -> dict[str, np.ndarray]:
    """Upload `inputs`, run the plan (eagerly, or captured as one CUDA graph and replayed
    `replays` times from the same inputs), and read outputs and states back (float64)."""
    from concurrency.execute.gpu.runner import DeviceRun

    if launch not in LAUNCHES:
        from concurrency.errors import LaceError

        raise LaceError(f"launch must be one of {', '.join(LAUNCHES)}, not {launch!r}")
    run = DeviceRun(launch_plan)
    try:
        run.upload(inputs)
        run.run_eager()  # also the warm-up that nvmath needs before capture
        if launch == "eager":
            return run.read()
        exec_ = run.capture()
        values: dict[str, np.ndarray] = {}
        for _ in range(replays):
            run.upload(inputs)  # the eager run changed the states; start every replay afresh
            run.replay(exec_)
            values = run.read()
        return values
    finally:
        run.free()


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
    with `reference_run` on the same (rounded) inputs."""
    values = reference_inputs(graph, seed, weight_dtype) if inputs is None else dict(inputs)
    ref = reference_run(graph, values) if reference is None else reference
    lp = build_launch_plan(graph, schedule, plan, weight_dtype=weight_dtype, matmul=matmul, gdn=gdn)
    got = run_gpu(lp, values, launch)
    return GpuCheck(
        label or graph.meta.model, relative_errors(ref, got), tolerance(graph, weight_dtype)
    )
