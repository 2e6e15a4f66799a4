"""Host-side element storage: values in the types the GPU keeps them in, and back.

Pure NumPy. bf16 has no NumPy type, so bf16 tensors travel as their 16-bit patterns (round to
nearest even from float32, as CUDA's cvt.rn.bf16.f32 and PyTorch round). The reference rounds
the cast weights with these same functions, so the GPU and the float64 reference compute with
identical weight values and the comparison measures only the kernels' arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from concurrency.errors import LaceError

#: NumPy type of each storage type's elements as they sit in device memory.
HOST_TYPES: Mapping[str, type] = {
    "f32": np.float32,
    "f16": np.float16,
    "bf16": np.uint16,
    "i32": np.int32,
    "i64": np.int64,
}


def to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float values → bf16 bit patterns (uint16), rounding to nearest even; NaN stays NaN."""
    f = np.ascontiguousarray(values, dtype=np.float32)
    u = f.view(np.uint32).astype(np.uint64)
    bits = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    bits[np.isnan(f)] = 0x7FC0
    return bits


def from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    """bf16 bit patterns (uint16) → float32 values (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_storage(values: np.ndarray, dtype: str) -> np.ndarray:
    """A C-contiguous host array holding `values` as the device stores `dtype` elements."""
    if dtype == "bf16":
        return to_bf16_bits(values)
    try:
        host = HOST_TYPES[dtype]
    except KeyError:
        raise LaceError(f"no host type for storage type {dtype!r}") from None
    return np.ascontiguousarray(values, dtype=host)


def to_float64(stored: np.ndarray, dtype: str) -> np.ndarray:
    """Stored elements (as `to_storage` makes them, any strides) → float64 values."""
    if dtype == "bf16":
        return from_bf16_bits(stored).astype(np.float64)
    return np.asarray(stored, dtype=np.float64)


def round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """`values` rounded to `dtype` and back to float64 (what the device will compute with)."""
    if dtype in ("f32", "f16", "bf16"):
        return to_float64(to_storage(values, dtype), dtype)
    return np.asarray(values)
