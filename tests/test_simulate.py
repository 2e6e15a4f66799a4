"""The GPU table, the cost model, the simulator, the metrics and `lace simulate`."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from concurrency.cli import main
from concurrency.errors import ConfigError, LaceError, UnknownNameError
from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.builders.context import GraphContext
from concurrency.graph.ir import Graph, GraphMeta, TensorKind
from concurrency.graph.schedule import schedule_from_streams, serial_schedule, stream_schedule
from concurrency.timing.cost import expected_experts_used, graph_costs, node_cost
from concurrency.timing.gpus import GPUS, GpuSpec, get_gpu
from concurrency.timing.metrics import (
    active_us,
    busy_us,
    closeness,
    compare,
    concurrency_us,
    critical_path,
    critical_path_us,
    makespan_us,
    overlap_ratio,
    speedup,
    summary,
    work_bound_us,
)
from concurrency.timing.simulate import isolated_us, simulate
from concurrency.timing.stream_study import (
    PR_21897_SPEEDUPS,
    compare_streams,
    launch_gap_sweep,
    speedup_sweep,
)
from concurrency.timing.timeline import KernelSpan, RunMeta, Timeline

META = GraphMeta(model="hand", layer="gdn", mode="decode", batch=1, tokens=1, n_layers=1)
H100 = get_gpu("h100")


def gemv_pair(rows: int, k: int = 4096, tokens: int = 1, chained: bool = False) -> Graph:
    """x → a = W1·x and b = W2·x (or, chained, b = silu(a)): two kernels, one input."""
    ctx = GraphContext(layer=0)
    x = ctx.leaf("x", "f32", (k, tokens), TensorKind.INPUT)
    w1 = ctx.leaf("w1", "f32", (k, rows), TensorKind.WEIGHT)
    a = ctx.mul_mat(w1, x, "a")
    if chained:
        b = ctx.unary(a, "silu", "b")
    else:
        w2 = ctx.leaf("w2", "f32", (k, rows), TensorKind.WEIGHT)
        b = ctx.mul_mat(w2, x, "b")
    ctx.expand(a)
    ctx.expand(b)
    return ctx.finish(META, None)


def gdn_27b(batch: int = 1) -> Graph:
    return build_graph("qwen3.5-27b", "gdn", "decode", batch)


# ------------------------------------------------------------------ GPU table


def test_every_gpu_and_alias_resolves_with_a_datasheet_source() -> None:
    assert set(GPUS) == {"h100-sxm", "h200", "rtx5090", "rtx4090", "a100", "l40s"}
    for name, spec in GPUS.items():
        assert get_gpu(name) is spec and get_gpu(name.upper()) is spec
        assert "datasheet" in spec.source or "whitepaper" in spec.source
        assert spec.launch_gap_graph_us == 2.5 and spec.launch_gap_eager_us == 10.0
    assert get_gpu("h100") is GPUS["h100-sxm"]
    assert (get_gpu("h200").sm_count, get_gpu("h200").mem_bandwidth_gbps) == (132, 4800)


def test_unknown_gpu_names_the_choices() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown GPU 'v100'.*h200"):
        get_gpu("v100")


def test_users_bring_their_own_spec() -> None:
    mine = GpuSpec.from_dict({**get_gpu("h100").to_dict(), "name": "mine", "sm_count": 66})
    assert get_gpu(mine) is mine and mine.sm_count == 66
    with pytest.raises(ConfigError, match="unknown GPU spec keys"):
        GpuSpec.from_dict({**mine.to_dict(), "colour": "green"})
    with pytest.raises(ConfigError, match="missing"):
        GpuSpec.from_dict({"name": "half"})
    with pytest.raises(ConfigError, match="sm_count"):
        GpuSpec.from_dict({**mine.to_dict(), "sm_count": 0})


# ------------------------------------------------------------------ cost model


def test_mul_mat_costs_two_mnk_and_reads_bf16_weights_once() -> None:
    g = gemv_pair(rows=48, k=5120, tokens=3)
    c = node_cost(g, "a-0")
    assert c.flops == 2 * 3 * 48 * 5120
    assert c.bytes_read == 48 * 5120 * 2 + 5120 * 3 * 4  # bf16 weights + f32 activations
    assert c.bytes_written == 48 * 3 * 4
    assert c.grid_blocks == 48 and c.tensor_cores  # a GEMV: a block per output row
    q4 = node_cost(g, "a-0", weight_bytes_per_param=0.5)
    assert q4.bytes_read == 48 * 5120 * 0.5 + 5120 * 3 * 4
    with pytest.raises(ConfigError, match="weight_bytes_per_param"):
        graph_costs(g, weight_bytes_per_param=0)


def test_views_and_empty_tensors_cost_and_launch_nothing() -> None:
    g = gdn_27b()
    costs = dict(zip(g.nodes, graph_costs(g), strict=True))
    for name in ("conv_states_cells-0", "qkv_transposed-0", "gate_4d-0", "conv_states_zero-0"):
        c = costs[name]
        assert (c.flops, c.bytes_read, c.bytes_written, c.grid_blocks) == (0, 0, 0, 0)
        assert not c.launches and isolated_us(c, H100) == 0
    assert sum(c.launches for c in costs.values()) == 28


def test_gated_delta_net_counts_seven_flops_and_eight_state_bytes_per_element() -> None:
    batch = 4
    g = gdn_27b(batch)
    c = node_cost(g, "gdn-0")
    hv, s = 48, 128
    assert c.flops == 7 * hv * s * s * batch
    state = 4 * hv * s * s * batch
    assert state <= c.bytes_read < state * 1.1  # the state and small q, k, v, gates
    assert state <= c.bytes_written < state * 1.1  # the new state and the output
    assert c.grid_blocks == hv * batch


def test_mul_mat_id_reads_only_the_experts_in_use() -> None:
    g = build_graph("qwen3.5-35b-a3b", "stack", "decode", 1, None, 4)
    up = node_cost(g, "moe_up-0")
    weights = g["blk.0.ffn_up_exps.weight"]
    k, n, n_expert = weights.shape[:3]
    assert n_expert == 256 and expected_experts_used(256, 8, 1) == pytest.approx(8)
    ids = g["moe_topk-0"].nbytes
    assert up.bytes_read == pytest.approx(k * n * 8 * 2 + g["moe_input-0"].nbytes + ids)
    assert up.flops == 2 * k * n * 8


# ------------------------------------------------------------------ simulator


def test_two_small_kernels_on_two_streams_finish_together_and_sooner() -> None:
    g = gemv_pair(rows=16)
    serial = simulate(g, serial_schedule(g), "h100")
    parallel = simulate(g, schedule_from_streams(g, [0, 1]), "h100")
    a, b = parallel.span("a-0"), parallel.span("b-0")
    assert a is not None and b is not None
    assert a.start_us == b.start_us == 2.5 and a.end_us == pytest.approx(b.end_us)
    alone = isolated_us(node_cost(g, "a-0"), H100)
    assert a.duration_us == pytest.approx(alone)  # 32 of 132 SMs: no contention
    assert makespan_us(parallel) < makespan_us(serial)
    assert makespan_us(serial) == pytest.approx(2 * alone + 2.5)
    assert speedup(serial, parallel) == pytest.approx((2 * alone + 2.5) / alone)


def test_two_kernels_that_saturate_the_bandwidth_gain_nothing_but_the_gap() -> None:
    g = gemv_pair(rows=16384)
    serial = simulate(g, serial_schedule(g), "h100")
    parallel = simulate(g, schedule_from_streams(g, [0, 1]), "h100")
    alone = isolated_us(node_cost(g, "a-0"), H100)
    assert makespan_us(parallel) == pytest.approx(2 * alone, rel=1e-6)
    assert makespan_us(serial) - makespan_us(parallel) == pytest.approx(2.5, rel=1e-6)


def test_dependencies_and_launch_gaps_are_respected_across_streams() -> None:
    g = gemv_pair(rows=64, chained=True)
    sched = schedule_from_streams(g, [0, 1])
    assert sched.waits[1] == (0,)
    t = simulate(g, sched, "h100")
    a, b = t.span("a-0"), t.span("b-0")
    assert a is not None and b is not None
    assert b.start_us == pytest.approx(a.end_us + 2.5)


@pytest.mark.parametrize(("layer", "batch"), [("gdn", 1), ("gdn", 16), ("attn", 4)])
def test_every_happens_before_edge_is_honoured(layer: str, batch: int) -> None:
    g = build_graph("qwen3.5-27b", layer, "decode", batch)
    sched = stream_schedule(g, detect_branches(g))
    t = simulate(g, sched, "h200")
    kernels = [(g.index[s.node], s) for s in t.spans]
    for i, a in kernels:
        for j, b in kernels:
            if sched.happens_before(i, j):
                assert a.end_us <= b.start_us + 1e-9, (a.node, b.node)
    for k in t.streams:  # a stream runs one kernel at a time
        on = sorted((s for s in t.spans if s.stream == k), key=lambda s: s.start_us)
        assert all(x.end_us <= y.start_us for x, y in itertools.pairwise(on))


def test_simulation_is_deterministic() -> None:
    g = gdn_27b(4)
    sched = stream_schedule(g, detect_branches(g))
    assert simulate(g, sched, "rtx5090") == simulate(g, sched, "rtx5090")


def test_eager_launches_are_serialised_on_the_host() -> None:
    g = gdn_27b()
    t = simulate(g, stream_schedule(g, detect_branches(g)), "h100", launch="eager")
    starts = sorted((g.index[s.node], s.start_us) for s in t.spans)
    for k, (_, start) in enumerate(starts, start=1):
        assert start >= k * 10.0 - 1e-9
    assert t.meta.launch == "eager"
    assert makespan_us(t) >= critical_path_us(g, None, "h100", launch="eager")


def test_bad_requests_are_one_line_errors() -> None:
    g = gdn_27b()
    other = gemv_pair(rows=16)
    with pytest.raises(ConfigError, match="another graph"):
        simulate(g, serial_schedule(other), "h100")
    with pytest.raises(UnknownNameError, match="launch mode"):
        simulate(g, serial_schedule(g), "h100", launch="lazy")


def test_must_show_streams_beat_one_stream_but_not_the_critical_path() -> None:
    """27B GDN decode B=1 on an H100: bound ≤ multi-stream makespan < one-stream makespan."""
    g = gdn_27b()
    cmp = compare_streams(g, "h100")
    bound = critical_path_us(g, cmp.schedule, "h100")
    assert cmp.critical_path_us <= bound  # the joins only lengthen the chain
    multi, one = makespan_us(cmp.parallel), makespan_us(cmp.serial)
    assert bound <= multi < one
    assert work_bound_us(g, "h100") <= multi
    assert cmp.parallel.meta.streams == 5 and cmp.serial.meta.streams == 1
    rows = cmp.rows()
    assert [r["streams"] for r in rows] == [5, 1]
    assert rows[0]["speedup"] == pytest.approx(one / multi) and rows[1]["speedup"] == 1.0
    assert 0 < rows[0]["closeness"] <= 1 and rows[0]["overlap_ratio"] > 0


def test_critical_path_lists_a_dependency_chain() -> None:
    g = gdn_27b()
    path = critical_path(g, None, "h100")
    assert path.nodes[0] == "attn_norm_rms-0" and path.nodes[-1] == "attn_residual-0"
    assert "gdn-0" in path.nodes
    assert path.length_us == critical_path_us(g, None, "h100")


def test_speedup_sweep_gives_a_row_per_batch_and_gpu() -> None:
    rows = speedup_sweep("qwen3.5-0.8b", "gdn", [1, 8], ["h100", "rtx5090"])
    assert [(r["batch"], r["device"]) for r in rows] == [
        (1, "h100-sxm"),
        (1, "rtx5090"),
        (8, "h100-sxm"),
        (8, "rtx5090"),
    ]
    assert all(r["critical_path_us"] <= r["parallel_us"] < r["serial_us"] for r in rows)


def test_the_gain_grows_with_the_launch_gap() -> None:
    """In this model the streams' gain on a decode layer is launch latency hidden behind other
    streams: with no gap at all, five streams gain almost nothing."""
    rows = launch_gap_sweep(gdn_27b(), "h100", (0.0, 1.0, 2.5))
    gains = [r["speedup"] for r in rows]
    assert gains[0] < 1.01 < gains[1] < gains[2]
    assert [r["launch_gap_us"] for r in rows] == [0.0, 1.0, 2.5]
    assert PR_21897_SPEEDUPS[("qwen3.5-27b", 1)] == 1.05


# ------------------------------------------------------------------ metrics


def hand_timeline() -> Timeline:
    """Stream 0 runs a [0, 4) and c [6, 7); stream 1 runs b [2, 5)."""
    spans = (
        KernelSpan("a", "k", 0, 0.0, 4.0),
        KernelSpan("b", "k", 1, 2.0, 5.0),
        KernelSpan("c", "k", 0, 6.0, 7.0),
    )
    return Timeline(spans, RunMeta(device="h100", streams=2))


def test_metrics_on_a_hand_timeline() -> None:
    t = hand_timeline()
    assert makespan_us(t) == 7.0
    assert busy_us(t) == {0: 5.0, 1: 3.0}
    assert active_us(t) == 6.0  # [0, 5) and [6, 7)
    assert concurrency_us(t) == 2.0  # [2, 4)
    assert overlap_ratio(t) == pytest.approx(2 / 6)
    assert closeness(3.5, t) == 0.5
    serial = Timeline((KernelSpan("a", "k", 0, 0.0, 14.0),), RunMeta(device="h100", streams=1))
    assert speedup(serial, t) == 2.0
    row = summary(t, critical_path_us=3.5, serial=serial)
    assert (row["makespan_us"], row["idle_us"], row["speedup"]) == (7.0, 1.0, 2.0)
    empty = Timeline((), RunMeta(device="h100"))
    assert makespan_us(empty) == overlap_ratio(empty) == 0.0
    with pytest.raises(LaceError, match="empty"):
        speedup(t, empty)


def test_compare_matches_kernels_by_node() -> None:
    sim = hand_timeline()
    measured = Timeline(
        (
            KernelSpan("a", "k", 0, 10.0, 15.0, "measured"),  # 5 µs against 4
            KernelSpan("b", "k", 1, 12.0, 15.0, "measured"),  # 3 µs against 3
            KernelSpan("z", "k", 1, 16.0, 24.0, "measured"),
        ),
        RunMeta(device="h100", source="measured"),
    )
    cmp = compare(sim, measured)
    errors = {k.node: k.relative_error for k in cmp.kernels}
    assert errors == {"a": pytest.approx(-0.2), "b": 0.0}
    assert (cmp.only_simulated, cmp.only_measured) == (("c",), ("z",))
    assert cmp.makespan_error == pytest.approx((7 - 14) / 14)
    assert cmp.median_abs_error == pytest.approx(0.1)
    assert cmp.rows()[0]["node"] == "a"


# ------------------------------------------------------------------ CLI and chart


def test_cli_simulate_prints_both_stream_counts(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--model", "qwen3.5-27b", "--gpu", "h100", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["gpu"] == "h100-sxm"
    multi, one = doc["rows"]
    assert (multi["streams"], one["streams"]) == (5, 1)
    assert multi["critical_path_us"] <= multi["makespan_us"] < one["makespan_us"]

    code = main(["simulate", "--model", "tiny", "--max-streams", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "makespan" in out and "speedup" in out


def test_cli_simulate_writes_a_valid_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from concurrency.timing.trace import load_trace

    path = tmp_path / "t.json"
    assert main(["simulate", "--model", "tiny", "--trace", str(path)]) == 0
    assert "trace written" in capsys.readouterr().out
    counts = {e["ph"] for e in load_trace(path)["traceEvents"]}
    assert counts == {"M", "X", "s", "f", "C"}


def test_cli_simulate_bad_gpu_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--model", "tiny", "--gpu", "v100"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lace: error: unknown GPU 'v100'") and err.count("\n") == 1

    spec = tmp_path / "mine.json"
    spec.write_text(json.dumps({**get_gpu("l40s").to_dict(), "name": "mine"}))
    assert main(["simulate", "--model", "tiny", "--gpu", str(spec)]) == 0
    assert "on mine" in capsys.readouterr().out
    spec.write_text("[1, 2]")
    assert main(["simulate", "--model", "tiny", "--gpu", str(spec)]) == 2
    assert "JSON object" in capsys.readouterr().err


def test_timeline_chart_has_one_bar_per_kernel() -> None:
    from concurrency.render.timeline_chart import speedup_chart, timeline_chart

    g = gdn_27b()
    t = simulate(g, stream_schedule(g, detect_branches(g)), "h100")
    spec = timeline_chart(t).to_dict()
    bars = spec["layer"][0]
    assert bars["mark"]["type"] == "bar"
    rows = spec["datasets"]["kernels"]
    assert len(rows) == len(t) == 28
    assert {r["lane"] for r in rows} == {f"stream {k}" for k in range(5)}
    assert bars["encoding"]["color"]["scale"]["range"][1] == "#ff7f0e"  # stream 1, as elsewhere
    import pandas as pd

    sweep = speedup_chart(pd.DataFrame(speedup_sweep("tiny", "gdn", [1, 2]))).to_dict()
    assert sweep["mark"]["type"] == "line"
