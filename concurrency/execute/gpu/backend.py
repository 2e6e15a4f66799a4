"""The GPU libraries, imported only when a GPU entry point is called.

Each accessor returns the module or raises one `MissingToolError` line that names the fix, so
`import concurrency` and every pure stage work on machines without CUDA, and a missing GPU or
library is a sentence, not a traceback from deep inside CuPy.
"""

from __future__ import annotations

from types import ModuleType

from concurrency.errors import MissingToolError

INSTALL_HINT = (
    "pip install 'lace-kit[gpu]' (CUDA 13 driver) or 'lace-kit[gpu-cuda12]' (CUDA 12 driver)"
)


def cupy() -> ModuleType:
    """CuPy, with at least one CUDA GPU visible."""
    try:
        import cupy as cp
    except ImportError as exc:
        raise MissingToolError(f"the GPU executor needs CuPy ({exc}); {INSTALL_HINT}") from None
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError, a missing driver library, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MissingToolError(
            f"no CUDA GPU found ({reason}); run on a machine with an NVIDIA GPU and driver"
        ) from None
    if count < 1:
        raise MissingToolError("no CUDA GPU found; run on a machine with an NVIDIA GPU and driver")
    return cp


def nvmath_advanced() -> ModuleType:
    """nvmath.linalg.advanced (cuBLASLt matmuls)."""
    try:
        import nvmath.linalg.advanced as adv
    except ImportError as exc:
        raise MissingToolError(
            f"projections through cuBLASLt need nvmath-python ({exc}); {INSTALL_HINT}, "
            "or run with matmul='custom' (LACE's own GEMV/GEMM kernels)"
        ) from None
    return adv


def cupti() -> ModuleType:
    """cupti-python's `cupti` module (activity API)."""
    try:
        from cupti import cupti as module
    except ImportError as exc:
        raise MissingToolError(
            f"measured timelines need cupti-python ({exc}); {INSTALL_HINT}"
        ) from None
    return module


def device_name() -> str:
    """The name of the current CUDA device (e.g. 'NVIDIA H200')."""
    cp = cupy()
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)
