"""Where the CUDA kernel sources are, and how they are compiled.

The sources live in the repository's top-level `kernels/` folder and ship inside the package as
`concurrency/kernels/` (a symlink in the source tree, regular files in a wheel). At run time CuPy
compiles each file once per process with NVRTC (`RawModule`; CuPy also caches the binaries on
disk). `nvcc_compile` builds a file with nvcc for sm_90, which the CI test uses to check that
every kernel compiles and to read ptxas's register and spill report.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from concurrency.errors import LaceError, MissingToolError

COMPILE_OPTIONS = ("-std=c++17",)
_KERNEL_RE = re.compile(
    r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\('
)
_MACRO_RE = re.compile(r"^(\w+)\(([^)]*)\)\s*$", re.MULTILINE)


def kernel_dir() -> Path:
    """The folder holding the .cu files (inside the installed package)."""
    here = Path(__file__).resolve().parents[2] / "kernels"
    if not here.is_dir():
        raise LaceError(
            f"the CUDA kernel sources are missing ({here}); reinstall lace-kit, or run from a "
            "checkout where concurrency/kernels links to the top-level kernels/ folder"
        )
    return here


def sources() -> tuple[str, ...]:
    """The kernel source files, by name (one per op family)."""
    return tuple(sorted(p.name for p in kernel_dir().glob("*.cu")))


def kernel_names(source: str) -> frozenset[str]:
    """The `extern "C"` kernels a source file defines, with its macro-generated ones expanded
    (GDN_REC(4) → gdn_recurrent_v4, FATTN(f16, DT_F16, 2) → flash_attn_ext_f16_d2, …)."""
    text = (kernel_dir() / source).read_text(encoding="utf-8")
    names = set(_KERNEL_RE.findall(text))
    macros = {
        "GDN_REC": lambda a: [f"gdn_recurrent_v{a[0]}"],
        "GDN_REC_L": lambda a: [f"gdn_recurrent_v{a[0]}_l{a[1]}"],
        "GDN_REC_S": lambda a: [f"gdn_recurrent_s{a[0]}"],
        "GDN_CHUNKED": lambda a: [f"gdn_chunk_{k}_{a[2]}" for k in ("prep", "state", "out")],
        "FATTN": lambda a: [f"flash_attn_ext_{a[0]}_d{a[2]}"],
        "GEMV_KERNELS": lambda a: [
            f"mul_mat_vec_{a[0]}",
            f"gemm_{a[0]}",
            *(f"mul_mat_vec16_{a[0]}_c{c}" for c in (1, 2, 4, 8)),
        ],
    }
    for macro, raw in _MACRO_RE.findall(text):
        if macro in macros:
            names.update(macros[macro]([x.strip() for x in raw.split(",")]))
    return frozenset(n for n in names if not n.startswith("__"))


def compile_options() -> tuple[str, ...]:
    return (*COMPILE_OPTIONS, f"-I{kernel_dir()}")


@cache
def module(source: str):  # type: ignore[no-untyped-def]
    """The compiled CuPy RawModule of one kernel file (compiled once per process)."""
    from concurrency.execute.gpu.backend import cupy

    cp = cupy()
    path = kernel_dir() / source
    if not path.is_file():
        raise LaceError(f"kernel source {source!r} not found in {kernel_dir()}")
    try:
        return cp.RawModule(code=path.read_text(encoding="utf-8"), options=compile_options())
    except cp.cuda.compiler.CompileException as exc:
        first = str(exc).strip().splitlines()
        raise LaceError(f"kernels/{source} does not compile with NVRTC: {first[:3]}") from None


@dataclass(frozen=True)
class PtxasReport:
    """ptxas's resource report for one kernel of an nvcc build."""

    kernel: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    shared_bytes: int


_PTXAS_FN = re.compile(r"Function properties for (\w+)")
_PTXAS_STACK = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)
_PTXAS_REGS = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def nvcc_compile(source: str, out_dir: Path, arch: str = "sm_90") -> tuple[PtxasReport, ...]:
    """Compile one kernel file with nvcc (`-std=c++17 -arch=<arch> -c -Xptxas -v`) and return
    ptxas's per-kernel report; a compile error raises LaceError with nvcc's first lines."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise MissingToolError("nvcc not found on PATH; install the CUDA toolkit to build kernels")
    out = out_dir / (Path(source).stem + ".o")
    cmd = [nvcc, *COMPILE_OPTIONS, f"-arch={arch}", "-c", "-Xptxas", "-v", f"-I{kernel_dir()}"]
    done = subprocess.run(
        [*cmd, str(kernel_dir() / source), "-o", str(out)], capture_output=True, text=True
    )
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if "error" in ln][:5]
        raise LaceError(f"nvcc could not compile kernels/{source}: {lines or done.stderr[-500:]}")
    return parse_ptxas(done.stderr)


def parse_ptxas(text: str) -> tuple[PtxasReport, ...]:
    """Per-kernel reports from ptxas -v output (function properties line, then usage)."""
    reports = []
    current: str | None = None
    stack = (0, 0, 0)
    for line in text.splitlines():
        m = _PTXAS_FN.search(line)
        if m:
            current = m.group(1)
            continue
        m = _PTXAS_STACK.search(line)
        if m and current:
            stack = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
            continue
        m = _PTXAS_REGS.search(line)
        if m and current:
            shared = int(m.group(2)) if m.group(2) else 0
            reports.append(
                PtxasReport(current, int(m.group(1)), stack[1], stack[2], stack[0], shared)
            )
            current = None
    return tuple(reports)
