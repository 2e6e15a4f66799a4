"""ctypes access to ggml's C API in the libraries `llama-cpp-python` installs.

Only what the oracle needs: contexts, tensors (whose fields are set directly, so any LACE
node can be reproduced with exact shapes, strides, op, sources, view source and flags without
ggml's constructors' shape rules), graphs, and the graph allocator. The struct layout and the
op numbering are checked against the loaded library before use, so a different ggml version
fails with a clear message instead of planning garbage.
"""

from __future__ import annotations

import ctypes
import importlib.util
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from concurrency.errors import MissingToolError

GGML_MAX_DIMS = 4
GGML_MAX_SRC = 10
GGML_MAX_OP_PARAMS = 64
GGML_MAX_NAME = 64
FLAG_INPUT = 1
FLAG_OUTPUT = 2

#: enum ggml_op of the ggml vendored by llama-cpp-python 0.3.36, in order.
GGML_OPS = (
    "NONE DUP ADD ADD_ID ADD1 ACC SUB MUL DIV SQR SQRT LOG SIN COS SUM SUM_ROWS CUMSUM MEAN "
    "ARGMAX COUNT_EQUAL REPEAT REPEAT_BACK CONCAT SILU_BACK NORM RMS_NORM RMS_NORM_BACK "
    "GROUP_NORM L2_NORM MUL_MAT MUL_MAT_ID OUT_PROD SCALE SET CPY CONT RESHAPE VIEW PERMUTE "
    "TRANSPOSE GET_ROWS GET_ROWS_BACK SET_ROWS DIAG DIAG_MASK_INF DIAG_MASK_ZERO SOFT_MAX "
    "SOFT_MAX_BACK ROPE ROPE_BACK CLAMP CONV_TRANSPOSE_1D IM2COL IM2COL_BACK IM2COL_3D "
    "COL2IM_1D CONV_2D CONV_3D CONV_2D_DW CONV_TRANSPOSE_2D POOL_1D POOL_2D POOL_2D_BACK "
    "UPSCALE PAD PAD_REFLECT_1D ROLL ARANGE TIMESTEP_EMBEDDING ARGSORT TOP_K LEAKY_RELU TRI "
    "FILL FLASH_ATTN_EXT FLASH_ATTN_BACK SSM_CONV SSM_SCAN WIN_PART WIN_UNPART GET_REL_POS "
    "ADD_REL_POS RWKV_WKV6 GATED_LINEAR_ATTN RWKV_WKV7 SOLVE_TRI GATED_DELTA_NET "
    "LIGHTNING_INDEXER DSV4_HC_COMB DSV4_HC_PRE DSV4_HC_POST UNARY MAP_CUSTOM1 MAP_CUSTOM2 "
    "MAP_CUSTOM3 CUSTOM CROSS_ENTROPY_LOSS CROSS_ENTROPY_LOSS_BACK OPT_STEP_ADAMW OPT_STEP_SGD "
    "GLU"
).split()

GGML_TYPES = {"f32": 0, "f16": 1, "i32": 26, "i64": 27}

INSTALL_HINT = (
    "build the ggml oracle with `make oracle` (pip-builds llama-cpp-python==0.3.36 for the CPU "
    "into ~/.cache/lace/wheels and installs it into .venv)"
)


class GgmlTensor(ctypes.Structure):
    """`struct ggml_tensor` (ggml.h)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
        ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * GGML_MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * GGML_MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


class InitParams(ctypes.Structure):
    _fields_ = [
        ("mem_size", ctypes.c_size_t),
        ("mem_buffer", ctypes.c_void_p),
        ("no_alloc", ctypes.c_bool),
    ]


def library_dir() -> Path:
    """Where llama-cpp-python keeps its shared libraries; names the fix when it is absent."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise MissingToolError(f"the ggml oracle needs llama-cpp-python; {INSTALL_HINT}")
    lib = Path(spec.origin).parent / "lib"
    if not (lib / "libggml-base.so").exists():
        raise MissingToolError(f"no libggml-base.so under {lib}; {INSTALL_HINT}")
    return lib


@dataclass(frozen=True)
class Ggml:
    """The loaded libraries with typed entry points."""

    base: ctypes.CDLL
    cpu: ctypes.CDLL

    @classmethod
    def load(cls) -> Ggml:
        lib = library_dir()
        mode = ctypes.RTLD_GLOBAL
        base = ctypes.CDLL(str(lib / "libggml-base.so"), mode=mode)
        cpu = ctypes.CDLL(str(lib / "libggml-cpu.so"), mode=mode)
        g = cls(base, cpu)
        g._declare()
        g._check()
        return g

    def _declare(self) -> None:
        b, vp, sz = self.base, ctypes.c_void_p, ctypes.c_size_t
        tp = ctypes.POINTER(GgmlTensor)
        sigs = {
            "ggml_init": ([InitParams], vp),
            "ggml_free": ([vp], None),
            "ggml_tensor_overhead": ([], sz),
            "ggml_graph_overhead_custom": ([sz, ctypes.c_bool], sz),
            "ggml_new_tensor": (
                [vp, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int64)],
                tp,
            ),
            "ggml_new_graph_custom": ([vp, sz, ctypes.c_bool], vp),
            "ggml_build_forward_expand": ([vp, tp], None),
            "ggml_graph_n_nodes": ([vp], ctypes.c_int),
            "ggml_graph_node": ([vp, ctypes.c_int], tp),
            "ggml_graph_add_node": ([vp, tp], None),
            "ggml_op_name": ([ctypes.c_int], ctypes.c_char_p),
            "ggml_gallocr_new": ([vp], vp),
            "ggml_gallocr_free": ([vp], None),
            "ggml_gallocr_alloc_graph": ([vp, vp], ctypes.c_bool),
            "ggml_gallocr_reserve": ([vp, vp], ctypes.c_bool),
            "ggml_gallocr_get_buffer_size": ([vp, ctypes.c_int], sz),
            "ggml_backend_buffer_get_base": ([vp], vp),
            "ggml_backend_buft_get_alignment": ([vp], sz),
        }
        for name, (args, res) in sigs.items():
            fn = getattr(b, name)
            fn.argtypes, fn.restype = args, res
        self.cpu.ggml_backend_cpu_buffer_type.argtypes = []
        self.cpu.ggml_backend_cpu_buffer_type.restype = vp

    def _check(self) -> None:
        """Refuse a ggml whose op numbering or tensor layout differs from the one ported."""
        for i, name in enumerate(GGML_OPS):
            got = self.base.ggml_op_name(i)
            if got is None or got.decode() != name:
                raise MissingToolError(
                    f"this ggml numbers its ops differently (op {i} is {got!r}, expected "
                    f"{name!r}); the oracle supports llama-cpp-python 0.3.36: {INSTALL_HINT}"
                )
        overhead = self.base.ggml_tensor_overhead()
        ctx = self.base.ggml_init(InitParams(overhead * 2 + 1024, None, True))
        try:
            ne = (ctypes.c_int64 * 4)(3, 5, 7, 11)
            t = self.base.ggml_new_tensor(ctx, GGML_TYPES["f32"], 4, ne).contents
            if list(t.ne) != [3, 5, 7, 11] or list(t.nb) != [4, 12, 60, 420]:
                raise MissingToolError(
                    "ggml_tensor's layout differs from the one LACE knows; " + INSTALL_HINT
                )
        finally:
            self.base.ggml_free(ctx)

    @cached_property
    def op_ids(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(GGML_OPS)}

    @cached_property
    def cpu_buffer_type(self) -> int:
        return self.cpu.ggml_backend_cpu_buffer_type()
