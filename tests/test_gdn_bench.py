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

PEERS = {
    (1, 1): {"lace": 4.5, "fla": 5.0, "ggml-cuda": 3.0},
    (4, 1): {"lace": 10.0, "fla": 7.3, "ggml-cuda": 8.0},
    (1, 512): {"lace": 200.0, "fla": 75.0, "ggml-cuda": 500.0},
    (1, 2048): {"lace": 700.0, "fla": 220.0, "ggml-cuda": 2500.0},
}


def test_goals_are_the_faster_peer_for_decode_and_fla_for_prefill() -> None:
    assert gdn_bench.goal_us(PEERS[(1, 1)], 1) == 3.0
    assert gdn_bench.goal_us(PEERS[(4, 1)], 1) == 7.3
    assert gdn_bench.goal_us(PEERS[(1, 512)], 512) == 75.0
    assert gdn_bench.goal_us({"ggml-cuda": 3.0}, 1) is None  # fla missing: no goal, no verdict


def test_peer_figures_come_from_the_recorded_peers_file(tmp_path) -> None:
    """The default is data/'s peers file: every decode and prefill case has LACE, fla and
    ggml-cuda from one run; a file that is not a peers file is one clear error."""
    from concurrency.errors import LaceError

    table = gdn_bench.peer_us()
    assert {(1, 1), (4, 1), (16, 1), (64, 1), (1, 512), (4, 512), (1, 2048)} <= set(table)
    assert all({"lace", "fla", "ggml-cuda"} <= set(v) for v in table.values())
    bad = tmp_path / "peers.json"
    bad.write_text('{"rows": 3}')
    with pytest.raises(LaceError, match="not a LACE peers result"):
        gdn_bench.peer_us(bad)


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
    lines = gdn_bench.format_tables(results, PEERS)
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
