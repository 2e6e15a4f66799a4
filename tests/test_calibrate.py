"""Calibration: the kernel model, the fit, the held-out evaluation, the calibrated spec file,
`lace calibrate`, and the prediction of upstream llama.cpp — on the committed H200 recording
(data/) and on hand-made values."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from concurrency.calibration import (
    calibrate,
    calibrated_spec_file,
    load_calibration_data,
    load_calibration_document,
)
from concurrency.cli import main
from concurrency.data import GPU_SPEC, load_manifest
from concurrency.errors import ConfigError, LaceError
from concurrency.graph.builders import build_graph
from concurrency.timing.calibrate import (
    Split,
    _fit_overlap,
    _fit_sum,
    evaluate,
    heldout,
    nnls_relative,
    standard_splits,
)
from concurrency.timing.cost import OpCost, graph_costs, node_cost
from concurrency.timing.gpus import CALIBRATED_SCHEMA, GpuSpec, get_gpu, load_gpu_spec
from concurrency.timing.kernel_model import ClassCurve, KernelModel, roofline_us

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
TINY_RECORDING = REPO / "tests" / "data" / "gpu-recording"
H200 = get_gpu("h200")


def cost(op_class: str = "x", mb: float = 0.0, gflop: float = 0.0, **kw: object) -> OpCost:
    """A hand-made kernel cost: `mb` megabytes read, `gflop` GFLOPs."""
    fields = {"columns": 1, "outputs": 0, "tensor_cores": False, **kw}
    return OpCost(
        "k",
        gflop * 1e9,
        mb * 1e6,
        0.0,
        1,
        fields["tensor_cores"],  # type: ignore[arg-type]
        op_class,
        fields["columns"],  # type: ignore[arg-type]
        fields["outputs"],  # type: ignore[arg-type]
    )


def model(*curves: ClassCurve, eta: float = 1.0, phi: float = 0.0) -> KernelModel:
    return KernelModel((ClassCurve("*", latency_us=1.0), *curves), eta, phi)


# ------------------------------------------------------------------------------ kernel model
def test_curve_adds_its_terms_or_overlaps_bytes_and_flops() -> None:
    added = ClassCurve("a", latency_us=2, us_per_column=0.5, us_per_mb=0.25, us_per_gflop=10)
    c = cost("a", mb=100, gflop=2, columns=4)
    assert added.isolated_us(c) == 2 + 0.5 * 4 + 0.25 * 100 + 10 * 2  # 49
    overlapped = dataclasses.replace(added, overlap=True)
    assert overlapped.isolated_us(c) == 2 + 0.5 * 4 + max(25, 20)
    assert added.bandwidth_gbps == 4000 and added.tflops == 100 and added.half_size_mb == 8
    assert added.efficiency(8, 4800) == pytest.approx(4000 / 4800 / 2)


def test_a_kernel_alone_is_never_stretched_and_co_running_ones_share() -> None:
    km = model(ClassCurve("a", latency_us=2, us_per_mb=1.0), eta=1.0, phi=0.0)
    big = cost("a", mb=8)  # fixed 2, work 8: demand 0.8
    (alone,) = km.shared_durations([big], H200)
    assert alone == 10
    # two of them: demand 1.6 → the work parts stretch by 1.6, the fixed parts do not
    both = km.shared_durations([big, big], H200)
    assert both == [pytest.approx(2 + 8 * 1.6)] * 2
    # a small kernel (demand 0.2) beside a 0.5 one: 0.7 ≤ 1, nobody slows down
    small, half = cost("a", mb=0.5), cost("a", mb=2)
    assert km.shared_durations([small, half], H200) == [2.5, 4.0]


def test_eta_and_phi_change_how_much_co_running_kernels_stretch() -> None:
    curve = ClassCurve("a", latency_us=2, us_per_mb=1.0)
    big = cost("a", mb=8)
    worse = model(curve, eta=0.5).shared_durations([big, big], H200)[0]
    better = model(curve, eta=2.0).shared_durations([big, big], H200)[0]
    # stretch = max(1, u_max + (Σu − u_max) ÷ η): 0.8 + 0.8/0.5 = 2.4 and 0.8 + 0.4 = 1.2
    assert worse == pytest.approx(2 + 8 * 2.4) and better == pytest.approx(2 + 8 * 1.2)
    # φ = 1: the fixed part contends too (demand 1 each), and it stretches with the work
    shared = model(curve, eta=1.0, phi=1.0).shared_durations([big, big], H200)[0]
    assert shared == pytest.approx(10 * 2.0)
    assert model(curve, phi=1.0).shared_durations([big], H200) == [10]


def test_no_curve_beats_the_datasheet_roofline() -> None:
    fast = model(ClassCurve("gemm", latency_us=1, us_per_mb=0.001))
    c = cost("gemm", mb=100, gflop=500, tensor_cores=True)
    floor = roofline_us(c, H200)
    assert floor == pytest.approx(500e9 / (989.4e12) * 1e6)
    assert fast.isolated_us(c, H200) == pytest.approx(floor)


def test_wide_gemvs_take_the_gemm_curve_past_gemv_max_columns() -> None:
    km = dataclasses.replace(
        model(ClassCurve("gemv", latency_us=3), ClassCurve("gemm", latency_us=7)),
        gemv_max_columns=1,
    )
    assert km.isolated_us(cost("gemv", columns=1), H200) == 3
    assert km.isolated_us(cost("gemv", columns=2), H200) == 7
    assert km.isolated_us(cost("elementwise"), H200) == 1  # no curve: the default one


def test_kernel_model_round_trips_and_refuses_bad_values() -> None:
    km = model(ClassCurve("gemv", 1.5, 0.4, 0.3, 0.2, 50.0, True, 12), eta=1.3, phi=0.5)
    spec = dataclasses.replace(H200, name="h200-cal", kernel_model=km)
    again = GpuSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.calibrated and not H200.calibrated
    with pytest.raises(ConfigError, match="default curve"):
        KernelModel((ClassCurve("gemv"),))
    with pytest.raises(ConfigError, match="latency_us"):
        ClassCurve("gemv", latency_us=-1)
    with pytest.raises(ConfigError, match="shared_fixed_fraction"):
        model(phi=1.5)
    with pytest.raises(ConfigError, match="unknown kernel_model keys"):
        KernelModel.from_dict({"curves": [{"op_class": "*"}], "speed": 2})


def test_load_gpu_spec_reads_plain_and_calibrated_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(H200.to_dict()))
    assert load_gpu_spec(plain) == H200
    wrapped = tmp_path / "cal.json"
    wrapped.write_text(json.dumps({"schema": CALIBRATED_SCHEMA, "spec": H200.to_dict()}))
    assert load_gpu_spec(wrapped) == H200
    wrapped.write_text(json.dumps({"schema": "other/1", "spec": H200.to_dict()}))
    with pytest.raises(ConfigError, match="lace calibrate"):
        load_gpu_spec(wrapped)
    with pytest.raises(ConfigError, match="not found"):
        load_gpu_spec(tmp_path / "missing.json")


# ------------------------------------------------------------------------------ op classes
def test_op_classes_follow_the_executor_kernel_choice() -> None:
    b1, b64 = (build_graph("qwen3.5-27b", "gdn", "decode", b) for b in (1, 64))
    assert node_cost(b1, "qkv-0").op_class == "gemv"
    assert node_cost(b64, "qkv-0").op_class == "gemm"
    assert node_cost(b1, "qkv-0").columns == 1 and node_cost(b64, "qkv-0").columns == 64
    assert node_cost(b1, "ssm_state_write-0").op_class == "copy"
    assert node_cost(b1, "conv_state_write-0").op_class == "strided_copy"
    assert node_cost(b1, "ssm_states-0").op_class == "gather"
    assert node_cost(b1, "gdn-0").op_class == "gdn"
    assert node_cost(b1, "attn_norm_rms-0").op_class == "norm"
    assert node_cost(b1, "z_silu-0").op_class == "elementwise"
    launched = [c for c in graph_costs(b1) if c.launches]
    assert all(c.op_class for c in launched)
    assert all(not c.op_class for c in graph_costs(b1) if not c.launches)


# ------------------------------------------------------------------------------ fitting
def test_nnls_recovers_planted_coefficients_and_stays_non_negative() -> None:
    rng = np.random.default_rng(0)
    x = np.stack([np.ones(40), rng.uniform(0, 50, 40), rng.uniform(0, 5, 40)], axis=1)
    truth = np.array([2.0, 0.3, 0.0])
    assert nnls_relative(x, x @ truth) == pytest.approx(truth, abs=1e-9)
    # a target that a negative slope would fit best: the slope is clamped at 0
    y = 10 - 0.1 * x[:, 1]
    assert (nnls_relative(x[:, :2], np.clip(y, 1, None)) >= 0).all()


def _samples(curve: ClassCurve, sizes: list[tuple[float, float, int]]) -> pd.DataFrame:
    rows = []
    for mb, gflop, cols in sizes:
        c = cost(curve.op_class, mb=mb, gflop=gflop, columns=cols)
        rows.append(
            {
                "op_class": curve.op_class,
                "bytes": mb * 1e6,
                "flops": gflop * 1e9,
                "columns": cols,
                "outputs": 0,
                "duration_us": curve.isolated_us(c),
            }
        )
    return pd.DataFrame(rows)


def test_fits_recover_planted_curves() -> None:
    added = ClassCurve("copy", latency_us=1.5, us_per_mb=0.25)
    fitted = _fit_sum("copy", _samples(added, [(m, 0, 1) for m in (0.1, 1, 10, 100, 400)]))
    assert fitted.latency_us == pytest.approx(1.5) and fitted.us_per_mb == pytest.approx(0.25)
    gemv = ClassCurve("gemv", 2.0, 0.5, 0.0, 0.25, 100.0, True)
    sizes = [(m, m * f, c) for m in (1, 10, 60, 180) for f, c in ((0.001, 1), (0.008, 8))]
    fitted = _fit_overlap("gemv", _samples(gemv, sizes))
    assert fitted.overlap
    for mb, gflop, cols in sizes:
        c = cost("gemv", mb=mb, gflop=gflop, columns=cols)
        assert fitted.isolated_us(c) == pytest.approx(gemv.isolated_us(c), rel=0.03)


def test_a_split_never_fits_and_tests_one_configuration() -> None:
    with pytest.raises(LaceError, match="keep them apart"):
        Split("bad", "", frozenset({("m", 1), ("m", 2)}), frozenset({("m", 2)}))
    configs = {(m, b) for m in ("a", "b") for b in (1, 2, 4, 8, 16, 32, 64)}
    splits = standard_splits(configs)
    assert {s.name for s in splits} == {"batch", "model:a→b", "model:b→a", "cross:a→b", "cross:b→a"}
    for s in splits:
        assert not s.fit & s.test and s.fit | s.test <= configs


# ------------------------------------------------------------------------------ committed data
@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return load_calibration_data(DATA)


def test_the_recording_reads_as_kernels_gaps_and_steps(data) -> None:  # type: ignore[no-untyped-def]
    assert data.device == "NVIDIA H200"
    assert len(data.cases) == 2 * 3 * 7 * 2  # models × layer kinds × batches × schedules
    assert set(data.samples["batch"]) == {1, 8, 64}  # the timeline batches
    assert (data.samples["duration_us"] > 0).all() and (data.gaps["gap_us"] >= 0).all()
    assert {c.schedule_kind for c in data.cases} == {"one", "multi"}


def test_heldout_scores_only_the_test_side_and_never_sees_it(data) -> None:  # type: ignore[no-untyped-def]
    """The batch split's rows are its test configurations only; and corrupting every test-side
    input (kernel times, gaps, step times) leaves the fitted spec exactly as it was."""
    (split,) = [s for s in data.splits if s.name == "batch"]
    (result,) = heldout("h200", data.samples, data.gaps, data.cases, [split])
    scored = {(r["model"], r["batch"]) for r in result.rows}
    assert scored == set(split.test) and not scored & split.fit
    samples_at = zip(data.samples["model"], data.samples["batch"], strict=True)
    on_test = [(m, b) in split.test for m, b in samples_at]
    samples = data.samples.copy()
    samples.loc[on_test, "duration_us"] *= 10
    gaps = data.gaps.copy()
    gaps_at = zip(gaps["model"], gaps["batch"], strict=True)
    gaps.loc[[(m, b) in split.test for m, b in gaps_at], "gap_us"] += 5
    cases = [
        dataclasses.replace(c, measured_us=c.measured_us * 3) if c.config in split.test else c
        for c in data.cases
    ]
    (corrupted,) = heldout("h200", samples, gaps, cases, [split])
    assert corrupted.spec == result.spec


def test_calibration_beats_the_datasheet_on_held_out_steps(data) -> None:  # type: ignore[no-untyped-def]
    (split,) = [s for s in data.splits if s.name == "batch"]
    (result,) = heldout("h200", data.samples, data.gaps, data.cases, [split])
    for schedule in ("one", "multi"):
        rows = [r for r in result.rows if r["schedule"] == schedule]
        before = statistics.median(abs(r["before_error"]) for r in rows)
        after = statistics.median(abs(r["after_error"]) for r in rows)
        assert after < 0.10 < before, schedule
        assert max(abs(r["after_error"]) for r in rows) < max(abs(r["before_error"]) for r in rows)


def test_committed_calibrated_spec_is_what_calibrate_computes_now() -> None:
    """data/'s gpu-spec file: listed in the manifest, loadable by `lace simulate --gpu`, and
    equal (terms, spec, held-out rows) to a fresh `calibrate` of the same recording."""
    path = calibrated_spec_file(DATA)
    assert path is not None and path.is_file()
    (entry,) = [e for e in load_manifest(DATA) if e.kind == GPU_SPEC]
    assert DATA / entry.file == path and entry.device == "NVIDIA H200"
    spec, fit = load_calibration_document(path)
    fresh = calibrate(DATA)
    assert spec == fresh.spec
    assert fit["fitted_on"] == sorted([m, b] for m, b in fresh.data.configs)
    committed = pd.DataFrame(fit["heldout"])
    now = pd.DataFrame(fresh.rows())
    pd.testing.assert_frame_equal(committed, now, check_exact=False, rtol=1e-9)
    for split in fit["splits"]:
        assert not {tuple(c) for c in split["fit"]} & {tuple(c) for c in split["test"]}
        scored = {(r["model"], r["batch"]) for r in fit["heldout"] if r["split"] == split["name"]}
        assert scored == {tuple(c) for c in split["test"]}


def test_evaluate_uses_the_spec_it_is_given(data) -> None:  # type: ignore[no-untyped-def]
    spec = load_gpu_spec(calibrated_spec_file(DATA))  # type: ignore[arg-type]
    case = next(c for c in data.cases if (c.model, c.layer, c.batch) == ("qwen3.5-27b", "gdn", 1))
    (cal,), (sheet,) = evaluate([case], spec), evaluate([case], H200)
    assert cal["predicted_us"] != sheet["predicted_us"]
    assert abs(cal["error"]) < abs(sheet["error"]) or abs(cal["error"]) < 0.1


# ------------------------------------------------------------------------------ the CLI
def test_lace_calibrate_writes_a_spec_that_lace_simulate_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "rec"
    shutil.copytree(TINY_RECORDING, folder)
    code = main(["calibrate", "--data", str(folder), "--format", "json", "-q"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["heldout"] and doc["manifest_entry"]["kind"] == GPU_SPEC
    path = Path(doc["spec"])
    assert path.parent.parent == folder and calibrated_spec_file(folder) == path
    load_manifest(folder)  # the new entry checks (its file loads as a GPU spec)
    code = main(["simulate", "--model", "tiny", "--gpu", str(path), "--format", "json", "-q"])
    sim = json.loads(capsys.readouterr().out)
    assert code == 0 and sim["gpu"] == "h200-calibrated"


def test_lace_calibrate_outside_the_data_folder_leaves_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "rec"
    shutil.copytree(TINY_RECORDING, folder)
    before = (folder / "manifest.json").read_text()
    out = tmp_path / "elsewhere" / "spec.json"
    code = main(["calibrate", "--data", str(folder), "--out", str(out), "-q"])
    text = capsys.readouterr().out
    assert code == 0 and out.is_file() and f"wrote {out}" in text
    assert (folder / "manifest.json").read_text() == before


def test_a_broken_spec_file_in_the_manifest_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "rec"
    shutil.copytree(TINY_RECORDING, folder)
    assert main(["calibrate", "--data", str(folder), "-q"]) == 0
    path = calibrated_spec_file(folder)
    assert path is not None
    doc = json.loads(path.read_text())
    doc["spec"]["kernel_model"]["curves"][0]["latency_us"] = -1.0
    path.write_text(json.dumps(doc))
    with pytest.raises(LaceError, match="latency_us"):
        load_manifest(folder)


def test_lace_calibrate_names_an_unknown_split(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["calibrate", "--data", str(TINY_RECORDING), "--holdout", "nope", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown held-out split" in err and "batch" in err


# ------------------------------------------------------------------------------ llama.cpp
@pytest.fixture(scope="module")
def peers():  # type: ignore[no-untyped-def]
    from concurrency.data import peer_files
    from concurrency.peers.results import load_results

    (path,) = peer_files(DATA)
    return load_results(path)[1]


def test_ggml_spec_swaps_the_gdn_curve_and_the_matmul_path(peers) -> None:  # type: ignore[no-untyped-def]
    from concurrency.peers.predict import GGML_GEMV_MAX_COLUMNS, ggml_gdn_spec

    spec = load_gpu_spec(calibrated_spec_file(DATA))  # type: ignore[arg-type]
    ggml = ggml_gdn_spec(spec, peers)
    assert ggml.kernel_model.gemv_max_columns == GGML_GEMV_MAX_COLUMNS == 1  # type: ignore[union-attr]
    ours, theirs = spec.kernel_model.curve("gdn"), ggml.kernel_model.curve("gdn")  # type: ignore[union-attr]
    assert theirs != ours and theirs.kernels == 7  # 4 decode + 3 prefill op times
    # its curve reproduces ggml's decode op times within 20 % (one curve for decode and prefill)
    from concurrency.peers.cases import peer_model_config

    for r in peers:
        if r.peer == "ggml-cuda" and r.case == "gdn core decode":
            g = build_graph(peer_model_config(), "gdn", "decode", r.batch)
            (c,) = [c for c in graph_costs(g) if c.op_class == "gdn"]
            assert theirs.isolated_us(c) == pytest.approx(r.median_us, rel=0.20)


def test_llama_prediction_holds_at_b1_and_names_every_miss(peers) -> None:  # type: ignore[no-untyped-def]
    from concurrency.peers.predict import MISS_THRESHOLD, miss_terms, predict_llama_decode

    spec = load_gpu_spec(calibrated_spec_file(DATA))  # type: ignore[arg-type]
    rows = predict_llama_decode(spec, peers)
    assert {(r["batch"], r["graph_opt"]) for r in rows} == {
        (b, o) for b in (1, 2, 4, 8, 16, 32, 64) for o in (0, 1)
    }
    b1 = [r for r in rows if r["batch"] == 1]
    assert all(abs(r["error"]) < MISS_THRESHOLD for r in b1)
    assert {r["streams"] for r in b1} == {1, 4}  # ggml's detector forks at B = 1 only
    assert all(r["streams"] == 1 for r in rows if r["batch"] > 1)
    misses = miss_terms(rows, spec, peers)
    missed = {(r["batch"], r["graph_opt"]) for r in rows if abs(r["error"]) > MISS_THRESHOLD}
    assert {(m["batch"], m["graph_opt"]) for m in misses} == missed
    assert all(m["term"] and m["evidence"] for m in misses)


def test_host_term_is_fitted_on_its_fit_batches_only() -> None:
    from concurrency.peers.predict import host_term_heldout

    rows = [
        {"batch": b, "graph_opt": 0, "measured_us": 100 + 10 * b + 50, "predicted_us": 100.0}
        for b in (1, 2, 4, 8)
    ]
    (a, b), test = host_term_heldout(rows, fit_batches=(1, 4))
    assert (a, b) == pytest.approx((50, 10)) and {r["batch"] for r in test} == {2, 8}
    assert all(abs(r["error"]) < 1e-9 for r in test)
    rows[1]["measured_us"] = 1e6  # a test batch: the fit must not see it
    assert host_term_heldout(rows, fit_batches=(1, 4))[0] == pytest.approx((50, 10))


def test_prefill_prediction_sets_the_measured_prompt_phase_beside_it(peers) -> None:  # type: ignore[no-untyped-def]
    from concurrency.peers.predict import predict_llama_prefill

    spec = load_gpu_spec(calibrated_spec_file(DATA))  # type: ignore[arg-type]
    rows = predict_llama_prefill(spec, peers, (1, 4, 8))
    assert [(r["batch"], r["graph_opt"]) for r in rows] == [
        (b, o) for b in (1, 4, 8) for o in (0, 1)
    ]
    assert [r["ubatches"] for r in rows] == [1, 1, 1, 1, 2, 2]
    assert rows[4]["predicted_us"] == pytest.approx(2 * rows[2]["predicted_us"])
    assert all(r["streams"] == 1 for r in rows)  # ggml's detector never forks on a prompt
    measured = {
        (int(r.variant[-1]), r.batch): r.median_us
        for r in peers
        if r.peer == "llama.cpp" and r.case == "4-layer model prefill"
    }
    for r in rows:
        meas = measured[(r["graph_opt"], r["batch"])]
        assert r["measured_us"] == meas
        assert r["error"] == pytest.approx((r["predicted_us"] - meas) / meas)
    # B = 1 includes each process's warm-up (≈ 0.1 s against ≈ 2 ms predicted): marked
    assert [r["warmup"] for r in rows] == [True, True, False, False, False, False]


def test_prefill_summary_leaves_warmup_out_and_misses_name_their_term(peers) -> None:  # type: ignore[no-untyped-def]
    from concurrency.peers.predict import (
        MISS_THRESHOLD,
        predict_llama_prefill,
        prefill_error_summary,
        prefill_miss_terms,
    )

    spec = load_gpu_spec(calibrated_spec_file(DATA))  # type: ignore[arg-type]
    rows = predict_llama_prefill(spec, peers)
    summary = prefill_error_summary(rows)
    fair = [r for r in rows if not r["warmup"]]
    assert summary.warmup == len(rows) - len(fair) == 4  # B = 1 and 2, both GRAPH_OPT
    assert summary.median_abs_error == pytest.approx(
        statistics.median(abs(r["error"]) for r in fair)
    )
    assert abs(summary.worst_error) == max(abs(r["error"]) for r in fair)
    misses = prefill_miss_terms(rows, spec, peers)
    assert {(m["batch"], m["graph_opt"]) for m in misses} == {
        (r["batch"], r["graph_opt"]) for r in fair if abs(r["error"]) > MISS_THRESHOLD
    }
    # planted: B = 8 measured at half the prediction (the model too slow), B = 16 exact, B = 32
    # and 64 at twice it (too fast); warm-up rows never named, however far off
    planted = []
    for r in rows:
        meas = {8: 0.5, 16: 1.0, 32: 2.0, 64: 2.0}.get(r["batch"], 100.0) * r["predicted_us"]
        planted.append({**r, "measured_us": meas, "error": (r["predicted_us"] - meas) / meas})
    by = {(m["batch"], m["graph_opt"]): m for m in prefill_miss_terms(planted, spec, peers)}
    assert set(by) == {(b, o) for b in (4, 8, 32, 64) for o in (0, 1)}
    assert by[(8, 0)]["term"] == "kernel curve 'gemm'"  # the largest family of the ubatch
    assert by[(32, 1)]["term"].startswith("time per prompt phase and per ubatch outside")
    assert "per prompt phase +" in by[(64, 0)]["evidence"]
    only_warm = [{**r, "error": r["error"] if r["warmup"] else None} for r in rows]
    with pytest.raises(LaceError, match="no measured prefill row without warm-up"):
        prefill_error_summary(only_warm)


# ------------------------------------------------------------------------------ notebook views
def test_recycled_inputs_finds_the_mask_the_attention_layer_reuses() -> None:
    from concurrency.prediction import recycled_inputs

    single = recycled_inputs("qwen3.5-27b", "attn", 64)
    assert "attn_inp_kq_mask" in single
    assert recycled_inputs("qwen3.5-27b", "stack", 64, layers=4) == {}


def test_same_shape_kernels_cost_about_the_same_in_every_graph(data) -> None:  # type: ignore[no-untyped-def]
    """The recording's replays set their inputs first: no kernel of one shape costs 3× more in
    one graph than in another (before, attention read a stale mask in its own graph: ×7), and
    family errors cover every kernel family."""
    from concurrency.prediction import family_errors, same_shape_spread

    assert data.replays_set_inputs
    spread = same_shape_spread(data, ratio=3.0)
    assert spread.empty and "slow_graph" in spread.columns
    assert same_shape_spread(data, ratio=1.0)["ratio"].max() < 2.0
    spec = load_gpu_spec(calibrated_spec_file(DATA))  # type: ignore[arg-type]
    fam = family_errors(data, spec)
    assert set(fam["op_class"]) == set(data.samples["op_class"])
    assert fam["kernels"].sum() == len(data.samples)
    assert not math.isnan(fam["median_error"].max())


def test_a_recording_with_stale_inputs_names_the_recycled_mask(data) -> None:  # type: ignore[no-untyped-def]
    """Planted: the attention kernel of the attention-layer graph 7× slower than the same shape
    in the stack. Only a recording whose replays did not set their inputs (older ones) gets the
    stale-mask finding; a current one reports the spread alone."""
    import dataclasses

    from concurrency.prediction import CalibrationView, remaining_misses

    samples = data.samples.copy()
    slow = (samples["op_class"] == "attention") & (samples["layer"] == "attn")
    assert slow.any()
    samples.loc[slow, "duration_us"] *= 7.0
    view = CalibrationView.from_folder(DATA)
    stale = dataclasses.replace(data, samples=samples, replays_set_inputs=False)
    current = dataclasses.replace(data, samples=samples)
    found = remaining_misses(view, stale)
    assert "attention reads a recycled mask" in set(found["what"])
    assert "same shape, different time" in set(found["what"])
    found = remaining_misses(view, current)
    assert "attention reads a recycled mask" not in set(found["what"])
    assert "same shape, different time" in set(found["what"])


def test_the_kernel_model_knows_the_executors_gemv_width() -> None:
    """The simulator's GEMV/GEMM split for LACE is the one the GPU launch plan uses."""
    from concurrency.execute.gpu.launch import GEMV_MAX_COLUMNS
    from concurrency.timing.kernel_model import LACE_GEMV_MAX_COLUMNS

    assert LACE_GEMV_MAX_COLUMNS == GEMV_MAX_COLUMNS
    assert model().gemv_max_columns == GEMV_MAX_COLUMNS


def test_a_gemv_fitted_at_one_column_does_not_invent_a_column_slope() -> None:
    """At one column a GEMV's FLOPs are a fixed multiple of its bytes and its column term is
    its latency again: the fit keeps bytes only, so a held-out second column costs what the
    extra activation bytes cost, not twice the time (it did before: +51 % at B = 2)."""
    import pandas as pd

    from concurrency.timing.calibrate import fit_curves

    rows = []
    for i, mb in enumerate(float(x) for x in (1, 3, 5, 10, 20, 40, 60, 80, 100, 120)):
        for op_class, columns in (("gemv", 1), ("*", 1)):
            rows.append(
                {
                    "model": "m", "layer": "gdn", "batch": 1, "node": f"n{i}{op_class}",
                    "op_class": op_class, "bytes": mb * 1e6, "flops": mb * 1e6 * columns,
                    "columns": columns, "outputs": mb * 500, "tensor_cores": False,
                    "duration_us": 2.0 + 0.25 * mb,
                }
            )  # fmt: skip
    gemv = {c.op_class: c for c in fit_curves(pd.DataFrame(rows))}["gemv"]
    assert gemv.us_per_column == 0.0 and gemv.us_per_gflop == 0.0
    for mb in (1.0, 50.0, 120.0):  # the fitted curve still reproduces the samples
        fitted = gemv.latency_us + gemv.us_per_k_outputs * mb / 2 + gemv.us_per_mb * mb
        assert abs(fitted - (2.0 + 0.25 * mb)) <= 0.02 * (2.0 + 0.25 * mb), (mb, gemv)
