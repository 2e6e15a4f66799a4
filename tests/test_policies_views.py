"""Policy comparison tables, the memory-map chart and the plan/hazards/run commands."""

from __future__ import annotations

import json

import pytest

from concurrency.cli import main
from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.schedule import serial_schedule, stream_schedule
from concurrency.memory.compare import compare_policies, policy_runs
from concurrency.memory.policies import POLICIES
from concurrency.memory.policies import STREAM_SAFE_POLICIES as SAFE
from concurrency.render.memory_map import HAZARD_RED, memory_map_chart, memory_map_frame


@pytest.mark.parametrize("batch", [1, 4, 8])
def test_27b_gdn_safe_policies_have_no_hazards_and_sequential_races(batch: int) -> None:
    g = build_graph("qwen3.5-27b", "gdn", "decode", batch)
    rep = detect_branches(g)
    res = {r.policy: r for r in compare_policies(g, stream_schedule(g, rep), rep, list(POLICIES))}
    for name in SAFE:
        assert res[name].hazards == (), name
    assert res["sequential"].hazards and res["interleave"].hazards
    # the seed's bug: under #16991's interleaved plan a branch overwrites the fork's bytes
    assert any(
        h.first_tensor == "attn_norm-0" or h.second_tensor == "attn_norm-0"
        for h in res["interleave"].hazards
    )


def test_tiny_sequential_overwrites_attn_norm_from_the_z_branch() -> None:
    g = build_graph("tiny", "gdn", "decode", 1)
    rep = detect_branches(g)
    (seq,) = compare_policies(g, stream_schedule(g, rep), rep, ["sequential"])
    racing = {
        (h.first_node, h.second_node)
        for h in seq.hazards
        if "attn_norm-0" in (h.first_tensor, h.second_tensor)
    }
    assert racing == {
        ("qkv-0", "z_silu-0"),
        ("alpha_proj-0", "z_silu-0"),
        ("beta_proj-0", "z_silu-0"),
    }


def test_one_stream_means_no_hazards_for_any_policy_but_interleave() -> None:
    """One stream leaves nothing unordered, so no plan races. `interleave` plans on ggml-cuda's
    interleaved node order, though, and one stream runs the graph's order: its plan hands
    bytes to a writer before their tensor's last read, in every run (uses after reuse)."""
    g = build_graph("qwen3.5-9b", "stack", "decode", 2, layers=4)
    rep = detect_branches(g)
    for r in compare_policies(g, serial_schedule(g), rep, list(POLICIES)):
        kinds = {h.kind for h in r.hazards}
        assert kinds == ({"use after reuse"} if r.policy == "interleave" else set()), r.policy


def test_cpu_runs_show_the_race_only_for_unsafe_policies() -> None:
    g = build_graph("tiny", "gdn", "decode", 1)
    rep = detect_branches(g)
    rows = {
        r["policy"]: r
        for r in policy_runs(g, stream_schedule(g, rep), rep, list(POLICIES), range(4))
    }
    assert rows["sequential"]["wrong results"] > 0
    for name in SAFE:
        assert rows[name]["wrong results"] == 0, name


def test_memory_map_outlines_hazard_tensors_in_red() -> None:
    g = build_graph("tiny", "gdn")
    rep = detect_branches(g)
    sched = stream_schedule(g, rep)
    (seq,) = compare_policies(g, sched, rep, ["sequential"])
    frame = memory_map_frame(g, sched, seq.plan, seq.hazards)
    assert frame.loc[frame.tensor == "attn_norm-0", "in_hazard"].item()
    assert (frame.y1 <= seq.plan.arena_bytes).all() and (frame.x0 < frame.x1).all()
    spec = memory_map_chart(g, sched, seq.plan, seq.hazards).to_dict()
    rect, *others = spec["layer"]
    assert rect["mark"]["type"] == "rect"
    bands = [x for x in others if x["data"]["name"] == "hazards"]
    assert [b["mark"]["type"] for b in bands] == ["rect", "point"]
    assert all(HAZARD_RED in json.dumps(b["mark"]) for b in bands)
    assert len(spec["datasets"]["hazards"]) == len(seq.hazards)
    assert others[-1]["mark"]["type"] == "rule"


def test_plan_command_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "qwen3.5-27b", "--layer", "gdn", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {r["policy"]: r for r in doc["policies"]}
    assert set(rows) == set(POLICIES) and rows["happens_before"]["hazards"] == 0
    assert rows["happens_before"]["arena_bytes"] >= rows["happens_before"]["lower_bound_bytes"]
    assert main(["hazards", "--model", "tiny", "--policy", "sequential", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "hazard(s)" in out and "more (raise --limit)" in out


def test_run_command_reports_the_error_per_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "run",
                "--model",
                "tiny",
                "--policy",
                "happens_before",
                "--seeds",
                "2",
                "--format",
                "json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert [r["seed"] for r in doc["runs"]] == [0, 1]
    assert all(r["matches"] and r["max_rel_error"] < 1e-4 for r in doc["runs"])


def test_run_rejects_large_models_with_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--model", "qwen3.5-27b", "--layer", "stack", "--layers", "4"]) == 2
    assert "tiny" in capsys.readouterr().err


# ------------------------------------------------------------------------- random graphs
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from concurrency.memory.check import check_plan  # noqa: E402
from concurrency.memory.policies import plan_memory  # noqa: E402
from tests.strategies import random_graphs, random_schedules  # noqa: E402


@settings(max_examples=150)
@given(data=st.data())
def test_safe_policies_never_race_on_random_graphs(data: st.DataObject) -> None:
    """Region policies are safe for the stream schedule of their regions; happens_before,
    no_reuse and torch_record_stream for any schedule at all."""
    g = data.draw(random_graphs())
    rep = detect_branches(g)
    sched = stream_schedule(g, rep, data.draw(st.integers(1, 8)))
    for name in SAFE:
        plan = plan_memory(g, sched, rep, name, alignment=32)
        assert check_plan(plan).hazards == (), name
    anything = data.draw(random_schedules(g))
    for name in ("happens_before", "no_reuse", "torch_record_stream"):
        plan = plan_memory(g, anything, rep, name, alignment=32)
        assert check_plan(plan).hazards == (), name


@settings(max_examples=100)
@given(g=random_graphs())
def test_one_stream_sequential_is_race_free_on_random_graphs(g) -> None:  # type: ignore[no-untyped-def]
    plan = plan_memory(g, serial_schedule(g), detect_branches(g), "sequential", alignment=32)
    assert check_plan(plan).hazards == ()
