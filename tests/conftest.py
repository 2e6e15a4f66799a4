"""Shared fixtures and the GPU marker's skip rule."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

LLAMA_DUMP = Path(__file__).resolve().parent / "data" / "llama-graph" / "qwen35-tiny-b1.json"

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the GPU device runs only tests/test_gpu_*.py, which need no hypothesis
    pass
else:
    settings.register_profile(
        "ci",
        derandomize=True,
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile("ci")


def _gpu_available() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU with CuPy (none found)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def llama_dump() -> dict:
    """The real llama.cpp node dump of the tiny model (a copy of the project's reference
    dump, tests/data/llama-graph; readable listing in shared/reference/llama-graph)."""
    return json.loads(LLAMA_DUMP.read_text())
