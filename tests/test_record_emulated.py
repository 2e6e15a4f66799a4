"""The race experiment and `lace record` end to end on the CPU: `DeviceRun` over the CuPy
stand-in (tests/cuda_emu/fake_cupy.py, the kernels emulated as host C++), NumPy as the array
module of the on-device comparison, CUPTI faked as in test_gpu_runner_emulated.py.

The stand-in runs every stream's work at once in enqueue order, which every schedule allows, so
races never show here; what must show does: the planted ordered overwrite and `interleave` on
one stream (planned on an order one stream does not run) differ in every replay, every plan the
checker passes never differs, and a recording written this way loads through the manifest and
`lace bench --from-data`. Skipped without g++."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cuda_emu import emulator
from emulated_gpu import EMULATED, HostArrays, emulator_ready, install, patch_recording

from concurrency.execute.gpu import kernels as kernel_files

pytestmark = [
    pytest.mark.skipif(emulator.compiler() is None, reason="g++ is not installed here"),
    pytest.mark.slow,
]


@pytest.fixture
def fake_gpu(monkeypatch):
    why = emulator_ready()
    if why:
        pytest.skip(why)
    cp = install(monkeypatch)
    yield cp
    kernel_files.module.cache_clear()


def _race(case, **settings):  # type: ignore[no-untyped-def]
    from concurrency.execute.gpu.race import RaceSettings, race_case

    return race_case(case, RaceSettings(timing_replays=0, **settings), arrays=HostArrays())


def test_race_case_verdicts_follow_the_checker(fake_gpu) -> None:
    from concurrency.execute.gpu.cases import GpuCase
    from concurrency.execute.gpu.race_plans import NEVER

    spins = []
    fake_gpu.RawKernel = lambda source, name: (
        lambda grid, block, args: spins.append((name, grid, block, int(args[0])))
    )
    case = GpuCase("tiny", "gdn", 1, weights="f32", matmul="custom")
    plans = ("happens_before", "sequential", "planted", "interleave (one stream)")
    rows = _race(case, replays=2, plans=plans, delay_us=150.0)
    by_plan = {r.plan: r for r in rows}
    assert [r.plan for r in rows] == [*plans[:2], "sequential + delay", *plans[2:]]
    for r in rows:
        assert r.status == "ok", (r.plan, r.error)
        assert r.runs == 2 and r.tolerance > 0
        if r.expected == NEVER:
            assert r.wrong_runs == 0 and r.bitwise_runs == 0 and r.max_error == 0.0, r.plan
            assert r.verdict == "ok"
    for plan in ("planted", "interleave (one stream)"):
        r = by_plan[plan]
        assert r.uses_after_reuse > 0 and r.races == 0
        assert r.wrong_runs == r.runs == r.bitwise_runs and r.verdict == "ok", plan
        assert r.max_error > r.tolerance
    # in enqueue order the races cannot show; the widened replay is tried and says so
    seq = by_plan["sequential"]
    assert seq.races > 0 and seq.wrong_runs == 0 and seq.verdict == "not shown"
    widened = by_plan["sequential + delay"]
    assert (
        widened.widened.startswith("delay 150 µs before ")
        and "aimed at the race" in widened.widened
    )
    assert widened.races == seq.races and widened.runs == 2
    # the delay kernel was bound (one spin of 150 µs per run; the stand-in launches eagerly)
    assert (
        spins
        and {s[3] for s in spins} == {150_000}
        and spins[0][:3] == ("lace_delay", (1, 1, 1), (1, 1, 1))
    )
    # the reference's first run was checked against float64 (the tiny layer fits)
    assert 0 <= rows[0].safe_vs_float64 <= rows[0].tolerance


def test_record_writes_a_recording_the_manifest_and_bench_read(
    fake_gpu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from concurrency.cli import main
    from concurrency.data import RACE, REPLAYS, TIMELINE, load_manifest, load_table
    from concurrency.execute.gpu import record
    from concurrency.execute.gpu.race import RaceSettings

    patch_recording(monkeypatch)
    settings = record.RecordSettings(
        models=("tiny",),
        layer_kinds=("attn",),
        batches=(1,),
        timeline_batches=(1,),
        policies=("happens_before",),
        weights="f32",
        matmul="custom",
        rounds=1,
        per_round=1,
        race_models=("tiny",),
        race_layer_kinds=("attn",),
        race_batches=(1,),
        race=RaceSettings(replays=1, timing_replays=0, plans=("happens_before", "planted")),
    )
    rec = record.record(settings, tmp_path, "lace record (test)")
    entries = load_manifest(tmp_path)
    assert sorted(e.kind for e in entries) == [RACE, REPLAYS, TIMELINE, TIMELINE]
    timelines = sorted((e.policy, e.streams) for e in entries if e.kind == TIMELINE)
    assert timelines[0][0] == "happens_before" and timelines[0][1] > 1
    assert timelines[1] == ("sequential", 1)
    for e in entries:
        assert (e.device, e.source, e.command) == (EMULATED, "measured", "lace record (test)")
        assert e.file.startswith(rec.name + "/") and rec.name.startswith("emulated-cpu-stand-in")
        assert e.config["weights"] == "f32" and e.detector == "general"
    replays = load_table(tmp_path, REPLAYS)
    assert len(replays) == 2 and set(replays["status"]) == {"ok"}
    assert (replays["median_us"] > 0).all() and (replays["floor_bytes"] > 0).all()
    assert (replays["replays"] == 1).all() and (replays["timeline"] != "").all()
    races = load_table(tmp_path, RACE)
    assert list(races["plan"]) == ["happens_before", "planted"]
    assert list(races["verdict"]) == ["ok", "ok"] and races["wrong_runs"].tolist() == [0, 1]
    from concurrency.execute.gpu.record_text import summary_lines

    lines = summary_lines(rec)
    assert any("race experiment" in line for line in lines)
    assert any(line.strip().startswith("tiny attn") for line in lines)
    # lace bench --from-data prints the same figures as the table's medians
    assert main(["bench", "--from-data", str(tmp_path), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["rows"]) == 1  # happens_before against one stream
    for row in doc["rows"]:
        pick = replays[replays["batch"] == row["batch"]]
        one = pick[pick["schedule"] == "one"]["median_us"].item()
        multi = pick[pick["schedule"] == "multi"]["median_us"].item()
        assert (row["one_us"], row["multi_us"]) == (one, multi)
        assert row["speedup"] == pytest.approx(one / multi) and row["device"] == EMULATED
