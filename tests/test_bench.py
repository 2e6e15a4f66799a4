"""Benchmarks (pytest-benchmark): run once as smoke tests in the normal suite; measured with
`make bench`, which prints the timing table."""

from __future__ import annotations

import pytest

from concurrency.branches import detect_branches
from concurrency.builders import build_graph


@pytest.mark.benchmark(group="build")
def test_bench_build_27b_stack(benchmark) -> None:  # type: ignore[no-untyped-def]
    g = benchmark(build_graph, "qwen3.5-27b", "stack", "decode", 1)
    assert g.meta.n_layers == 64 and len(g) > 3000


@pytest.mark.benchmark(group="build")
def test_bench_detect_27b_stack(benchmark) -> None:  # type: ignore[no-untyped-def]
    g = build_graph("qwen3.5-27b", "stack", "decode", 1)
    rep = benchmark(detect_branches, g, "general")
    assert len(rep.regions) == 128  # one mixer fork and one FFN fork per layer
