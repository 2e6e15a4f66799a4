"""The LACE peer's GDN-core graph (`lace_peers.core_graph`: independent GATED_DELTA_NET copies,
q, k, v as strided views of one conv tensor) through LACE's launch plan and CuPy runner, on the
CPU with the kernels emulated (tests/cuda_emu), against the float64 reference: the graph the
device times is a well-formed GDN graph that LACE computes right, every copy. Skipped without
g++."""

from __future__ import annotations

import pytest
from cuda_emu import emulator, fake_cupy

from concurrency.execute.gpu import check_gpu
from concurrency.execute.gpu import kernels as kernel_files
from concurrency.graph.branches import detect_branches
from concurrency.graph.schedule import serial_schedule
from concurrency.memory.policies import plan_memory
from concurrency.peers.cases import GdnDims
from concurrency.peers.lace_peers import core_graph

pytestmark = pytest.mark.skipif(emulator.compiler() is None, reason="g++ is not installed here")

SMALL = GdnDims(d_model=64, hk=2, hv=4, dk=16, dv=16, conv_kernel=4)


@pytest.fixture(autouse=True)
def fake_gpu(monkeypatch):
    fake_cupy.use_in_place_of_cupy(monkeypatch, "gated_delta.cu")
    yield
    kernel_files.module.cache_clear()


@pytest.mark.parametrize("batch,tokens,copies", [(2, 1, 3), (1, 65, 2)])
def test_core_graph_runs_every_copy_right(batch: int, tokens: int, copies: int) -> None:
    graph = core_graph(SMALL, batch, tokens, copies)
    gdn = [n for n in graph.nodes if graph[n].op == "GATED_DELTA_NET"]
    assert len(gdn) == copies
    report = detect_branches(graph)
    schedule = serial_schedule(graph)
    plan = plan_memory(graph, schedule, report, "happens_before")
    check = check_gpu(graph, schedule, plan, launch="graph", seed=4)
    assert check.ok, dict(check.errors)
    assert {k for k in check.errors if k.startswith("gdn")} == set(gdn)
