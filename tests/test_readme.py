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
from concurrency.memory.policies import POLICIES, STREAM_SAFE_POLICIES

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
        for name in STREAM_SAFE_POLICIES:
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
        rows[p]["wrong results"] == 0 and rows[p]["orders tried"] == 8 for p in STREAM_SAFE_POLICIES
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
    assert all(res[p].hazards == () for p in STREAM_SAFE_POLICIES)


def test_engine_probes_match() -> None:
    from concurrency.oracle.engine_compare import engine_fidelity
    from tests.engine_data import BATCHES, ENGINE_CONFIGS, recorded_run

    assert _numbers(_row("engine probes, B = 1 … 8"))[-2:] == [0, 0]
    assert tuple(BATCHES) == tuple(range(1, 9))
    for name, cfg in ENGINE_CONFIGS.items():
        for b in BATCHES:
            fid = engine_fidelity(recorded_run(name, b), cfg)
            assert not fid.graph_mismatches and not fid.offset_mismatches, (name, b)


# --- Measured on an NVIDIA H200: every figure read back from the recording under data/ ---


def _agree(cell: str, computed: list[float]) -> None:
    """Each number in `cell` equals the computed one to the precision the README prints it."""
    shown = re.findall(r"\d+(?:\.\d+)?", cell)
    assert len(shown) == len(computed), (cell, computed)
    for text, value in zip(shown, computed, strict=True):
        decimals = len(text.split(".")[1]) if "." in text else 0
        assert abs(float(text) - value) <= 0.5 * 10**-decimals + 1e-9, (cell, text, value)


@pytest.fixture(scope="module")
def recorded():  # type: ignore[no-untyped-def]
    from concurrency.data import RACE, REPLAYS, default_folder, load_table, peer_files
    from concurrency.peers.results import load_results

    folder = default_folder()
    _, peers = load_results(peer_files(folder)[-1])
    return {
        "replays": load_table(folder, REPLAYS),
        "race": load_table(folder, RACE),
        "peers": peers,
        "folder": folder,
    }


def _replay(frame, layer: str, schedule: str, policy: str, batch: int = 1):  # type: ignore[no-untyped-def]
    rows = frame[
        (frame.model == "qwen3.5-27b")
        & (frame.layer == layer)
        & (frame.batch == batch)
        & (frame.schedule == schedule)
        & (frame.policy == policy)
    ]
    assert len(rows) == 1, (layer, schedule, policy, len(rows))
    return rows.iloc[0]


def _peer(rows, peer: str, case: str, variant: str, batch: int, tokens: int = 1) -> float:  # type: ignore[no-untyped-def]
    found = [
        r.median_us
        for r in rows
        if (r.peer, r.case, r.variant, r.batch, r.tokens) == (peer, case, variant, batch, tokens)
    ]
    assert len(found) == 1, (peer, case, variant, batch, tokens)
    return float(found[0])


def test_h200_replays(recorded) -> None:  # type: ignore[no-untyped-def]
    frame = recorded["replays"]
    one = _replay(frame, "gdn", "one", "sequential")
    multi = _replay(frame, "gdn", "multi", "happens_before")
    _agree(_row("Qwen3.5-27B GDN decode layer, B = 1"), [one.median_us, multi.median_us])
    _agree(
        _row("same, five streams ÷ the HBM floor"),
        [multi.median_us / multi.floor_us, multi.floor_us],
    )
    one = _replay(frame, "stack", "one", "sequential")
    multi = _replay(frame, "stack", "multi", "happens_before")
    _agree(_row("Qwen3.5-27B widths, 4 layers"), [one.median_us, multi.median_us])


def test_h200_race_experiment(recorded) -> None:  # type: ignore[no-untyped-def]
    frame = recorded["race"]
    case = frame[(frame.model == "qwen3.5-27b") & (frame.batch == 1)]

    def wrong(layer: str, plan: str) -> int:
        rows = case[(case.layer == layer) & (case.plan == plan)]
        assert len(rows) == 1 and rows.iloc[0].runs == 300, (layer, plan)
        return int(rows.iloc[0].wrong_runs)

    safe = max(wrong(layer, p) for layer in ("gdn", "attn", "stack") for p in STREAM_SAFE_POLICIES)
    _agree(
        _row("race experiment, 27B GDN layer"),
        [wrong("gdn", "sequential"), wrong("gdn", "interleave"), safe],
    )
    _agree(
        _row("same, attention layer"),
        [wrong("attn", "sequential"), wrong("attn", "sequential + delay")],
    )


def test_h200_peers(recorded) -> None:  # type: ignore[no-untyped-def]
    rows = recorded["peers"]
    step = "4-layer model decode step"
    want = []
    for b in (1, 16, 64):
        want += [
            _peer(rows, "lace", step, "5 streams (schedule)", b),
            _peer(rows, "llama.cpp", step, "batched-bench GRAPH_OPT=1", b),
        ]
    _agree(_row("4-layer decode step, B = 1 / 16 / 64"), want)
    core = []
    for peer, variant in (("lace", "recurrent kernel"), ("fla", "fused_recurrent")):
        core += [_peer(rows, peer, "gdn core decode", variant, b) for b in (1, 4, 16, 64)]
    core += [
        _peer(rows, "ggml-cuda", "gdn core decode", "GATED_DELTA_NET", b) for b in (1, 4, 16, 64)
    ]
    _agree(_row("GDN core op, decode"), core)
    prefill = [
        _peer(rows, "lace", "gdn core prefill", "chunked kernel", 1, 512),
        _peer(rows, "fla", "gdn core prefill", "chunk", 1, 512),
        _peer(rows, "ggml-cuda", "gdn core prefill", "GATED_DELTA_NET", 1, 512),
    ]
    _agree(_row("GDN core op, prefill"), prefill)
    layer = [
        _peer(rows, "lace", "gdn layer decode", "5 streams (schedule)", 1),
        _peer(rows, "torch+fla", "gdn layer decode", "4 streams", 1),
    ]
    _agree(_row("GDN decode layer, B = 1"), layer)


def test_h200_calibration(recorded) -> None:  # type: ignore[no-untyped-def]
    from concurrency.prediction import CalibrationView

    summary = CalibrationView.from_folder(recorded["folder"]).summary()
    row = summary[(summary.split == "batch") & (summary.schedule == "multi")].iloc[0]
    _agree(
        _row("calibrated simulator, held-out batches"),
        [100 * row.before_median, 100 * row.after_median],
    )


def test_h200_claims(recorded) -> None:  # type: ignore[no-untyped-def]
    """The sentences under the H200 table, from the same recording."""
    text = README.read_text(encoding="utf-8")
    frame, rows = recorded["replays"], recorded["peers"]
    gdn = _replay(frame, "gdn", "one", "sequential").median_us
    gdn /= _replay(frame, "gdn", "multi", "happens_before").median_us
    stack = _replay(frame, "stack", "one", "sequential").median_us
    stack /= _replay(frame, "stack", "multi", "happens_before").median_us
    assert f"saves {gdn:.2f}× on the GDN layer and {stack:.2f}×" in text
    step = "4-layer model decode step"
    lace_batches = {r.batch for r in rows if (r.peer, r.case) == ("lace", step)}
    assert lace_batches >= {1, 4, 16, 64}
    for b in lace_batches:  # "faster than llama.cpp's at every batch measured"
        lace = _peer(rows, "lace", step, "5 streams (schedule)", b)
        for variant in ("batched-bench GRAPH_OPT=0", "batched-bench GRAPH_OPT=1"):
            assert lace < _peer(rows, "llama.cpp", step, variant, b), (b, variant)
    multi = _replay(frame, "gdn", "multi", "happens_before")
    assert f"still {multi.median_us / multi.floor_us:.1f}× its HBM floor at B = 1" in text

    def core(peer: str, variant: str, b: int, t: int = 1) -> float:
        return _peer(rows, peer, f"gdn core {'decode' if t == 1 else 'prefill'}", variant, b, t)

    slower = [
        b
        for b in (1, 4, 16, 64)
        if core("lace", "recurrent kernel", b) > core("ggml-cuda", "GATED_DELTA_NET", b)
    ]
    assert slower == [1, 4] and "faster than LACE's at B = 1 and 4" in text
    chained = "recurrent kernel, chained (L2)"
    _agree(
        _row("same, LACE's op chained through its state"),
        [core("lace", chained, b) for b in (1, 4, 16, 64)],
    )
    in_l2 = [
        b
        for b in (1, 4, 16, 64)
        if core("lace", chained, b) > core("ggml-cuda", "GATED_DELTA_NET", b)
    ]
    ggml = {b: core("ggml-cuda", "GATED_DELTA_NET", b) for b in (1, 4)}
    l2 = {b: core("lace", chained, b) for b in (1, 4)}
    hbm = {b: core("lace", "recurrent kernel", b) for b in (1, 4)}
    status = " ".join(text.split())
    assert in_l2 == [1, 4] and (
        f"also with the state in L2 for both: {ggml[1]:.1f} vs {l2[1]:.1f} and {ggml[4]:.1f} vs "
        f"{l2[4]:.1f} µs" in status
    )
    assert (
        f"slower than ggml-cuda's at B = 1 and 4 ({l2[1] / ggml[1]:.2f}× and "
        f"{l2[4] / ggml[4]:.2f}× with the state in L2 for both, as test-backend-ops times ggml's; "
        f"{hbm[1] / ggml[1]:.1f}× and {hbm[4] / ggml[4]:.1f}× reading it from HBM" in status
    )
    ratio = core("lace", "chunked kernel", 1, 512) / core("fla", "chunk", 1, 512)
    assert f"fla's chunk kernel is {ratio:.1f}× faster" in text
    layer = "gdn layer decode"
    beats = [
        b
        for b in (1, 4, 16, 64)
        if _peer(rows, "torch+fla", layer, "4 streams", b)
        < _peer(rows, "lace", layer, "5 streams (schedule)", b)
    ]
    assert beats == [16, 64] and "PyTorch + fla beats LACE's GDN layer at B ≥ 16" in status


def test_h200_status_claims(recorded) -> None:  # type: ignore[no-untyped-def]
    """The Status section's measured shortfalls, from the recording."""
    text = " ".join(README.read_text(encoding="utf-8").split())
    rows, frame = recorded["peers"], recorded["replays"]
    ratios = [
        _peer(rows, "lace", "gdn core prefill", "chunked kernel", b, t)
        / _peer(rows, "fla", "gdn core prefill", "chunk", b, t)
        for b, t in ((1, 512), (4, 512), (1, 2048))
    ]
    assert f"{min(ratios):.1f}–{max(ratios):.1f}× slower than fla's" in text
    multi = _replay(frame, "gdn", "multi", "happens_before")
    assert f"GDN decode layer is {multi.median_us / multi.floor_us:.1f}× its HBM floor" in text
    layer = "gdn layer decode"
    slower = [
        b
        for b in (1, 4, 16, 64)
        if _peer(rows, "lace", layer, "5 streams (schedule)", b)
        > _peer(rows, "torch+fla", layer, "4 streams", b)
    ]
    assert slower == [16, 64] and "GDN layer is slower than PyTorch + fla at B ≥ 16" in text


def test_status_states_the_recorded_stream_overlap(recorded) -> None:  # type: ignore[no-untyped-def]
    from concurrency.data import TIMELINE, load_manifest
    from concurrency.timing.metrics import CUPTI_ORDER_SLACK_US, stream_overlaps
    from concurrency.timing.timeline import Timeline

    folder = recorded["folder"]
    worst = max(
        (
            o.overlap_us
            for e in load_manifest(folder, check_files=False)
            if e.kind == TIMELINE
            for o in stream_overlaps(Timeline.load(folder / e.file))
        ),
        default=0.0,
    )
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert f"one stream overlap by up to {worst:.2f} µs" in text
    assert worst <= CUPTI_ORDER_SLACK_US
