"""The race experiment's pure parts: which plans a case replays and what the checker demands of
each, the planted ordered overwrite (checked by the NumPy arena executor, which shares no code
with the checker: it must be wrong in every execution order, the plan it came from in none), the
window wideners, the on-device comparison's arithmetic (NumPy as the array module, against
`check.relative_errors`), and the table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from concurrency.data import RACE_COLUMNS
from concurrency.errors import LaceError
from concurrency.execute.gpu.cases import MULTI, ONE, CaseContext, GpuCase
from concurrency.execute.gpu.check import relative_errors
from concurrency.execute.gpu.launch import build_launch_plan
from concurrency.execute.gpu.race import (
    RaceRow,
    RaceSettings,
    ResultView,
    bf16_values,
    compare_results,
    race_table,
    relative_error,
)
from concurrency.execute.gpu.race_plans import (
    EVERY_RUN,
    MULTI_POLICIES,
    NEVER,
    PLANTED,
    TIMING,
    DelayLaunch,
    expectation,
    overwrite_candidates,
    planted_overwrite,
    race_subjects,
    repeatable,
    target_race,
    verdict,
    widen,
    widener_for,
)
from concurrency.execute.numpy_arena import compare_runs
from concurrency.memory.check import WAR, check_plan

CASES = [
    GpuCase("tiny", "gdn", 1, weights="f32"),
    GpuCase("tiny", "attn", 2, weights="f32"),
    GpuCase("tiny", "stack", 2, layers=4, weights="f32"),
]


def test_expectations_and_verdicts() -> None:
    assert expectation(0, 0) == NEVER
    assert expectation(5, 0) == TIMING
    assert expectation(0, 1) == expectation(3, 2) == EVERY_RUN
    assert (verdict(NEVER, 10, 0), verdict(NEVER, 10, 1)) == ("ok", "FAIL")
    assert (verdict(EVERY_RUN, 10, 10), verdict(EVERY_RUN, 10, 9)) == ("ok", "FAIL")
    assert (verdict(TIMING, 10, 3), verdict(TIMING, 10, 0)) == ("shown", "not shown")
    assert verdict(TIMING, 10, 0, bitwise_runs=2) == "bits only"
    assert verdict(NEVER, 10, 0, bitwise_runs=2) == "ok"  # within tolerance: not the plan's
    assert verdict(NEVER, 0, 0) == "not run"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.slug)
def test_subjects_cover_every_plan_with_the_checker_s_verdict(case: GpuCase) -> None:
    ctx = CaseContext(case)
    subjects = race_subjects(ctx)
    labels = [s.label for s in subjects]
    assert labels == [*MULTI_POLICIES[:3], PLANTED, *MULTI_POLICIES[3:], "interleave (one stream)"]
    assert subjects[0].placed.policy == "happens_before" and subjects[0].check.ok
    for s in subjects:
        again = check_plan(s.plan, s.placed.schedule)
        assert len(again.races) == len(s.check.races), s.label
        assert len(again.uses_after_reuse) == len(s.check.uses_after_reuse), s.label
    by = {s.label: s for s in subjects}
    assert by["happens_before"].check.ok and by["no_reuse"].check.ok
    assert by["sequential"].check.races and not by["sequential"].check.uses_after_reuse
    assert by["interleave (one stream)"].placed.schedule.n_streams == 1
    assert by["interleave (one stream)"].check.uses_after_reuse
    if case.layer == "stack":  # the engine's own offsets
        assert by["sequential"].placed.source.startswith("engine flow: replays the pp")
    else:
        assert by["sequential"].placed.source == "graph flow: planned on this graph"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.slug)
def test_the_planted_overwrite_corrupts_every_cpu_run_and_its_source_none(case: GpuCase) -> None:
    ctx = CaseContext(case)
    safe = ctx.place("happens_before", MULTI)
    planted = planted_overwrite(safe.plan, safe.schedule)
    assert planted.check.uses_after_reuse and not planted.check.races
    assert any(h.first_node == planted.moved for h in planted.check.uses_after_reuse)
    graph = ctx.graph
    assert graph[planted.moved].dtype == graph[planted.onto].dtype == "f32"
    assert not graph[planted.onto].is_input
    assert planted.plan.offsets[planted.moved] != safe.plan.offsets[planted.moved]
    moved = {k for k in safe.plan.offsets if planted.plan.offsets[k] != safe.plan.offsets[k]}
    assert moved == {planted.moved}
    assert planted.plan.arena_bytes >= safe.plan.arena_bytes
    # the oracle: the NumPy arena executor in five execution orders the schedule allows
    wrong = compare_runs(graph, safe.schedule, planted.plan, seeds=range(5))
    assert all(not r.ok(1e-4) for r in wrong), [r.error for r in wrong]
    right = compare_runs(graph, safe.schedule, safe.plan, seeds=range(5))
    assert all(r.ok(1e-4) for r in right)


def test_candidates_keep_the_order_and_skip_self_overwrites() -> None:
    ctx = CaseContext(GpuCase("tiny", "gdn", 1))
    safe = ctx.place("happens_before", MULTI)
    graph, schedule = ctx.graph, safe.schedule
    found = list(overwrite_candidates(safe.plan, schedule))
    assert found
    for moved, onto, reader, offset in found:
        w, r = graph.index[moved], graph.index[reader]
        assert schedule.happens_before(w, r) and onto not in graph[moved].srcs
        assert safe.plan.offsets[onto] <= offset < safe.plan.offsets[onto] + graph[onto].nbytes


def test_no_candidate_is_one_clear_error() -> None:
    ctx = CaseContext(GpuCase("tiny", "gdn", 1))
    serial = ctx.place("no_reuse", ONE)
    with pytest.raises(LaceError, match="plant the overwrite in a larger graph"):
        planted_overwrite(serial.plan, serial.schedule, max_tries=0)


# ---------------------------------------------------------------------------- wideners
def _racy(case: GpuCase, policy: str = "sequential"):  # type: ignore[no-untyped-def]
    ctx = CaseContext(case)
    placed = ctx.place(policy, MULTI)
    lp = build_launch_plan(ctx.graph, placed.schedule, placed.plan, matmul="custom")
    return ctx, placed, lp


def test_the_target_race_prefers_a_write_after_read() -> None:
    _, placed, _ = _racy(GpuCase("qwen3.5-27b", "gdn", 1))
    target = target_race(placed.check)
    assert target is not None and target.access == WAR
    assert not placed.schedule.happens_before(
        placed.check.graph.index[target.first_node], placed.check.graph.index[target.second_node]
    )
    safe = CaseContext(GpuCase("tiny", "gdn", 1)).place("happens_before", MULTI)
    assert target_race(safe.check) is None


def test_a_delay_goes_first_on_the_race_s_first_node_and_nothing_else_changes() -> None:
    _, placed, lp = _racy(GpuCase("qwen3.5-27b", "gdn", 1))
    w = widener_for(placed.check, lp, "delay", 350.0)
    assert w is not None and w.kind == "delay" and w.node == target_race(placed.check).first_node
    wide = widen(lp, w)
    for before, after in zip(lp.nodes, wide.nodes, strict=True):
        if before.node == w.node:
            assert after.launches == (DelayLaunch(350_000), *before.launches)
            assert after.stream == before.stream == w.stream
        else:
            assert after == before
    assert wide.tensors == lp.tensors and wide.buffers == lp.buffers
    assert "delay 350 µs before" in w.describe() and "aimed at the race" in w.describe()


def test_a_repeat_slows_only_the_race_s_stream_with_an_idempotent_node() -> None:
    ctx, placed, lp = _racy(GpuCase("qwen3.5-27b", "stack", 16, layers=4))
    w = widener_for(placed.check, lp, "repeat", 3)
    assert w is not None and w.kind == "repeat"
    target = target_race(placed.check)
    index = ctx.graph.index
    node = lp.nodes[index[w.node]]
    assert node.stream == lp.nodes[index[target.first_node]].stream
    assert index[w.node] < index[target.first_node]
    assert not placed.schedule.happens_before(index[w.node], index[target.second_node])
    assert repeatable(lp, node)
    wide = widen(lp, w)
    assert wide.nodes[index[w.node]].launches == node.launches * 4
    # an in-place node writes over its input: repeating it would change values
    _, layer, layer_lp = _racy(GpuCase("tiny", "gdn", 1), "happens_before")
    inplace = [n for n in layer_lp.nodes if n.node in layer.plan.inplace_of and n.launches]
    assert inplace and not any(repeatable(layer_lp, n) for n in inplace)


def test_widener_kind_and_unknown_node_are_errors() -> None:
    _, placed, lp = _racy(GpuCase("tiny", "gdn", 1))
    with pytest.raises(LaceError, match="widener kind must be one of"):
        widener_for(placed.check, lp, "shake")
    w = widener_for(placed.check, lp, "delay", 10)
    with pytest.raises(LaceError, match="is not in this launch plan"):
        widen(lp, type(w)(w.kind, "nope", 0, 1.0, ""))
    with pytest.raises(LaceError, match="widen must be one of"):
        RaceSettings(widen="sometimes")


# ---------------------------------------------------------------------------- comparing
def test_relative_error_matches_the_host_check() -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(4, 8))
    for got in (ref.copy(), ref + 1e-3 * rng.normal(size=ref.shape), np.full_like(ref, np.nan)):
        with np.errstate(invalid="ignore"):
            mine = float(relative_error(np, ref.astype(np.float32), got.astype(np.float32)))
        host = relative_errors({"x": ref.astype(np.float32)}, {"x": got.astype(np.float32)})
        assert mine == pytest.approx(host["x"]) or mine == host["x"] == math.inf


def test_compare_results_flags_bits_and_errors() -> None:
    ref = np.arange(6, dtype=np.float32)
    got = ref.copy()
    view = ResultView("x", "f32", got.view(np.uint32), got, ref.view(np.uint32), ref)
    differs, error = compare_results(np, [view])
    assert (bool(differs), float(error)) == (False, 0.0)
    got[3] = np.nextafter(got[3], np.float32(10))  # one ulp: bits differ, error tiny
    differs, error = compare_results(np, [view])
    assert bool(differs) and 0 < float(error) < 1e-6
    bits = np.array([0x3F80, 0xC000], dtype=np.uint16)  # bf16 1.0 and -2.0
    assert bf16_values(np, bits).tolist() == [1.0, -2.0]
    ref_bits = bits.copy()
    bf16 = ResultView("y", "bf16", bits, None, ref_bits, bf16_values(np, ref_bits))
    assert not bool(compare_results(np, [bf16])[0])
    bits[1] = 0x4000  # +2.0: the values are decoded from the live bits at each comparison
    differs, error = compare_results(np, [bf16])
    assert bool(differs) and float(error) == pytest.approx(4 / math.sqrt(5))


def test_race_rows_and_table() -> None:
    case = GpuCase("qwen3.5-27b", "stack", 1, layers=4)
    rows = [
        RaceRow(case, "sequential", "sequential", "engine flow", 5, 48, 0, 300, 300, 12),
        RaceRow(case, "planted", "hb+planted", "engine flow", 5, 0, 1, 300, 300, 300),
        RaceRow(case, "sequential + delay", "sequential", "", 5, 48, 0, 300, 300, 300, "delay 1"),
        RaceRow(case, "no_reuse", "no_reuse", "", 5, 0, 0, 300, 2, 1, max_error=1.0),
        RaceRow(case, "alloc_dep", "alloc_dep", "", 5, 0, 0, status="not run (time budget)"),
    ]
    verdicts = [r.verdict for r in rows]
    assert verdicts == ["shown", "ok", "shown", "FAIL", "not run (time budget)"]
    for r in rows:
        assert set(r.row()) >= set(RACE_COLUMNS)
        assert r.row()["layers"] == 4 and r.row()["flow"] == "engine"
    text = race_table([r.row() for r in rows])
    assert len(text) == 1 + len(rows) + 1  # header, rows, the widened note
    assert "FAIL" in text[4] and "widened (qwen3.5-27b stack×4 B=1, sequential + delay)" in text[-1]
