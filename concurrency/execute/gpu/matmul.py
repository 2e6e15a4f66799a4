"""Projections through cuBLASLt with nvmath-python: planned once, executed inside capture.

A `MatmulLaunch` names three fixed device regions: X (n × k, the activations in the weight's
type), W (m × k, the weight) and D (n × m, the f32 result at its planned arena offset). The
nvmath `Matmul` gets X, Wᵀ (a column-major view of W, no copy) and D as operand C with beta = 0
and `inplace=True`, so cuBLASLt writes the result straight into the arena (D = X·Wᵀ; C is not
read when beta is 0). The object is planned once when the launch is bound; its workspace is
allocated at the first (eager) execution, after which `execute(stream)` is a single cuBLASLt
call that stream capture records into the CUDA graph.

Operands are CuPy arrays for f32 and f16. CuPy has no bfloat16 type, so bf16 operands are
PyTorch tensors over the same memory (DLPack), when PyTorch is importable.
"""

from __future__ import annotations

from typing import Any

from concurrency.errors import MissingToolError
from concurrency.execute.gpu import backend
from concurrency.execute.gpu.launch import STORAGE_BYTES, MatmulLaunch

_CUPY_TYPES = {"f32": "float32", "f16": "float16"}


class BoundMatmul:
    """One planned cuBLASLt matmul over fixed addresses of a `DeviceRun`."""

    def __init__(self, run: Any, launch: MatmulLaunch) -> None:
        adv = backend.nvmath_advanced()
        cp = run.cp
        self.launch = launch
        es = STORAGE_BYTES[launch.dtype]
        m, n, k = launch.m, launch.n, launch.k

        def view(address: int, shape: tuple[int, int], strides: tuple[int, int], dtype: str) -> Any:
            span = (shape[0] - 1) * strides[0] + (shape[1] - 1) * strides[1] + STORAGE_BYTES[dtype]
            mem = cp.cuda.UnownedMemory(address, span, run)
            storage = (
                "int16" if dtype == "bf16" else _CUPY_TYPES[dtype]
            )  # int16: a type torch views as bf16
            return cp.ndarray(shape, storage, cp.cuda.MemoryPointer(mem, 0), strides=strides)

        x = view(run.address(launch.x), (n, k), (launch.x_row_bytes, es), launch.dtype)
        w_t = view(run.address(launch.w), (k, m), (es, launch.w_row_bytes), launch.dtype)
        d = view(run.address(launch.d), (n, m), (launch.d_row_bytes, 4), "f32")
        self.torch_operands = launch.dtype == "bf16"
        if self.torch_operands:
            x, w_t, d = _as_torch_bf16(x), _as_torch_bf16(w_t), _as_torch_f32(d)
        main = run.streams[0]
        stream = main.ptr if self.torch_operands else main
        self.mm = adv.Matmul(x, w_t, c=d, beta=0.0, options={"inplace": True}, stream=stream)
        self.mm.plan(stream=stream)

    def __call__(self, stream: Any) -> None:
        self.mm.execute(stream=stream.ptr if self.torch_operands else stream)


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MissingToolError(
            "bf16 projections through nvmath-python need PyTorch for bfloat16 operands (CuPy "
            "has no bfloat16); install torch, or use matmul='custom' or weight_dtype='f16'"
        ) from None
    return torch


def _as_torch_bf16(array: Any) -> Any:
    torch = _torch()
    return torch.from_dlpack(array).view(torch.bfloat16)


def _as_torch_f32(array: Any) -> Any:
    return _torch().from_dlpack(array)
