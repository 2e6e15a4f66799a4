"""`lace record` and `lace bench` without a GPU: the sweep's cases and their order, the cases'
graphs and plans, alternating rounds, the bench table from a recorded fixture (tests/data/
gpu-recording, written by `python tests/emulated_gpu.py`), JSON-only output, and one clear line
where a GPU is needed."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from concurrency.cli import main
from concurrency.data import REPLAYS, load_manifest, load_table
from concurrency.errors import ConfigError, LaceError
from concurrency.execute.gpu.bench import (
    ReplayStats,
    alternating_times,
    bench_rows,
    bench_table,
    round_orders,
)
from concurrency.execute.gpu.cases import MULTI, ONE, SMALL_VOCAB, CaseContext, GpuCase
from concurrency.execute.gpu.record import (
    DEFAULT_BATCHES,
    DEFAULT_TIMELINE_BATCHES,
    RecordSettings,
    plan_summary,
    race_cases,
    recording_name,
    sweep_groups,
)
from concurrency.execute.gpu.record_text import race_summary, speedup_grid
from concurrency.memory.policies import POLICIES

FIXTURE = Path(__file__).resolve().parent / "data" / "gpu-recording"


# ----------------------------------------------------------------------------- the cases
def test_sweep_groups_cover_the_grid_timeline_batches_first() -> None:
    settings = RecordSettings()
    groups = sweep_groups(settings)
    assert len(groups) == 2 * 3 * len(DEFAULT_BATCHES)
    order = list(dict.fromkeys(g.case.batch for g in groups))
    assert order == [
        1,
        2,
        8,
        64,
        4,
        16,
        32,
    ]  # GEMV batches (B ≤ 2) first; timeline batches first in each
    n_first = 2 * 3 * len(DEFAULT_TIMELINE_BATCHES)
    labels = {g.case.label for g in groups}
    assert "qwen3.5-27b stack×4 B=64" in labels and "qwen3.5-0.8b attn B=2" in labels
    for g in groups:
        assert g.runs == ((ONE, "sequential"), *((MULTI, p) for p in POLICIES))
        expected = 2 if g.case.batch in DEFAULT_TIMELINE_BATCHES else 0
        assert len(g.timelines) == expected
        assert set(g.timelines) <= set(g.runs)
    doc = plan_summary(settings)
    assert doc["runs"] == len(groups) * (1 + len(POLICIES)) and doc["timelines"] == 2 * n_first
    assert doc["race_cases"] == [c.label for c in race_cases(settings)]
    assert len(doc["race_cases"]) == 9 and doc["race_cases"][0] == "qwen3.5-27b gdn B=1"


def test_settings_are_checked() -> None:
    with pytest.raises(LaceError, match="unknown stages"):
        RecordSettings(stages=("race", "film"))
    with pytest.raises(LaceError, match="unknown policies"):
        RecordSettings(policies=("greedy",))
    with pytest.raises(ConfigError, match="needs its number of layers"):
        GpuCase("tiny", "stack", 1)


def test_a_case_rebuilds_from_its_recorded_config() -> None:
    case = GpuCase("qwen3.5-27b", "stack", 8, layers=4, weights="f16")
    doc = json.loads(json.dumps(case.config_doc()))
    assert doc["overrides"] == {"n_vocab": SMALL_VOCAB} and doc["flow"] == "engine"
    again = GpuCase.from_config_doc(doc, layer="stack", batch=8, layers=4)
    assert again == case
    assert case.graph().meta.n_layers == 4 and case.config().n_vocab == SMALL_VOCAB
    with pytest.raises(ConfigError, match="record again"):
        GpuCase.from_config_doc({"preset": "tiny"}, layer="gdn", batch=1, layers=0)


def test_one_stream_runs_the_serial_schedule_and_stacks_the_engine_s_offsets() -> None:
    ctx = CaseContext(GpuCase("tiny", "stack", 2, layers=4))
    one = ctx.place("sequential", ONE)
    multi = ctx.place("sequential", MULTI)
    assert one.schedule.n_streams == 1 and multi.schedule.n_streams > 1
    assert one.check.ok and multi.races > 0
    assert one.source.startswith("engine flow: ") and multi.source.startswith("engine flow: ")
    layer = CaseContext(GpuCase("tiny", "gdn", 2)).place("happens_before", MULTI)
    assert layer.source == "graph flow: planned on this graph" and layer.check.ok


def test_recording_names_are_unique() -> None:
    assert recording_name("NVIDIA H200", "2026-12-01") == "nvidia-h200-2026-12-01"
    taken = ["nvidia-h200-2026-12-01", "nvidia-h200-2026-12-01-2"]
    assert recording_name("NVIDIA H200", "2026-12-01", taken) == "nvidia-h200-2026-12-01-3"
    assert recording_name("GPU (remark)", "d") == "gpu-d"


# ----------------------------------------------------------------------------- timing
def test_round_orders_alternate() -> None:
    assert round_orders(2, 4) == [[0, 1], [1, 0], [0, 1], [1, 0]]
    orders = round_orders(3, 6)
    assert all(sorted(o) == [0, 1, 2] for o in orders)
    assert {o[0] for o in orders} == {0, 1, 2} and {o[-1] for o in orders} == {0, 1, 2}
    with pytest.raises(LaceError):
        round_orders(0, 1)


class _Timed:
    """A run whose replay times are its name, recording the order it was called in."""

    calls: ClassVar[list[str]] = []

    def __init__(self, name: str, us: float) -> None:
        self.name, self.us = name, us

    def replay_times_us(self, graph_exec: object, count: int) -> np.ndarray:
        _Timed.calls.append(self.name)
        return np.full(count, self.us)


def test_alternating_times_keep_each_run_s_samples() -> None:
    _Timed.calls = []
    runs = [(_Timed("one", 10.0), None), (_Timed("multi", 8.0), None)]
    times = alternating_times(runs, rounds=3, per_round=4)
    assert [t.tolist() for t in times] == [[10.0] * 12, [8.0] * 12]
    assert _Timed.calls == ["one", "multi", "multi", "one", "one", "multi"]


def test_replay_stats_bandwidth_and_floor() -> None:
    stats = ReplayStats.of(np.array([10.0, 20.0, 30.0]), floor_bytes=4_230_000, bytes_per_s=4.23e12)
    assert stats.median_us == 20.0 and stats.floor_us == pytest.approx(1.0)
    assert stats.bandwidth_gb_s == pytest.approx(4_230_000 / 20e-6 / 1e9)
    assert stats.floor_ratio == pytest.approx(20.0)


def _row(schedule: str, policy: str, us: float, **more: object) -> dict[str, object]:
    base = {"model": "m", "config": "{}", "layer": "gdn", "layers": 0, "batch": 1}
    base |= {"schedule": schedule, "policy": policy, "median_us": us, "streams": 5}
    base |= {"bandwidth_gb_s": 1.0, "floor_us": 2.0, "floor_ratio": us / 2.0, "replays": 100}
    return base | {"status": "ok"} | more


def test_bench_rows_pair_each_multi_run_with_its_one_stream_run() -> None:
    rows = [
        _row("one", "sequential", 12.0, streams=1),
        _row("multi", "happens_before", 10.0),
        _row("multi", "sequential", 9.0),
        _row("multi", "no_reuse", 11.0, status="error"),
        _row("multi", "happens_before", 5.0, batch=4),  # no one-stream row for B=4
    ]
    paired = bench_rows(rows)
    assert [(r["policy"], r["speedup"]) for r in paired] == [
        ("happens_before", 1.2),
        ("sequential", 12.0 / 9.0),
    ]
    assert bench_rows(rows, ["happens_before"])[0]["one_us"] == 12.0
    lines = bench_table(paired)
    assert len(lines) == 3 and "1.200" in lines[1]
    grid = speedup_grid(rows)
    assert "12/10 1.20×" in grid[1] and "B1 5.0" in grid[-1]


def test_race_summary_marks_failures() -> None:
    row = {"model": "m", "layer": "gdn", "layers": 0, "batch": 1, "status": "ok"}
    row |= {"races": 0, "uses_after_reuse": 0, "runs": 3, "safe_vs_float64": 1e-6}
    rows = [
        row | {"plan": "happens_before", "wrong_runs": 0, "verdict": "ok"},
        row | {"plan": "no_reuse", "wrong_runs": 1, "verdict": "FAIL"},
        row | {"plan": "planted", "wrong_runs": 3, "uses_after_reuse": 1, "verdict": "ok"},
    ]
    (line,) = race_summary(rows)
    assert "[ref vs f64 1.0e-06]" in line and "hb 0/3" in line
    assert "!nore 1/3" in line and "planted 3/3 (R0 U1)" in line


# ----------------------------------------------------------------------------- the fixture
def test_the_fixture_is_a_valid_recording() -> None:
    entries = load_manifest(FIXTURE)
    assert {e.kind for e in entries} == {"timeline", "replays", "race"}
    frame = load_table(FIXTURE, REPLAYS)
    assert set(frame["status"]) == {"ok"} and len(frame) == 2 * 2 * 3


def test_bench_from_data_prints_the_recorded_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--from-data", str(FIXTURE), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    frame = load_table(FIXTURE, REPLAYS)
    assert len(doc["rows"]) == 4  # gdn and attn at B = 1 and 2, happens_before
    for row in doc["rows"]:
        pick = frame[(frame["layer"] == row["layer"]) & (frame["batch"] == row["batch"])]
        one = pick[pick["schedule"] == "one"]["median_us"].item()
        multi = pick[(pick["schedule"] == "multi") & (pick["policy"] == "happens_before")]
        assert row["speedup"] == pytest.approx(one / multi["median_us"].item())
        assert row["source"] == "measured" and "emulated" in row["device"]
    assert doc["source"][0].startswith("measured on emulated CPU stand-in")
    assert main(["bench", "--from-data", str(FIXTURE), "--policies", "all", "--batches", "2"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("measured on emulated") and len(text) == 1 + 1 + 2 * 2


def test_bench_from_data_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "manifest.json").write_text('{"schema": "lace-data-manifest/2", "entries": []}')
    assert main(["bench", "--from-data", str(tmp_path)]) == 2
    assert "holds no recorded replay table" in capsys.readouterr().err
    assert main(["bench", "--from-data", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_without_a_gpu_record_and_bench_say_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # no CuPy here, whatever is installed
    assert main(["record", "--out", "somewhere"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lace record runs on a GPU" in err and "--dry-run" in err
    assert main(["bench"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--from-data" in err and "Traceback" not in err


def test_record_dry_run_lists_the_cases(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["record", "--dry-run", "--models", "tiny", "--batches", "1", "2"]
    assert main([*argv, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["groups"] == [f"tiny {k} B={b}" for b in (1, 2) for k in ("gdn", "attn", "stack×4")]
    assert doc["runs"] == 6 * (1 + len(POLICIES)) and doc["timelines"] == 2 * 3
    assert main(["record", "--dry-run", "--models", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert not math.isnan(doc["replays_per_run"])


def test_overlap_notes_name_the_worst_same_stream_pair() -> None:
    from concurrency.execute.gpu.record import overlap_notes
    from concurrency.timing.timeline import KernelSpan, RunMeta, Timeline

    meta = RunMeta(device="d", model="m", layer="gdn", mode="decode", batch=1, policy="p",
                   streams=1, launch="graph", source="measured")  # fmt: skip
    spans = (
        KernelSpan("a", "k", 0, 0.0, 2.0, "measured"),
        KernelSpan("b", "k", 0, 1.68, 3.0, "measured"),
        KernelSpan("c", "k", 0, 2.995, 4.0, "measured"),  # 0.005 µs: timer skew, not named
    )
    (note,) = overlap_notes("case one sequential", Timeline(spans, meta))
    assert "1 same-stream kernel pair(s) overlap in CUPTI time" in note
    assert "the most 0.32 µs (a → b on stream 0)" in note
    assert overlap_notes("clean", Timeline(spans[:1], meta)) == []
