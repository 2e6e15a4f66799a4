"""Pure planning code imports no GPU, plotting or widget library (so CI tests it fully)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Every module of the pure stages: graph, memory, timing and the CPU executor.
PURE = sorted(
    ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    for stage in ("graph", "memory", "timing", "execute")
    for path in (REPO / "concurrency" / stage).rglob("*.py")
    if "gpu" not in path.relative_to(REPO / "concurrency" / stage).parts
)
BANNED = ["cupy", "graphviz", "altair", "ipywidgets", "torch"]


def test_pure_modules_import_without_gpu_or_drawing_libraries() -> None:
    code = (
        "import sys\n"
        + "".join(f"sys.modules[{b!r}] = None\n" for b in BANNED)
        + "".join(f"import {m}\n" for m in PURE)
        + "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
