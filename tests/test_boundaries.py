"""Pure planning code imports no GPU, plotting or widget library (so CI tests it fully)."""

from __future__ import annotations

import subprocess
import sys

PURE = [
    "concurrency.ir",
    "concurrency.config",
    "concurrency.builders",
    "concurrency.deps",
    "concurrency.branches",
    "concurrency.schedule",
    "concurrency.alloc.gallocr",
    "concurrency.policies",
    "concurrency.lower_bound",
    "concurrency.hazards",
    "concurrency.engine_flow",
    "concurrency.engine_hazards",
    "concurrency.executor_numpy",
    "concurrency.cost",
    "concurrency.simulate",
    "concurrency.metrics",
    "concurrency.gpus",
]
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
