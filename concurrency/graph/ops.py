"""ggml's op tables that every stage needs: element sizes, view ops, in-place ops.

Kept apart from the IR so that modules the IR itself uses (`deps`) can read them without an
import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

DTYPE_BYTES: Mapping[str, int] = MappingProxyType({"f32": 4, "f16": 2, "i32": 4, "i64": 8})

#: ggml ops that only reinterpret memory (ggml-cuda's detector calls these "no-ops").
VIEW_OPS = frozenset({"RESHAPE", "VIEW", "TRANSPOSE", "PERMUTE"})

#: ggml ops whose output may take a parent's memory in place (`ggml_op_can_inplace`).
INPLACE_OPS = frozenset(
    {
        "FILL",
        "SCALE",
        "DIAG_MASK_ZERO",
        "DIAG_MASK_INF",
        "ADD",
        "ADD_ID",
        "ADD1",
        "SUB",
        "MUL",
        "DIV",
        "SQR",
        "SQRT",
        "LOG",
        "UNARY",
        "ROPE",
        "ROPE_BACK",
        "SILU_BACK",
        "RMS_NORM",
        "RMS_NORM_BACK",
        "CLAMP",
        "SOFT_MAX",
        "SOFT_MAX_BACK",
    }
)
