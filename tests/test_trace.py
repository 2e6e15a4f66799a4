"""Chrome trace export: tracks per stream, kernels, flow arrows, the live-bytes counter, and
the validator that guards what Perfetto relies on."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.schedule import stream_schedule
from concurrency.memory.policies import plan_memory
from concurrency.timing.simulate import simulate
from concurrency.timing.trace import (
    TraceError,
    live_intervals,
    load_trace,
    save_trace,
    to_chrome_trace,
    validate_trace,
)


@pytest.fixture(scope="module")
def run():  # type: ignore[no-untyped-def]
    g = build_graph("qwen3.5-27b", "gdn", "decode", 2)
    report = detect_branches(g)
    sched = stream_schedule(g, report)
    plan = plan_memory(g, sched, report, "happens_before")
    return g, sched, plan, simulate(g, sched, "h100")


def _events(doc: dict, ph: str) -> list[dict]:
    return [e for e in doc["traceEvents"] if e["ph"] == ph]


def test_full_trace_validates_and_has_a_track_per_stream(run) -> None:  # type: ignore[no-untyped-def]
    g, sched, plan, t = run
    doc = to_chrome_trace(t, sched, plan, g)
    counts = validate_trace(doc)
    assert counts["X"] == len(t) == 28
    names = {e["tid"]: e["args"]["name"] for e in _events(doc, "M") if e["name"] == "thread_name"}
    assert names == {k: f"stream {k}" for k in range(5)}
    assert doc["otherData"]["lace"]["device"] == "h100-sxm"
    json.dumps(doc)  # plain JSON


def test_kernels_carry_node_op_bytes_and_flops(run) -> None:  # type: ignore[no-untyped-def]
    g, sched, plan, t = run
    doc = to_chrome_trace(t, sched, plan, g)
    qkv = next(e for e in _events(doc, "X") if e["args"]["node"] == "qkv-0")
    span = t.span("qkv-0")
    assert (qkv["ts"], qkv["dur"], qkv["tid"]) == (span.start_us, span.duration_us, span.stream)
    assert qkv["args"]["op"] == "MUL_MAT" and qkv["args"]["flops"] == 2 * 2 * 5120 * 10240
    assert qkv["args"]["bytes"] > 5120 * 10240 * 2


def test_flows_go_from_recording_kernel_to_waiting_kernel(run) -> None:  # type: ignore[no-untyped-def]
    _, sched, _, t = run
    doc = to_chrome_trace(t, sched)
    starts = {e["id"]: e for e in _events(doc, "s")}
    finishes = {e["id"]: e for e in _events(doc, "f")}
    assert starts and set(starts) == set(finishes)
    assert all(f["bp"] == "e" for f in finishes.values())
    assert all(starts[i]["tid"] != finishes[i]["tid"] for i in starts)  # cross-stream only
    # the fork: attn_norm on stream 0 releases every branch
    fork = t.span("attn_norm-0")
    fork_targets = {finishes[i]["tid"] for i, s in starts.items() if s["ts"] == fork.start_us}
    assert fork_targets == {1, 2, 3, 4}
    # the join: gdn-0 waits for the qkv, alpha and beta branches
    gdn = t.span("gdn-0")
    into_gdn = {starts[i]["tid"] for i, f in finishes.items() if f["ts"] == gdn.start_us}
    assert into_gdn == {1, 2, 3}


def test_live_bytes_counter_follows_the_plan(run) -> None:  # type: ignore[no-untyped-def]
    g, sched, plan, t = run
    doc = to_chrome_trace(t, sched, plan, g)
    counter = [e["args"]["live_bytes"] for e in _events(doc, "C")]
    assert counter and min(counter) >= 0 and counter[-1] == 0
    intervals = live_intervals(t, plan, g)
    assert max(counter) <= sum(b for _, _, b in intervals)
    assert all(start <= end for start, end, _ in intervals)


def test_without_schedule_or_plan_only_tracks_and_kernels(run) -> None:  # type: ignore[no-untyped-def]
    _, _, plan, t = run
    counts = validate_trace(to_chrome_trace(t))
    assert set(counts) == {"M", "X"}
    with pytest.raises(TraceError, match="graph"):
        to_chrome_trace(t, plan=plan)


def test_save_and_load_round_trip(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    g, sched, plan, t = run
    path = save_trace(tmp_path / "trace.json", t, schedule=sched, plan=plan, graph=g)
    assert load_trace(path) == to_chrome_trace(t, sched, plan, g)
    path.write_text("{oops")
    with pytest.raises(TraceError, match=r"trace\.json: not valid JSON"):
        load_trace(path)
    with pytest.raises(TraceError, match="not found"):
        load_trace(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda d: d.pop("traceEvents"), "traceEvents"),
        (lambda d: _first(d, "X").update(ph="Q"), "phase 'Q'"),
        (lambda d: _first(d, "X").pop("dur"), "duration"),
        (lambda d: _first(d, "f").pop("bp"), "bp"),
        (lambda d: d["traceEvents"].remove(_first(d, "f")), "matching"),
        (lambda d: _last(d, "X").update(ts=-1.0), "back in time"),
        (lambda d: _last(d, "C").update(ts=-1.0), "back in time"),
    ],
)
def test_validator_catches_broken_traces(run, break_it, message) -> None:  # type: ignore[no-untyped-def]
    g, sched, plan, t = run
    doc = copy.deepcopy(to_chrome_trace(t, sched, plan, g))
    break_it(doc)
    with pytest.raises(TraceError, match=message):
        validate_trace(doc)


def _first(doc: dict, ph: str) -> dict:
    return next(e for e in doc["traceEvents"] if e["ph"] == ph)


def _last(doc: dict, ph: str) -> dict:
    return [e for e in doc["traceEvents"] if e["ph"] == ph][-1]
