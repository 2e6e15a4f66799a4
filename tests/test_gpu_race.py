"""The race experiment and the replay sweep on a real GPU, small: what the checker demands must
hold on the device (safe plans never differ, the planted ordered overwrite and interleave on one
stream differ in every replay), a delay widener is bound and named, and one graph's runs time
side by side. `lace record` runs the full experiment; these keep its machinery honest."""

from __future__ import annotations

import math

import pytest

from concurrency.execute.gpu.cases import MULTI, ONE, GpuCase
from concurrency.execute.gpu.race import RaceSettings, race_case
from concurrency.execute.gpu.race_plans import EVERY_RUN, NEVER

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("layer", ["gdn", "attn", "stack"])
def test_race_verdicts_hold_on_the_gpu(layer: str, record_property) -> None:
    case = GpuCase("tiny", layer, 2, layers=4 if layer == "stack" else None, weights="f32")
    rows = race_case(case, RaceSettings(replays=50, widen="always"))
    failures = [f"{r.plan}: {r.verdict} {r.error}" for r in rows if r.verdict in ("FAIL", "error")]
    assert not failures, failures
    by_plan = {r.plan: r for r in rows}
    for r in rows:
        if r.expected == NEVER:
            assert r.wrong_runs == 0, r.plan
        if r.expected == EVERY_RUN:
            assert r.wrong_runs == r.runs == 50, r.plan
    assert by_plan["planted"].expected == by_plan["interleave (one stream)"].expected == EVERY_RUN
    widened = [r for r in rows if r.widened]
    assert widened and all(r.widened.startswith("delay ") for r in widened)
    ref = rows[0]
    assert ref.plan == "happens_before" and ref.bitwise_runs == 0  # deterministic kernels
    assert not math.isnan(ref.safe_vs_float64) and ref.safe_vs_float64 <= ref.tolerance
    shown = {r.plan: f"{r.wrong_runs}/{r.runs}" for r in rows}
    record_property("race", str(shown))


def test_one_graph_times_every_run_side_by_side() -> None:
    from concurrency.execute.gpu.record import RecordSettings, SweepGroup, record_group

    settings = RecordSettings(rounds=2, per_round=5)
    case = settings.case("tiny", "gdn", 1)
    runs = ((ONE, "sequential"), (MULTI, "happens_before"), (MULTI, "no_reuse"))
    group = SweepGroup(case, runs, ((MULTI, "happens_before"),))
    rows, timelines = record_group(group, settings)
    assert [r["status"] for r in rows] == ["ok"] * 3, [r["error"] for r in rows]
    assert all(r["replays"] == 10 and r["median_us"] > 0 for r in rows)
    assert rows[0]["streams"] == 1 and rows[1]["streams"] > 1
    ((kind, policy, timeline),) = timelines
    assert (kind, policy) == (MULTI, "happens_before") and timeline.meta.source == "measured"
    assert timeline.meta.streams == rows[1]["streams"]
