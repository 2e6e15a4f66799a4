"""Human-readable sizes and shapes, shared by the CLI, tables and drawings."""

from __future__ import annotations


def format_bytes(n: int) -> str:
    """1536 → '1.5 KiB'; exact bytes below 1 KiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_shape(shape: tuple[int, ...]) -> str:
    """ggml ne without trailing ones: (10240, 1, 1, 1) → '10240×1'."""
    dims = list(shape)
    while len(dims) > 2 and dims[-1] == 1:
        dims.pop()
    return "×".join(str(d) for d in dims)
