"""The GDN device benchmark's own logic without a GPU (concurrency.peers.gdn_bench): the goal
of issue 13 per case, the tables it prints from results (a met goal, a missed one with its
ratio, a case that did not run), and the per-kernel timing path (capture of one launch
repeated, over the CPU emulation's stand-in for CuPy, on a small GDN core graph)."""

from __future__ import annotations

import sys

import pytest
from cuda_emu import emulator, fake_cupy

from concurrency.execute.gpu import kernels as kernel_files
from concurrency.execute.gpu import reference_inputs
from concurrency.peers import gdn_bench
from concurrency.peers.cases import GdnDims


def test_goals_are_the_faster_peer_for_decode_and_fla_for_prefill() -> None:
    assert gdn_bench.goal_us(1, 1) == 3.1 and gdn_bench.goal_us(64, 1) == 132.0
    assert gdn_bench.goal_us(1, 512) == 75.7 and gdn_bench.goal_us(1, 2048) == 220.4


def test_tables_mark_each_goal() -> None:
    results = {
        "core": [
            {"batch": 1, "tokens": 1, "status": "ok", "median_us": 3.0},
            {"batch": 4, "tokens": 1, "status": "ok", "median_us": 14.6},
            {"batch": 1, "tokens": 512, "status": "failed", "median_us": None},
        ],
        "tf32": [{"batch": 1, "tokens": 2048, "median_us": 99.0}],
        "kernels": [
            {
                "batch": 1,
                "tokens": 512,
                "form": "chunked",
                "kernels": ["gdn_chunk_prep_d128", "gdn_chunk_state_d128", "gdn_chunk_out_d128"],
                "us": [10.0, 20.0, 30.0],
            }
        ],
        "layer": [{"batch": 1, "one_us": 120.0, "multi_us": 100.0, "streams": 4, "floor_us": 50.0}],
    }
    lines = gdn_bench.format_tables(results)
    by_case = {line.split("  ")[0].strip(): line for line in lines}
    assert by_case["decode B=1"].endswith("yes")
    assert by_case["decode B=4"].endswith("no (2.00×)")
    assert by_case["prefill B=1 T=512"].endswith("—")
    assert "99.0" in by_case["prefill B=1 T=2048"]
    assert any("prep    10.0" in line and "sum    60.0" in line for line in lines)
    assert any(line.split()[:5] == ["1", "120.0", "100.0", "4", "1.200"] for line in lines)


@pytest.mark.skipif(emulator.compiler() is None, reason="g++ is not installed here")
def test_kernel_times_capture_each_launch(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy.module())
    kernel_files.module.cache_clear()
    try:
        from concurrency.execute.gpu.bench import timed_plan
        from concurrency.execute.gpu.runner import DeviceRun
        from concurrency.peers.lace_peers import core_graph

        small = GdnDims(d_model=64, hk=2, hv=4, dk=16, dv=16, conv_kernel=4)
        graph = core_graph(small, 1, 65, 1)
        lp = timed_plan(graph, "one", "happens_before", "f32", "chunked")
        (index,) = [n.index for n in lp.nodes if n.op == "GATED_DELTA_NET"]
        run = DeviceRun(lp)
        run.upload(reference_inputs(graph, 5))
        run.run_eager()
        launched = []
        monkeypatch.setattr(
            fake_cupy.CUPTI, "launched", lambda name: launched.append(name) or 0, raising=True
        )
        times = gdn_bench.kernel_times_us(run, index, 2, 1)
        assert times == [0.0, 0.0, 0.0]
        kinds = ("prep", "state", "out")
        assert launched == [f"gdn_chunk_{k}_d32" for k in kinds for _ in range(2)]
    finally:
        kernel_files.module.cache_clear()
