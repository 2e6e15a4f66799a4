"""Every figure in the README's *Measured* table, computed again and compared with the text.

Each check reads the row by its label and compares the figure cell with what the library gives
now, so a change that moves a number fails here until the README says the new one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.schedule import stream_schedule
from concurrency.memory.compare import compare_policies, policy_runs
from concurrency.memory.policies import POLICIES, SAFE_POLICIES

README = Path(__file__).resolve().parents[1] / "README.md"


def _row(label_start: str) -> str:
    """The figure cell of the Measured-table row whose label starts with `label_start`."""
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith(label_start):
            return cells[1]
    raise AssertionError(f"README has no Measured row starting {label_start!r}")


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+(?:\.\d+)?", text)]


def _gdn(batch: int, max_streams: int = 8):  # type: ignore[no-untyped-def]
    g = build_graph("qwen3.5-27b", "gdn", "decode", batch)
    rep = detect_branches(g)
    sched = stream_schedule(g, rep, max_streams)
    return {r.policy: r for r in compare_policies(g, sched, rep, list(POLICIES))}


@pytest.fixture(scope="module")
def gdn_by_batch():  # type: ignore[no-untyped-def]
    return {b: _gdn(b) for b in (1, 4, 8)}


def test_sequential_and_interleave_races(gdn_by_batch) -> None:  # type: ignore[no-untyped-def]
    for label, policy in (("Qwen3.5-27B GDN layer, decode", "sequential"), ("same, under", "")):
        policy = policy or "interleave"
        want = _numbers(_row(label))
        got = [len(gdn_by_batch[b][policy].races) for b in (1, 4, 8)]
        assert want == got, (policy, want, got)


def test_safe_policies_are_clean(gdn_by_batch) -> None:  # type: ignore[no-untyped-def]
    assert _row("same, every safe policy") == "0 races, 0 uses after reuse"
    for results in gdn_by_batch.values():
        for name in SAFE_POLICIES:
            assert results[name].hazards == (), name


def test_arena_above_bound(gdn_by_batch) -> None:  # type: ignore[no-untyped-def]
    label = "same, B = 1: arena above the lower bound"
    policies = re.findall(
        r"`(\w+)`", next(line for line in README.read_text().splitlines() if label in line)
    )
    want = _numbers(_row(label))
    res = gdn_by_batch[1]
    got = [round((res[p].arena_bytes / res[p].lower_bound_bytes - 1) * 100, 1) for p in policies]
    assert want == got, (policies, want, got)


def test_one_side_stream() -> None:
    res = _gdn(1, max_streams=2)
    torch = _numbers(_row("same, B = 1, one side stream"))
    assert torch == [len(res["torch_caching"].races), len(res["torch_record_stream"].races)]
    reuse = _numbers(_row("same, one side stream: `interleave` uses after reuse"))
    assert reuse == [len(res["interleave"].uses_after_reuse)]


def test_wrong_results_on_the_cpu() -> None:
    g = build_graph("tiny", "gdn", "decode", 1)
    rep = detect_branches(g)
    rows = {
        r["policy"]: r
        for r in policy_runs(g, stream_schedule(g, rep), rep, list(POLICIES), range(8))
    }
    cell = _row("tiny GDN layer on the CPU")
    want = _numbers(cell.split("(")[0])
    got = [rows[p]["wrong results"] for p in ("sequential", "interleave", "torch_caching")]
    assert want[:3] == got and want[3] == 8
    assert "every safe policy: 0 of 8" in cell
    assert all(
        rows[p]["wrong results"] == 0 and rows[p]["orders tried"] == 8 for p in SAFE_POLICIES
    )


def test_tiny_stack_ggml_detector_engine_flow() -> None:
    g = build_graph("tiny", "stack", "decode", 1, layers=4, n_ctx=512)
    rep = detect_branches(g, "ggml")
    sched = stream_schedule(g, rep)
    res = {r.policy: r for r in compare_policies(g, sched, rep, list(POLICIES), flow="engine")}
    cell = _row("tiny 4-layer stack, ggml's detector")
    assert _numbers(cell.split("(")[0]) == [
        len(res["sequential"].hazards),
        len(res["interleave"].hazards),
    ]
    assert "every safe policy: 0" in cell
    assert all(res[p].hazards == () for p in SAFE_POLICIES)


def test_engine_probes_match() -> None:
    from concurrency.oracle.engine_compare import engine_fidelity
    from tests.engine_data import BATCHES, ENGINE_CONFIGS, recorded_run

    assert _numbers(_row("engine probes, B = 1 … 8"))[-2:] == [0, 0]
    assert tuple(BATCHES) == tuple(range(1, 9))
    for name, cfg in ENGINE_CONFIGS.items():
        for b in BATCHES:
            fid = engine_fidelity(recorded_run(name, b), cfg)
            assert not fid.graph_mismatches and not fid.offset_mismatches, (name, b)
