"""The GPU executor: ggml graphs on CUDA streams, inside the planned arena (CuPy).

`build_launch_plan` (pure) turns a graph, a schedule and a memory plan into per-node streams,
events and kernel launches at arena offsets; `check.run_gpu` / `check.check_gpu` run it with
CuPy (eagerly or as one captured CUDA graph) and compare with the float64 NumPy reference;
`measure.measure_timeline` records a measured `Timeline` with CUPTI. CuPy, nvmath-python and
cupti-python are imported only when a run starts: without them, or without a GPU, the entry
points raise one `MissingToolError` line naming the fix.
"""

from __future__ import annotations

from concurrency.execute.gpu.check import (
    GpuCheck,
    check_gpu,
    reference_inputs,
    relative_errors,
    run_gpu,
    tolerance,
)
from concurrency.execute.gpu.launch import (
    GDN_FORMS,
    MATMUL_MODES,
    WEIGHT_DTYPES,
    KernelLaunch,
    LaunchPlan,
    MatmulLaunch,
    NodeLaunch,
    Ptr,
    TensorRef,
    build_launch_plan,
    cast_weights,
)

__all__ = [
    "GDN_FORMS",
    "MATMUL_MODES",
    "WEIGHT_DTYPES",
    "GpuCheck",
    "KernelLaunch",
    "LaunchPlan",
    "MatmulLaunch",
    "NodeLaunch",
    "Ptr",
    "TensorRef",
    "build_launch_plan",
    "cast_weights",
    "check_gpu",
    "reference_inputs",
    "relative_errors",
    "run_gpu",
    "tolerance",
]
