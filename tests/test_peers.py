"""`lace bench --peers` without a GPU or llama.cpp: the parsers of the llama.cpp programs'
output (fixtures recorded from the trimmed vendored llama.cpp built for the CPU here), the
results file, the table formatter (on a hand-written fixture), the trim plan, the patch, the
peer GGUF, the floors, and the row assembly of the llama.cpp and Python phases (fake programs
that print the recorded outputs)."""

from __future__ import annotations

import itertools
import json
import math
import stat
from pathlib import Path

import numpy as np
import pytest

from concurrency.errors import LaceError
from concurrency.peers import device, llama_peers
from concurrency.peers.cases import (
    DECODE_BATCHES,
    LLAMA_BATCHES,
    PREFILL_CASES,
    core_floor_us,
    layer_floor_us,
    model_floor_us,
    peer_model_config,
    prompt_ubatches,
    qwen35_27b,
)
from concurrency.peers.parse import (
    parse_backend_ops_perf,
    parse_batched_bench,
    parse_llama_bench,
    split_params,
)
from concurrency.peers.patching import apply_patch, apply_to_text, parse_patch
from concurrency.peers.results import (
    PeerRow,
    PeersMeta,
    failed_row,
    load_results,
    measured_row,
    save_results,
    summarize,
)
from concurrency.peers.table import WARMUP_MARK, format_table, lace_reference
from concurrency.peers.trim import (
    KEEP_TOOLS,
    TESTS_CMAKE,
    filter_subdirectories,
    plan_trim,
    trim_tree,
)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "peers"
PATCH = REPO / "scripts" / "peers" / "test-backend-ops-gdn.patch"


# ---------------------------------------------------------------------------- test-backend-ops
def test_backend_ops_perf_fixture_parses_every_case() -> None:
    results = parse_backend_ops_perf((DATA / "test-backend-ops-perf-cpu.txt").read_text())
    assert len(results) == 7
    first = results[0]
    assert first.op == "GATED_DELTA_NET" and first.supported
    assert (first.runs, first.us_per_run) == (5408, 299.88)
    assert first.int_param("head_count") == 16 and first.int_param("v_repeat") == 3
    cases = [(r.int_param("n_seqs"), r.int_param("n_seq_tokens")) for r in results]
    assert cases == [(b, 1) for b in DECODE_BATCHES] + list(PREFILL_CASES)
    assert results[-1].us_per_run == pytest.approx(660182.54)


def test_backend_ops_perf_lines_not_supported_other_ops_and_bad_lines() -> None:
    text = (
        "  GATED_DELTA_NET(type=f32,n_seqs=2): not supported\n"
        "  ADD(type=f16,ne=[4,2,1,1],nr=[1,1,1,1]):   10 runs -  1.50 us/run -  4 kB/run - 1 GB/s\n"
        "  Backend CUDA0: OK\n"
    )
    rows = parse_backend_ops_perf(text)
    assert [r.supported for r in rows] == [False, True]
    assert rows[1].param("ne") == "[4,2,1,1]"
    assert parse_backend_ops_perf(text, "ADD")[0].us_per_run == 1.5
    with pytest.raises(LaceError, match="cannot read"):
        parse_backend_ops_perf("  ADD(type=f32): many runs - fast us/run\n")


def test_backend_ops_perf_flop_format() -> None:
    """Ops with a FLOP count print FLOP/run and FLOPS instead of kB/run and GB/s (the console
    printer's other branch), in colour."""
    line = (
        "  MUL_MAT(type_a=f16,type_b=f32,m=4096,n=512,k=14336,bs=[1,1],nr=[1,1],per=[0,1,2,3],"
        "k_v=0,o=1):        \x1b[0m   1474 runs -   678.64 us/run -  60.13 GFLOP/run - "
        "\x1b[1;34m 88.61 TFLOPS\x1b[0m\n"
    )
    (r,) = parse_backend_ops_perf(line)
    assert (r.op, r.runs, r.us_per_run, r.param("bs")) == ("MUL_MAT", 1474, 678.64, "[1,1]")


def test_split_params_keeps_commas_inside_brackets() -> None:
    assert split_params("a=1,ne=[1,2],f=g(3,4)") == (("a", "1"), ("ne", "[1,2]"), ("f", "g(3,4)"))
    with pytest.raises(LaceError, match="no '='"):
        split_params("a=1,oops")


# ---------------------------------------------------------------------------- batched-bench
@pytest.mark.parametrize("name", ["batched-bench-jsonl-cpu.txt", "batched-bench-md-cpu.txt"])
def test_batched_bench_fixtures(name: str) -> None:
    rows = parse_batched_bench((DATA / name).read_text())
    assert [r.batch for r in rows] == [1, 2, 4]
    assert all(r.pp == 16 and r.tg == 16 for r in rows)
    for r in rows:  # step = T_TG / tg, and S_TG = B·tg / T_TG
        assert r.step_us == pytest.approx(r.t_tg_s / 16 * 1e6)
        assert r.batch / r.s_tg * 1e6 == pytest.approx(r.step_us, rel=0.02)


def test_batched_bench_rejects_a_broken_row() -> None:
    with pytest.raises(LaceError, match="cells"):
        parse_batched_bench("|   128 |    128 |    1 |\n")
    with pytest.raises(LaceError, match="JSON"):
        parse_batched_bench('{"pl": 1, "speed_tg": 3}\n')


def test_llama_bench_fixture() -> None:
    (run,) = parse_llama_bench((DATA / "llama-bench-jsonl-cpu.txt").read_text())
    assert (run.n_prompt, run.n_gen, run.build_commit) == (0, 16, "0c1e57098")
    assert run.step_us_samples == tuple(s / 1e3 / 16 for s in run.samples_ns)
    prompt = type(run)(512, 0, 2048, (1,), "", "", 0)
    with pytest.raises(LaceError, match="decode tests only"):
        _ = prompt.step_us_samples


# ---------------------------------------------------------------------------- results
def test_summarize_matches_numpy_percentiles() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(1, 100, 37)
    median, p10, p90, n = summarize(list(x))
    assert (median, p10, p90, n) == pytest.approx(
        (np.median(x), np.percentile(x, 10), np.percentile(x, 90), 37)
    )
    with pytest.raises(LaceError):
        summarize([])
    with pytest.raises(LaceError):
        summarize([1.0, math.nan])


def test_rows_validate_status_and_reason() -> None:
    with pytest.raises(LaceError, match="without a median"):
        PeerRow("fla", "gdn core decode", "x", 1, 1, "ok")
    with pytest.raises(LaceError, match="needs a reason"):
        PeerRow("fla", "gdn core decode", "x", 1, 1, "failed")
    with pytest.raises(LaceError, match="unknown peer"):
        PeerRow("vllm", "gdn core decode", "x", 1, 1, "not run", notes="n")
    row = failed_row("fla", "gdn core decode", "x", 1, 1, "not imported", "No module\n named fla")
    assert row.notes == "No module named fla"


def test_results_round_trip_and_bad_files(tmp_path: Path) -> None:
    meta = PeersMeta(date="2026-12-01", command="c", device="d", versions={"torch": "2.11"})
    rows = [
        measured_row("fla", "gdn core decode", "v", 4, 1, [3.0, 1.0, 2.0], floor_us=1.0),
        failed_row("lace", "gdn layer decode", "1 stream", 1, 1, "failed", "boom"),
    ]
    path = save_results(tmp_path / "peers.json", meta, rows)
    meta2, rows2 = load_results(tmp_path)
    assert meta2 == meta
    assert sorted(rows2, key=lambda r: r.key) == sorted(rows, key=lambda r: r.key)
    doc = json.loads(path.read_text())
    assert (
        doc["manifest_entry"]["kind"] == "peers" and doc["manifest_entry"]["file"] == "peers.json"
    )
    doc["schema"] = "other"
    path.write_text(json.dumps(doc))
    with pytest.raises(LaceError, match="not a LACE peers result"):
        load_results(path)
    with pytest.raises(LaceError, match="no peers result"):
        load_results(tmp_path / "missing.json")


# ---------------------------------------------------------------------------- table
def test_fixture_table_is_marked_and_complete() -> None:
    meta, rows = load_results(DATA / "fixture-peers.json")
    assert meta.fixture  # a fixture, not a measurement
    text = format_table(meta, rows)
    assert text.startswith("FIXTURE, NOT A MEASUREMENT")
    for case in ("gdn core decode", "gdn core prefill", "gdn layer decode", "4-layer model"):
        assert f"== {case}" in text
    assert "NOT BUILT" in text and "not built: fixture" in text
    line = next(x for x in text.splitlines() if "torch+fla  4 streams" in x and x.split()[0] == "1")
    assert "126.0" in line and "2.24" in line  # 126.0 / 56.3 floor


def test_table_ratios_against_the_fastest_lace_row() -> None:
    rows = [
        measured_row("lace", "gdn layer decode", "1 stream", 1, 1, [80.0]),
        measured_row("lace", "gdn layer decode", "5 streams", 1, 1, [64.0]),
        measured_row("torch+fla", "gdn layer decode", "1 stream", 1, 1, [128.0], floor_us=32.0),
        measured_row("torch+fla", "gdn layer decode", "1 stream", 4, 1, [150.0]),
        measured_row("fla", "gdn core decode", "f", 1, 1, [5.0], notes="x: CHECK FAILED"),
    ]
    assert lace_reference(rows) == {("gdn layer decode", 1, 1): 64.0}
    lines = format_table(PeersMeta(date="d", command="c"), rows).splitlines()
    torch_b1 = next(x for x in lines if "torch+fla" in x and x.split()[0] == "1")
    assert torch_b1.split()[-2:] == ["4.00", "2.00"]  # ×floor 128/32, ×LACE 128/64
    torch_b4 = next(x for x in lines if "torch+fla" in x and x.split()[0] == "4")
    assert torch_b4.split()[-1] == "—"  # no LACE row at B=4
    assert any("CHECK FAILED" in x and "fla " in x for x in lines)


# ---------------------------------------------------------------------------- trim
_FAKE_TREE = [
    "CMakeLists.txt",
    "LICENSE",
    "README.md",
    "AGENTS.md",
    "convert_hf_to_gguf.py",
    "docs/build.md",
    "models/ggml-vocab-llama.gguf",
    "ggml/CMakeLists.txt",
    "ggml/src/ggml.c",
    "ggml/src/ggml-backend-reg.cpp",
    "ggml/src/ggml-cuda/ggml-cuda.cu",
    "ggml/src/ggml-cuda/template-instances/mmq-instance-q4_0.cu",
    "ggml/src/ggml-vulkan/ggml-vulkan.cpp",
    "ggml/src/ggml-metal/ggml-metal.m",
    "ggml/src/ggml-cpu/ggml-cpu.c",
    "ggml/src/ggml-cpu/arch/x86/quants.c",
    "ggml/src/ggml-cpu/arch/arm/quants.c",
    "ggml/src/ggml-cpu/kleidiai/kleidiai.cpp",
    "tools/CMakeLists.txt",
    "tools/batched-bench/batched-bench.cpp",
    "tools/llama-bench/llama-bench.cpp",
    "tools/server/server.cpp",
    "tools/mtmd/mtmd.cpp",
    "tests/CMakeLists.txt",
    "tests/test-backend-ops.cpp",
    "tests/test-tokenizer-0.cpp",
    "vendor/CMakeLists.txt",
    "vendor/nlohmann/json.hpp",
    "vendor/miniaudio/miniaudio.h",
    "gguf-py/gguf/gguf_writer.py",
    "gguf-py/tests/test_quants.py",
]
_TOOLS_CMAKE = (
    "add_subdirectory(batched-bench)\n    add_subdirectory(server)\nadd_subdirectory(llama-bench)\n"
    "add_subdirectory(mtmd)\n"
)
_VENDOR_CMAKE = "add_subdirectory(nlohmann)\nadd_subdirectory(miniaudio)\n"


def test_trim_plan_drops_and_keeps() -> None:
    plan = plan_trim(
        _FAKE_TREE, {"tools/CMakeLists.txt": _TOOLS_CMAKE, "vendor/CMakeLists.txt": _VENDOR_CMAKE}
    )
    dropped = set(plan.drop)
    assert {
        "AGENTS.md",
        "convert_hf_to_gguf.py",
        "docs",
        "models",
        "ggml/src/ggml-vulkan",
        "ggml/src/ggml-metal",
        "ggml/src/ggml-cpu/arch/arm",
        "ggml/src/ggml-cpu/kleidiai",
        "tools/server",
        "tools/mtmd",
        "tests/test-tokenizer-0.cpp",
        "vendor/miniaudio",
        "gguf-py/tests",
    } == dropped
    rewrite = dict(plan.rewrite)
    tools = rewrite["tools/CMakeLists.txt"]
    for tool in KEEP_TOOLS:
        assert f"\nadd_subdirectory({tool})" in "\n" + tools
    assert "# LACE trim: add_subdirectory(server)" in tools
    assert "# LACE trim: add_subdirectory(miniaudio)" in rewrite["vendor/CMakeLists.txt"]
    assert rewrite["tests/CMakeLists.txt"] == TESTS_CMAKE


def test_trim_refuses_other_trees() -> None:
    with pytest.raises(LaceError, match=r"not the vendored llama\.cpp"):
        plan_trim(["setup.py"], {})
    tree = [p for p in _FAKE_TREE if not p.startswith("tools/llama-bench/")]
    with pytest.raises(LaceError, match="lacks"):
        plan_trim(tree, {"tools/CMakeLists.txt": "", "vendor/CMakeLists.txt": ""})


def test_filter_subdirectories_only_touches_dropped_names() -> None:
    text = "if (X)\n    add_subdirectory(ui)\nendif()\nadd_subdirectory(tokenize)\n"
    out = filter_subdirectories(text, {"ui"})
    assert "    # LACE trim: add_subdirectory(ui)\n" in out
    assert "\nadd_subdirectory(tokenize)\n" in out


def test_trim_tree_on_disk(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for rel in _FAKE_TREE:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(f"// {rel}\n")
    (src / "tools/CMakeLists.txt").write_text(_TOOLS_CMAKE)
    (src / "vendor/CMakeLists.txt").write_text(_VENDOR_CMAKE)
    info = trim_tree(src, tmp_path / "dst")
    dst = tmp_path / "dst"
    assert (dst / "ggml/src/ggml-cuda/template-instances/mmq-instance-q4_0.cu").is_file()
    assert (dst / "tests/test-backend-ops.cpp").is_file()
    assert not (dst / "docs").exists() and not (dst / "tools/server").exists()
    assert json.loads((dst / "LACE-TRIM.json").read_text())["dropped"] == info["dropped"]
    with pytest.raises(LaceError, match="not empty"):
        trim_tree(src, dst)


# ---------------------------------------------------------------------------- patch
def test_patch_adds_the_27b_cases_once() -> None:
    excerpt = (DATA / "test-backend-ops-excerpt.cpp").read_text()
    (fp,) = parse_patch(PATCH.read_text())
    assert fp.path == "tests/test-backend-ops.cpp"
    patched = apply_to_text(excerpt, fp)
    assert "LACE peers: Qwen3.5-27B GDN dims" in patched
    assert "test_gated_delta_net(GGML_TYPE_F32, 16, 128, 1, n_seqs, 3)" in patched
    for b, t in PREFILL_CASES:
        assert f"test_gated_delta_net(GGML_TYPE_F32, 16, 128, {t:>4}, {b}, 3)" in patched
    assert patched.count("\n") == excerpt.count("\n") + 8
    with pytest.raises(LaceError, match="occur 0 times"):
        apply_to_text(patched, fp)  # applied already


def test_apply_patch_writes_nothing_when_a_file_fails(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    target = tmp_path / "tests" / "test-backend-ops.cpp"
    target.write_text("nothing to patch here\n")
    with pytest.raises(LaceError):
        apply_patch(tmp_path, PATCH.read_text())
    assert target.read_text() == "nothing to patch here\n"


# ---------------------------------------------------------------------------- floors
def test_floors_match_the_reference_figures() -> None:
    dims = qwen35_27b()
    assert (dims.hk, dims.hv, dims.dk, dims.dv, dims.conv_dim) == (16, 48, 128, 128, 10240)
    core = [core_floor_us(dims, b) for b in DECODE_BATCHES]
    assert core == pytest.approx([1.5, 6.0, 23.8, 95.2], abs=0.1)  # gdn-reference §6.3
    layer = [layer_floor_us(dims, b) for b in DECODE_BATCHES]
    assert layer == pytest.approx([56.4, 60.9, 79.1, 152.0], rel=0.01)
    from concurrency.peers.model import weight_bytes

    cfg = peer_model_config()
    assert weight_bytes(cfg) / 2**30 == pytest.approx(2.84, abs=0.005)
    assert model_floor_us(cfg, 1, weight_bytes(cfg), 0) == pytest.approx(722, rel=0.01)


# ---------------------------------------------------------------------------- the GGUF
def test_peer_gguf_small_dims_f16(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    from concurrency.graph.config import get_config, scaled_down
    from concurrency.oracle.gguf_model import gguf_tensor_shapes
    from concurrency.peers.model import weight_bytes, write_peer_model

    cfg = scaled_down(get_config("qwen3.5-27b")).replace(n_layer=4, n_vocab=256)
    path = tmp_path / "peer.gguf"
    nbytes = write_peer_model(path, cfg)
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    shapes = gguf_tensor_shapes(cfg)
    assert list(tensors) == list(shapes)
    assert sum(int(t.n_bytes) for t in reader.tensors) == nbytes == weight_bytes(cfg)
    f16, f32 = gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32
    for name, ne in shapes.items():
        t = tensors[name]
        assert tuple(int(x) for x in t.shape) == ne
        matrix = len(ne) >= 2 and not name.endswith("ssm_conv1d.weight")
        assert t.tensor_type == (f16 if matrix else f32), name
        values = np.asarray(t.data, dtype=np.float64)
        assert np.all(np.isfinite(values))
        if matrix:
            assert 0.01 < values.std() < 0.03  # the default spread, 0.02
    assert float(np.asarray(tensors["blk.0.ssm_a"].data).max()) < 0  # −exp(A_log) stays f32
    field = reader.fields["qwen35.block_count"]
    assert int(field.parts[field.data[0]][0]) == 4


# ---------------------------------------------------------------------------- llama.cpp rows
def _fake_program(path: Path, fixture: Path) -> None:
    path.write_text(f"#!/bin/sh\ncat '{fixture}'\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_backend_ops_rows_from_a_fake_program(tmp_path: Path) -> None:
    _fake_program(tmp_path / "test-backend-ops", DATA / "test-backend-ops-perf-cpu.txt")
    raw: list[str] = []
    rows = llama_peers.backend_ops_rows(tmp_path, 2, 30.0, raw, lambda s: None)
    assert len(raw) == 2 and "-p" in raw[0]
    got = {(r.batch, r.tokens): r for r in rows}
    assert set(got) == set(llama_peers.op_cases())
    assert all(r.status == "ok" and r.rounds == 2 for r in rows)
    assert got[(1, 1)].median_us == 299.88 and got[(1, 1)].case == "gdn core decode"
    assert got[(1, 512)].case == "gdn core prefill" and got[(1, 512)].floor_us is None


def test_backend_ops_rows_say_why_when_the_cases_are_missing(tmp_path: Path) -> None:
    fixture = tmp_path / "out.txt"
    fixture.write_text("Testing 1 devices\n  Backend CUDA0: OK\n")
    _fake_program(tmp_path / "test-backend-ops", fixture)
    rows = llama_peers.backend_ops_rows(tmp_path, 1, 30.0, [], lambda s: None)
    assert len(rows) == len(llama_peers.op_cases())
    assert all(r.status == "failed" and "patch" in r.notes for r in rows)


def test_model_rows_alternate_rounds_and_cover_every_batch(tmp_path: Path) -> None:
    _fake_program(tmp_path / "llama-batched-bench", DATA / "batched-bench-jsonl-cpu.txt")
    _fake_program(tmp_path / "llama-bench", DATA / "llama-bench-jsonl-cpu.txt")
    raw: list[str] = []
    rows, notes = llama_peers.model_rows(
        tmp_path, tmp_path / "m.gguf", 10**9, 3, 30.0, raw, lambda s: None, repetitions=3
    )
    heads = [line.splitlines()[0] for line in raw]
    assert [h.split()[1] for h in heads] == [
        f"GGML_CUDA_GRAPH_OPT={o}" for o in (0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1)
    ]
    by = {(r.variant, r.batch): r for r in rows if r.case == llama_peers.MODEL_CASE}
    assert set(by) == set(llama_peers.model_variants())
    ok = by[("batched-bench GRAPH_OPT=1", 2)]
    assert ok.status == "ok" and ok.rounds == 3
    assert ok.median_us == pytest.approx(1.195606 / 16 * 1e6)
    assert by[("batched-bench GRAPH_OPT=0", 64)].status == "failed"  # the fixture stops at B=4
    assert by[("llama-bench tg128 GRAPH_OPT=0", 1)].rounds == 9
    assert any(n.startswith("llama.cpp B=1: step time off/on") for n in notes)
    # the prompt phase of the same output: T_PP per process, the first prompt marked warm-up
    pre = {(r.variant, r.batch): r for r in rows if r.case == llama_peers.PREFILL_CASE}
    assert set(pre) == set(llama_peers.prefill_variants())
    b2 = pre[("batched-bench GRAPH_OPT=0", 2)]
    assert (b2.status, b2.tokens, b2.rounds) == ("ok", 16, 3)
    assert b2.median_us == pytest.approx(0.148750e6) and WARMUP_MARK not in b2.notes
    assert WARMUP_MARK in pre[("batched-bench GRAPH_OPT=1", 1)].notes
    assert pre[("batched-bench GRAPH_OPT=1", 64)].status == "failed"


def test_build_problem_names_the_first_error(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text(
        "-- Configuring\nCMake Error at ggml/src/ggml-cuda/CMakeLists.txt:178:\n"
        "  Target links to CUDA::cublas\n\n-- Generating done\n"
    )
    assert llama_peers.build_problem(log).startswith("CMake Error at ggml/src/ggml-cuda")
    log.write_text("[1/2] ok\n[2/2] linking\n")
    assert llama_peers.build_problem(log) == "[2/2] linking"


def test_round_orders_alternate() -> None:
    assert llama_peers.round_orders(4) == [(0, 1), (1, 0), (0, 1), (1, 0)]


def test_commands_match_the_recipes() -> None:
    cmd = llama_peers.batched_bench_cmd(Path("bin"), Path("m.gguf"))
    assert cmd[cmd.index("-npl") + 1] == ",".join(map(str, LLAMA_BATCHES))
    assert cmd[cmd.index("-c") + 1] == "16384" and cmd[cmd.index("-fa") + 1] == "off"
    script = llama_peers.build_script(Path("src"), Path("build"), 14)
    assert "-DGGML_CUDA=ON" in script and "-DCMAKE_CUDA_ARCHITECTURES=90" in script
    assert script.endswith("--target llama-batched-bench llama-bench test-backend-ops")


def test_not_built_rows_cover_every_llama_row() -> None:
    rows = llama_peers.not_built_rows("no source")
    assert {(r.peer, r.variant, r.batch, r.tokens) for r in rows} == {
        ("ggml-cuda", "GATED_DELTA_NET", b, t) for b, t in llama_peers.op_cases()
    } | {("llama.cpp", v, b, 1) for v, b in llama_peers.model_variants()} | {
        ("llama.cpp", v, b, 128) for v, b in llama_peers.prefill_variants()
    }
    assert all(r.status == "not built" and r.notes == "no source" for r in rows)


# ---------------------------------------------------------------------------- Python phases
def test_python_phase_failures_become_rows() -> None:
    clock = device.Clock(100.0)

    def missing() -> list[PeerRow]:
        raise ImportError("No module named 'fla'")

    rows = device.run_python_phase("fla core", missing, clock, 50.0)
    assert len(rows) == len(DECODE_BATCHES) + len(PREFILL_CASES)
    assert all(r.status == "not imported" and "fla" in r.notes for r in rows)

    def no_cupy() -> list[PeerRow]:
        from concurrency.peers import lace_peers

        return lace_peers.lace_layer_rows(10, lambda s: None)

    lace = device.run_python_phase("lace layer", no_cupy, clock, 50.0)  # CI has no CuPy
    assert len(lace) == 2 * len(DECODE_BATCHES)
    assert all(r.status == "not imported" for r in lace)  # no CuPy, or no GPU, in CI
    late = device.run_python_phase("torch layer", missing, clock, -1.0)
    assert all(r.status == "not run" and "time budget" in r.notes for r in late)
    assert {r.variant for r in late} == {"1 stream", "4 streams"}


def test_device_run_without_gpu_or_llama_records_every_peer(tmp_path: Path) -> None:
    code = device.main(
        ["--out", str(tmp_path), "--no-python", "--no-llama", "--llama-src", str(tmp_path / "x")]
    )
    assert code == 0
    _meta, rows = load_results(tmp_path)
    assert {r.peer for r in rows} == {"lace", "fla", "torch+fla", "ggml-cuda", "llama.cpp"}
    assert all(r.status in ("not run", "not built") for r in rows)
    assert (tmp_path / "peers-table.txt").read_text().count("\n") > len(rows)


# ---------------------------------------------------------------------------- torch layer
def test_torch_layer_matches_transformers_on_the_cpu() -> None:
    """Skipped where torch and transformers are absent (CI); runs where they are installed."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from concurrency.peers import torch_layer

    assert torch_layer.check_against_transformers("cpu", core="torch", tokens=5) < 1e-5
    # planted bug: the decay's sign flipped must be caught
    import torch

    module = torch_layer.small_transformers_layer("cpu")
    layer = torch_layer.TorchGdnLayer.from_transformers(module, 2, core="torch")
    layer.params["A_log"] = -layer.params["A_log"]
    x = torch.randn(2, 4, module.hidden_size)
    with torch.no_grad():
        ref = module(x)
    assert torch_layer.relative_error(ref, torch_layer._steps(layer, x)) > 1e-3


def test_bench_peers_prints_the_committed_h200_run() -> None:
    """`lace bench --peers --from-data data` prints the committed peers' run with every peer."""
    import json
    import subprocess
    import sys

    from concurrency.data import default_folder

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "concurrency",
            "bench",
            "--peers",
            "--from-data",
            str(default_folder()),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (run,) = json.loads(done.stdout)
    assert run["meta"]["device"] == "NVIDIA H200"
    measured = {r["peer"] for r in run["rows"] if r["status"] == "ok"}
    assert {"lace", "fla", "ggml-cuda", "torch+fla", "llama.cpp"} <= measured


# ---------------------------------------------------------------------------- prefill (T_PP)
def _bench_line(pl: int, t_pp_s: float, pp: int = 128) -> str:
    return json.dumps(
        {"n_ubatch": 512, "pp": pp, "tg": 128, "pl": pl, "n_kv": pl * (pp + 128), "t_pp": t_pp_s,
         "speed_pp": pl * pp / t_pp_s, "t_tg": 0.14, "speed_tg": 900.0, "t": 1.0, "speed": 1.0}
    )  # fmt: skip


#: One H200 batched-bench process (GRAPH_OPT=0, round 1 of the committed run): T_PP per batch.
H200_T_PP_S = {1: 0.124576, 2: 0.072220, 4: 0.009460, 8: 0.015521, 16: 0.031499, 32: 0.057155,
               64: 0.116231}  # fmt: skip


def _bench_text(t_pp: dict[int, float]) -> str:
    return "ggml_cuda_init: found 1 CUDA devices\n" + "\n".join(
        _bench_line(b, t) for b, t in t_pp.items()
    )


def test_prompt_ubatches_hold_whole_sequences() -> None:
    assert prompt_ubatches(1) == (1,) and prompt_ubatches(4) == (4,)
    assert prompt_ubatches(8) == (4, 4) and prompt_ubatches(6) == (4, 2)
    assert prompt_ubatches(3, 1000) == (1, 1, 1)  # a sequence longer than a ubatch: one each
    with pytest.raises(LaceError, match="≥ 1"):
        prompt_ubatches(0)


def test_warmup_flags_the_h200_first_prompts_only() -> None:
    """The committed run's first process: B = 1 and 2 are warm-up (124 and 72 ms for one
    ubatch, later ubatches 7–9 ms), B = 4 (9.5 ms, the first full ubatch) is not."""
    samples = llama_peers.prompt_samples(parse_batched_bench(_bench_text(H200_T_PP_S)), 0)
    assert [(s.batch, s.warmup) for s in samples] == [
        (1, True), (2, True), (4, False), (8, False), (16, False), (32, False), (64, False)
    ]  # fmt: skip
    assert samples[2].t_pp_us == pytest.approx(9460.0) and samples[2].prompt_tokens == 128
    # a small ubatch may be as slow as a fuller one (weights read once per ubatch): not warm-up
    flat = {1: 0.009, 2: 0.009, 4: 0.0095, 8: 0.019}
    assert not any(llama_peers.warmup_flags(parse_batched_bench(_bench_text(flat))))
    # ... but the same figure on a fuller ubatch followed by a faster emptier one is not flagged
    # either: only later, at least as full ubatches bound a row
    late = {4: 0.02, 1: 0.002}
    assert not any(llama_peers.warmup_flags(parse_batched_bench(_bench_text(late))))


def test_prefill_rows_mark_warmup_and_take_the_median_over_processes() -> None:
    procs = [
        llama_peers.prompt_samples(parse_batched_bench(_bench_text(H200_T_PP_S)), opt)
        for opt in (0, 1, 0)
    ]
    rows = llama_peers.prefill_rows([s for p in procs for s in p], "why")
    by = {(r.variant, r.batch): r for r in rows}
    assert set(by) == set(llama_peers.prefill_variants())
    r1, r4 = by[("batched-bench GRAPH_OPT=0", 1)], by[("batched-bench GRAPH_OPT=0", 4)]
    assert r1.rounds == 2 and WARMUP_MARK in r1.notes and "2 of 2" in r1.notes
    assert WARMUP_MARK not in r4.notes and r4.median_us == pytest.approx(9460.0)
    assert (r4.case, r4.tokens, r4.peer) == ("4-layer model prefill", 128, "llama.cpp")
    assert by[("batched-bench GRAPH_OPT=1", 64)].rounds == 1
    assert WARMUP_MARK in format_table(PeersMeta("2026-01-01", "x"), rows)


def _raw_log(processes: list[tuple[int, str]], tail: str = "(exit 0)") -> str:
    parts = ["$  /bin/test-backend-ops perf -o GATED_DELTA_NET\nBackend CUDA0: OK\n\n(exit 0)\n"]
    for opt, body in processes:
        parts.append(
            f"$ GGML_CUDA_GRAPH_OPT={opt} /b/llama-batched-bench -m m.gguf -npp 128 -ntg 128\n"
            f"{body}\n\n{tail}\n"
        )
    return "\n".join(parts)


def test_backfill_adds_prefill_rows_once_and_keeps_the_rest(tmp_path: Path) -> None:
    from concurrency.peers.backfill import NOTE_PREFIX, backfill_prefill, main

    raw = tmp_path / "llama-raw.txt"
    raw.write_text(_raw_log([(0, _bench_text(H200_T_PP_S)), (1, _bench_text(H200_T_PP_S))]))
    peers = tmp_path / "peers.json"
    decode = measured_row("llama.cpp", "4-layer model decode step", "batched-bench GRAPH_OPT=0",
                          4, 1, [100.0])  # fmt: skip
    save_results(peers, PeersMeta("2026-11-30", "run", notes=("kept",)), [decode])
    added = backfill_prefill(raw, peers)
    assert len(added) == len(llama_peers.prefill_variants())
    assert main(["--raw", str(raw), "--peers", str(peers)]) == 0  # a second run: same file
    meta, rows = load_results(peers)
    assert decode in rows and len(rows) == 1 + len(added)
    assert meta.notes[0] == "kept" and sum(n.startswith(NOTE_PREFIX) for n in meta.notes) == 1
    assert "2 llama-batched-bench processes" in meta.notes[-1]
    marked = {r.batch for r in rows if WARMUP_MARK in r.notes}
    assert marked == {1, 2}


def test_backfill_skips_failed_runs_and_names_a_corrupt_log(tmp_path: Path) -> None:
    from concurrency.peers.backfill import main, raw_prompt_samples

    raw = tmp_path / "llama-raw.txt"
    raw.write_text(_raw_log([(0, _bench_text(H200_T_PP_S))]) + "\n" + _raw_log(
        [(1, "CUDA error")], tail="(exit 1)"))  # fmt: skip
    (proc,) = raw_prompt_samples(raw)
    assert {s.graph_opt for s in proc} == {0}
    broken = _bench_text(H200_T_PP_S).replace('"t_pp": 0.00946', '"t_pp": oops')
    raw.write_text(_raw_log([(0, broken)]))
    with pytest.raises(
        LaceError, match=r"llama-raw\.txt:6: the run on this line: cannot read .*git checkout"
    ):
        raw_prompt_samples(raw)
    raw.write_text("$  /bin/test-backend-ops perf\n(exit 0)\n")
    with pytest.raises(LaceError, match="holds no llama-batched-bench section"):
        raw_prompt_samples(raw)
    raw.write_text(_raw_log([(0, "no rows here")]))
    with pytest.raises(LaceError, match="exit 0 but no result rows"):
        raw_prompt_samples(raw)
    raw.write_text(_raw_log([(0, "x")]).replace("GGML_CUDA_GRAPH_OPT=0 ", ""))
    with pytest.raises(LaceError, match="names no GGML_CUDA_GRAPH_OPT"):
        raw_prompt_samples(raw)
    assert main(["--raw", str(tmp_path / "none.txt"), "--peers", str(tmp_path / "p.json")]) == 2


def test_committed_run_holds_the_prefill_rows_of_its_raw_log() -> None:
    """data/'s peers.json has exactly the prefill rows its llama-raw.txt gives (parsed again
    here), B = 1 and 2 marked warm-up; the run measured them itself (no backfill note)."""
    from concurrency.data import default_folder, peer_files
    from concurrency.peers.backfill import NOTE_PREFIX, raw_prompt_samples

    (path,) = peer_files(default_folder())
    meta, rows = load_results(path)
    stored = [r for r in rows if r.case == llama_peers.PREFILL_CASE]
    processes = raw_prompt_samples(path.parent / "llama-raw.txt")
    assert len(processes) == 6
    again = llama_peers.prefill_rows([s for p in processes for s in p])
    assert sorted(stored, key=lambda r: r.key) == sorted(again, key=lambda r: r.key)
    assert all(r.status == "ok" and r.rounds == 3 for r in stored)
    assert {r.batch for r in stored if WARMUP_MARK in r.notes} == {1, 2}
    assert not any(n.startswith(NOTE_PREFIX) for n in meta.notes)


def test_the_chained_core_graph_keeps_two_results_live_and_runs_right_in_its_arena() -> None:
    """core_chain_graph: each op starts from the state the previous one wrote; the plan gives
    alternate results the same bytes (arena = two results: the L2-resident working set the
    variant is for), and the arena run equals the float64 reference."""
    from concurrency.execute.numpy_arena import compare_runs
    from concurrency.graph.branches import detect_branches
    from concurrency.graph.config import get_config
    from concurrency.graph.schedule import serial_schedule
    from concurrency.memory.policies import plan_memory
    from concurrency.peers.cases import GdnDims
    from concurrency.peers.lace_peers import core_chain_graph

    dims = GdnDims.from_config(get_config("tiny"))
    graph = core_chain_graph(dims, 2, 5)
    gdn = [n for n in graph.nodes if graph[n].op == "GATED_DELTA_NET"]
    assert len(gdn) == 5
    for prev, nxt in itertools.pairwise(gdn):
        assert graph.base(graph[nxt].srcs[5]) == prev  # the state is the previous result
    schedule = serial_schedule(graph)
    plan = plan_memory(graph, schedule, detect_branches(graph), "happens_before")
    result_bytes = plan.sizes[gdn[0]]
    assert plan.arena_bytes == 2 * result_bytes
    assert {plan.offsets[n] for n in gdn} == {0, result_bytes}
    assert all(r.ok(1e-5) for r in compare_runs(graph, schedule, plan, seeds=range(2)))


def test_lace_reference_leaves_out_the_l2_resident_variant() -> None:
    from concurrency.peers.lace_peers import CHAINED_VARIANT
    from concurrency.peers.table import lace_reference

    def row(variant: str, us: float) -> PeerRow:
        return PeerRow("lace", "gdn core decode", variant, 1, 1, "ok", us, us, us, 10, 1.0, "")

    rows = [row("recurrent kernel", 4.6), row(CHAINED_VARIANT, 2.5)]
    assert lace_reference(rows) == {("gdn core decode", 1, 1): 4.6}
