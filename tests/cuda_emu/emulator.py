"""Run a GPU launch plan on the CPU: LACE's CUDA kernels compiled as host C++ (emu.h).

`EmuRun` mirrors `concurrency.execute.gpu.runner.DeviceRun` (upload, run, read) over host
buffers: every kernel launch of the plan runs the real kernel source (grid, blocks, threads,
barriers and warp shuffles emulated; nodes in graph order, which every schedule allows), and
cuBLASLt launches are computed with NumPy on the same operand views. It exercises the launch
plan, the argument ABI and the kernels' arithmetic and indexing without a GPU; it says nothing
about speed, NVRTC, CuPy or nvmath.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import numpy as np

from concurrency.execute.gpu.kernels import kernel_dir
from concurrency.execute.gpu.launch import (
    ARENA,
    SCRATCH,
    STORAGE_BYTES,
    KernelLaunch,
    LaunchPlan,
    MatmulLaunch,
    Ptr,
)
from concurrency.execute.gpu.runner import host_view
from concurrency.execute.gpu.storage import HOST_TYPES, to_float64, to_storage

HERE = Path(__file__).resolve().parent
_PROTO = re.compile(r'extern\s+"C"\s+void\s+(\w+)\s*\(([^)]*)\)\s*\{')
_KINDS = {  # parameter type text (after macro expansion) → launch-plan argument kind
    "char *": "ptr",
    "char*": "ptr",
    "i64": "i64",
    "long long": "i64",
    "int": "i32",
    "float": "f32",
    "double": "f64",
}
_CTYPES = {"ptr": "char*", "i64": "long long", "i32": "int", "f32": "float", "f64": "double"}


def compiler() -> str | None:
    return shutil.which("g++")


def _cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lace" / "cuda-emu"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _param_kind(param: str) -> str:
    text = " ".join(param.split())
    name = re.findall(r"\w+$", text)[0]
    ctype = text[: -len(name)].strip()
    try:
        return _KINDS[ctype]
    except KeyError:
        raise AssertionError(f"emulator: unknown kernel parameter type {ctype!r}") from None


@cache
def library(source: str) -> tuple[ctypes.CDLL, dict[str, tuple[str, ...]]]:
    """The host build of one kernel file, and each kernel's parameter kinds."""
    gxx = compiler()
    if gxx is None:
        raise RuntimeError("g++ not found")
    text = (kernel_dir() / source).read_text(encoding="utf-8")
    text = re.sub(r"extern __shared__ (\w+) (\w+)\[\];", r"\1* \2 = (\1*)emu_dynamic_smem;", text)
    flags = ["-std=c++20", "-pthread", "-include", str(HERE / "emu.h"), f"-I{kernel_dir()}"]
    key = hashlib.sha256(
        (text + (HERE / "emu.h").read_text() + (kernel_dir() / "common.cuh").read_text()).encode()
    ).hexdigest()[:16]
    work = _cache_dir() / f"{Path(source).stem}-{key}"
    work.mkdir(exist_ok=True)
    cpp = work / "kernels.cpp"
    cpp.write_text(text, encoding="utf-8")
    expanded = subprocess.run(
        [gxx, *flags, "-E", "-P", "-x", "c++", str(cpp)], capture_output=True, text=True, check=True
    ).stdout
    kinds: dict[str, tuple[str, ...]] = {}
    thunks = []
    for name, params in _PROTO.findall(expanded):
        ks = tuple(_param_kind(p) for p in params.split(",") if p.strip())
        kinds[name] = ks
        decode = "".join(
            f"    {_CTYPES[k]} p{i}; std::memcpy(&p{i}, a + {8 * i}, sizeof(p{i}));\n"
            for i, k in enumerate(ks)
        )
        call = ", ".join(f"p{i}" for i in range(len(ks)))
        thunks.append(
            f'extern "C" void emu_{name}(const unsigned char* a, unsigned gx, unsigned gy, '
            f"unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned long smem) {{\n"
            f"{decode}    emu_launch(gx, gy, gz, bx, by, bz, smem, "
            f"[&] {{ {name}({call}); }});\n}}\n"
        )
    lib_path = work / "kernels.so"
    if not lib_path.exists():
        full = work / "full.cpp"
        full.write_text(text + "\n" + "\n".join(thunks), encoding="utf-8")
        done = subprocess.run(
            [
                gxx,
                *flags,
                "-O1",
                "-shared",
                "-fPIC",
                "-x",
                "c++",
                str(full),
                "-o",
                str(lib_path) + ".tmp",
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"emulator build of {source} failed:\n{done.stderr[-3000:]}")
        os.replace(str(lib_path) + ".tmp", lib_path)
    return ctypes.CDLL(str(lib_path)), kinds


def _aligned(nbytes: int) -> np.ndarray:
    raw = np.zeros(nbytes + 512, dtype=np.uint8)
    start = (-raw.ctypes.data) % 256
    return raw[start : start + nbytes]


class EmuRun:
    """DeviceRun's interface over host memory, kernels emulated (see module docstring)."""

    def __init__(self, lp: LaunchPlan) -> None:
        self.lp = lp
        self.buffers = {name: _aligned(max(spec.nbytes, 1)) for name, spec in lp.buffers.items()}
        self.base = {name: int(buf.ctypes.data) for name, buf in self.buffers.items()}

    def address(self, ptr: Ptr) -> int:
        return self.base[ptr.buffer] + ptr.offset_bytes

    def upload(self, values: Mapping[str, np.ndarray]) -> None:
        self.buffers[ARENA][:] = 0xFF
        for leaf in self.lp.graph.leafs:
            ref = self.lp.tensors.get(leaf)
            if ref is None:
                continue
            host = to_storage(np.asarray(values[leaf]).reshape(ref.shape[::-1]), ref.dtype)
            start = ref.ptr.offset_bytes
            self.buffers[ref.ptr.buffer][start : start + host.nbytes] = host.view(np.uint8).reshape(
                -1
            )

    def run(self) -> None:
        for node in self.lp.nodes:
            for launch in node.launches:
                if isinstance(launch, KernelLaunch):
                    self._kernel(launch)
                else:
                    self._matmul(launch)

    def _kernel(self, launch: KernelLaunch) -> None:
        lib, kinds = library(launch.source)
        expected = kinds[launch.kernel]
        got = tuple(k for k, _ in launch.args)
        assert got == expected, f"{launch.kernel}: launch passes {got}, the kernel takes {expected}"
        packed = np.zeros(max(len(launch.args), 1), dtype=np.uint64)
        for i, (kind, value) in enumerate(launch.args):
            slot = packed[i : i + 1]
            if kind == "ptr":
                slot[0] = self.address(value)  # type: ignore[arg-type]
            elif kind == "i64":
                slot.view(np.int64)[0] = value
            elif kind == "i32":
                slot.view(np.int32)[0] = value
            elif kind == "f32":
                slot.view(np.float32)[0] = value
            else:
                slot.view(np.float64)[0] = value
        fn = getattr(lib, f"emu_{launch.kernel}")
        fn.restype = None
        fn(
            ctypes.c_void_p(packed.ctypes.data),
            *(ctypes.c_uint(g) for g in launch.grid),
            *(ctypes.c_uint(b) for b in launch.block),
            ctypes.c_ulong(launch.shared_bytes),
        )

    def _view(
        self, ptr: Ptr, shape: tuple[int, int], strides: tuple[int, int], dtype: str
    ) -> np.ndarray:
        buf = self.buffers[ptr.buffer]
        return np.ndarray(
            shape, dtype=HOST_TYPES[dtype], buffer=buf, offset=ptr.offset_bytes, strides=strides
        )

    def _matmul(self, mm: MatmulLaunch) -> None:
        es = STORAGE_BYTES[mm.dtype]
        x = to_float64(self._view(mm.x, (mm.n, mm.k), (mm.x_row_bytes, es), mm.dtype), mm.dtype)
        w = to_float64(self._view(mm.w, (mm.m, mm.k), (mm.w_row_bytes, es), mm.dtype), mm.dtype)
        d = self._view(mm.d, (mm.n, mm.m), (mm.d_row_bytes, 4), "f32")
        d[...] = (x @ w.T).astype(np.float32)

    def read(self, names=None) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
        out = {}
        for name in self.lp.result_keys() if names is None else names:
            ref = self.lp.tensors.get(name)
            if ref is None:
                out[name] = np.zeros(self.lp.graph[name].shape[::-1])
                continue
            out[name] = to_float64(host_view(self.buffers[ref.ptr.buffer], ref), ref.dtype)
        return out


def emu_run_gpu(
    lp: LaunchPlan,
    inputs: Mapping[str, np.ndarray],
    launch: str = "graph",
    *,
    replays: int = 1,
    activations: dict | None = None,
    stores: dict | None = None,
):
    """check.run_gpu's contract, emulated on the CPU (eager and graph are the same here)."""
    from concurrency.execute.gpu.check import activation_casts, f16_stores, read_activations

    run = EmuRun(lp)
    run.upload(inputs)
    run.run()
    if activations is not None and activation_casts(lp):
        activations.update(read_activations(lp, run.buffers[SCRATCH]))
    if stores is not None:
        stores.update(run.read(list(f16_stores(lp.graph))))
    return run.read()
