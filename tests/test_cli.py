"""The `lace` command line: output formats, JSON-only stdout, one-line errors, lazy imports,
progress on stderr, --policy all, and tables that name both kinds of hazard."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from concurrency import __version__
from concurrency.cli import COMMANDS, build_parser, main

REPO = Path(__file__).resolve().parents[1]
STACK = ["--model", "tiny", "--layer", "stack", "--layers", "4"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def lace(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """`python -m concurrency ARGV` in a fresh interpreter that loads this checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "concurrency", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


# ----------------------------------------------------------------------------- basics
def test_models_lists_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models")
    assert code == 0 and "qwen3.5-27b" in out and "qwen3-next-80b-a3b" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"lace {__version__}\n"


def test_models_help_ends_with_the_config_keys(capsys: pytest.CaptureFixture[str]) -> None:
    from concurrency.graph.config import config_keys_text

    with pytest.raises(SystemExit):
        main(["models", "--help"])
    out = capsys.readouterr().out
    assert out.rstrip().endswith(config_keys_text().rstrip())
    assert "n_layer" in out and "Config files (JSON or YAML" in out


def test_model_option_names_both_config_formats(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["graph", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "preset name, or a .json / .yaml / .yml config file" in out


def test_every_command_has_its_options_in_the_full_parser() -> None:
    """build_parser() (no argument) registers every command with its options, --format json
    included, as the lazily built per-command parsers do."""
    parser = build_parser()
    for command in COMMANDS:
        argv = [command.name, "--format", "json"]
        if command.name in {"graph", "branches", "plan", "hazards", "run", "simulate"}:
            argv += ["--model", "tiny"]
        if command.name == "sweep":
            argv += ["--models", "tiny"]
        args = parser.parse_args(argv)
        assert args.format == "json" and args.quiet is False, command.name


def test_graph_json_lists_nodes_and_branches(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "graph",
        "--model",
        "qwen3.5-27b",
        "--layer",
        "gdn",
        "--mode",
        "decode",
        "--batch",
        "1",
        "--format",
        "json",
    )
    doc = json.loads(out)
    assert code == 0
    qkv = next(n for n in doc["nodes"] if n["name"] == "qkv-0")
    assert qkv["op"] == "MUL_MAT" and qkv["output"]["bytes"] == 40960
    assert qkv["inputs"] == ["blk.0.attn_qkv.weight", "attn_norm-0"]
    general = doc["branches"]["general"]["regions"][0]
    assert general["fork"] == "attn_norm-0" and len(general["branches"]) == 4
    assert doc["branches"]["ggml"]["regions"] == []
    assert "fan-out 4" in doc["branches"]["ggml"]["rejections"][0]["reason"]


def test_graph_dot_format(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "graph",
        "--model",
        "tiny",
        "--layer",
        "attn",
        "--format",
        "dot",
        "--detector",
        "ggml",
    )
    assert code == 0 and out.startswith("digraph")


def test_branches_honours_the_detector(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12: `lace branches` printed both detectors whatever --detector said."""
    code, out, _ = run(capsys, "branches", "--model", "tiny", "--detector", "ggml")
    assert code == 0 and "[ggml] 0 region(s)" in out and "[general]" not in out
    assert "rejected attn_norm-0: fan-out 4" in out
    code, out, _ = run(capsys, "branches", "--model", "tiny")
    assert code == 0 and "[general] 1 region(s)" in out and "[ggml]" not in out

    code, out, _ = run(capsys, "branches", "--model", "tiny", "--format", "json")
    doc = json.loads(out)
    assert doc["detector"] == "general" and doc["graph"] == "tiny gdn decode B=1"
    assert doc["regions"][0]["fork"] == "attn_norm-0"
    assert doc["rejections"] and all("fan-out" not in x["reason"] for x in doc["rejections"])
    code, out, _ = run(
        capsys, "branches", "--model", "tiny", "--detector", "ggml", "--format", "json"
    )
    doc = json.loads(out)
    assert doc["detector"] == "ggml" and doc["regions"] == [] and len(doc["rejections"]) == 1


# ----------------------------------------------------------------------------- JSON only
def _oracle_loads() -> bool:
    from concurrency.errors import LaceError
    from concurrency.oracle.ggml_lib import Ggml

    try:
        Ggml.load()
    except LaceError:
        return False
    return True


def _engine_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "gguf"))


JSON_COMMANDS = [
    pytest.param(["models"], id="models"),
    pytest.param(["graph", "--model", "tiny"], id="graph"),
    pytest.param(["branches", "--model", "tiny"], id="branches"),
    pytest.param(["plan", *STACK], id="plan"),
    pytest.param(["hazards", *STACK, "--policy", "all"], id="hazards"),
    pytest.param(["run", "--model", "tiny", "--policy", "all", "--seeds", "2"], id="run"),
    pytest.param(["simulate", "--model", "tiny", "--trace", "{tmp}/t.json"], id="simulate"),
    pytest.param(
        ["sweep", "--models", "tiny", "--in-process", "--out", "{tmp}/s.parquet"], id="sweep"
    ),
    pytest.param(["record", "--dry-run", "--models", "tiny"], id="record-dry-run"),
    pytest.param(
        ["bench", "--from-data", str(REPO / "tests" / "data" / "gpu-recording")], id="bench"
    ),
    pytest.param(
        [
            "calibrate",
            "--data",
            str(REPO / "tests" / "data" / "gpu-recording"),
            "--out",
            "{tmp}/spec.json",
        ],
        id="calibrate",
    ),
    pytest.param(
        ["fidelity", "--models", "tiny", "--batches", "1"],
        id="fidelity",
        marks=pytest.mark.skipif(not _oracle_loads(), reason="the ggml oracle is not built"),
    ),
    pytest.param(
        ["fidelity", "--engine", "--models", "tiny", "--batches", "3"],
        id="fidelity-engine",
        marks=pytest.mark.skipif(not _engine_installed(), reason="no llama-cpp-python/gguf"),
    ),
]


@pytest.mark.parametrize("argv", JSON_COMMANDS)
def test_format_json_prints_only_json(argv: list[str], tmp_path: Path) -> None:
    """Every command's stdout with --format json is one JSON document, in a real process
    (so a C library writing to file descriptor 1 would show too)."""
    done = lace(*[a.replace("{tmp}", str(tmp_path)) for a in argv], "--format", "json")
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)  # raises on anything but exactly one JSON document
    assert "Traceback" not in done.stderr


@pytest.mark.notebook
def test_report_json_prints_only_json(tmp_path: Path) -> None:
    """The kernel's output stays out of stdout: `lace report --format json` lists the pages."""
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    (nbs / "01_hello.py").write_text("# %%\nprint('hello from the kernel')\n1 + 1\n")
    done = lace(
        "report", "--notebooks", str(nbs), "--out", str(tmp_path / "out"), "--format", "json"
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["pages"] == [str(tmp_path / "out" / "01_hello.html")]
    assert Path(doc["pages"][0]).is_file() and Path(doc["notebooks"][0]).is_file()


def test_library_output_during_a_command_goes_to_stderr(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text a library prints (Python print or a write to descriptor 1) while the command runs
    lands on stderr; stdout holds only the JSON."""
    from concurrency.graph import branches

    original = branches.detect_branches

    def noisy(*args, **kwargs):  # type: ignore[no-untyped-def]
        print("python-level noise")
        os.write(1, b"fd-level noise\n")
        return original(*args, **kwargs)

    monkeypatch.setattr(branches, "detect_branches", noisy)
    code = main(["branches", "--model", "tiny", "--format", "json"])
    out, err = capfd.readouterr()
    assert code == 0 and json.loads(out)["detector"] == "general"
    assert "python-level noise" in err and "fd-level noise" in err


def test_non_finite_numbers_become_null() -> None:
    from concurrency.cli.output import Result

    text = Result.json({"error": float("nan"), "rows": [float("inf"), 1.5]}).render()
    assert json.loads(text) == {"error": None, "rows": [None, 1.5]}
    assert "NaN" not in text and "Infinity" not in text


# ----------------------------------------------------------------------------- lazy imports
HEAVY = (
    "numpy",
    "pandas",
    "nbconvert",
    "nbclient",
    "nbformat",
    "jupytext",
    "jupyter_client",
    "altair",
    "graphviz",
    "ipywidgets",
    "llama_cpp",
    "yaml",
    "dask",
    "distributed",
)


def _modules_after(argv: list[str]) -> set[str]:
    """The modules a fresh interpreter has loaded after `lace ARGV` (output discarded)."""
    code = (
        "import contextlib, io, json, sys\n"
        "from concurrency.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("argv", [["models"], ["--help"], ["--version"], ["models", "--help"]])
def test_quick_commands_import_no_heavy_library(argv: list[str]) -> None:
    """Issue 12: every call spent 2–4 s importing the notebook tooling. `lace models` and
    `lace --help` import no NumPy, pandas, notebook, drawing or engine module, and none of
    the pipeline stages they do not use."""
    loaded = _modules_after(argv)
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == [], heavy
    stages = sorted(m for m in loaded if m.startswith(("concurrency.memory", "concurrency.timing")))
    assert stages == [] and "concurrency.report" not in loaded, stages
    if argv[0] != "models":
        assert not any(m.startswith("concurrency.graph") for m in loaded)


def test_planning_imports_no_notebook_or_drawing_library() -> None:
    loaded = _modules_after(["plan", "--model", "tiny", "--format", "json"])
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == [], heavy


def test_module_entry_point_matches_console_script() -> None:
    done = lace("models", "--format", "json")
    assert done.returncode == 0 and "qwen3.5-27b" in json.loads(done.stdout)


# ----------------------------------------------------------------------------- bad input
def _bad_inputs(tmp: Path) -> list[tuple[list[str], str]]:
    corrupt = tmp / "corrupt.json"
    corrupt.write_text("{not json")
    empty_yaml = tmp / "empty.yaml"
    empty_yaml.write_text("")
    bad_gpu = tmp / "gpu.json"
    bad_gpu.write_text("[1, 2]")
    return [
        (["graph", "--model", str(tmp)], "is a directory"),
        (["graph", "--model", str(tmp / "missing.json")], "does not exist"),
        (["graph", "--model", str(corrupt)], "is not valid JSON"),
        (["graph", "--model", str(empty_yaml)], "is empty"),
        (["graph", "--model", "qwen9"], "unknown model 'qwen9'"),
        (["graph", "--model", "tiny", "--batch", "0"], "positive integer"),
        (["graph", "--model", "tiny", "--batch", "-2"], "positive integer"),
        (["graph", "--model", "tiny", "--mode", "prefill", "--tokens", "0"], "positive integer"),
        (["graph", "--model", "tiny", "--layer", "mamba"], "invalid choice"),
        (["graph", "--model", "tiny", "--layer", "stack", "--layers", "9"], "has 4 layers"),
        (["branches", "--model", "tiny", "--detector", "magic"], "invalid choice: 'magic'"),
        (["plan", "--model", "tiny", "--policy", "lru"], "invalid choice: 'lru'"),
        (["plan", "--model", "tiny", "--max-streams", "0"], "positive integer"),
        (["hazards", "--model", "tiny", "--limit", "-1"], "positive integer"),
        (["run", "--model", "tiny", "--tolerance", "-1"], "must be ≥ 0"),
        (["run", "--model", "tiny", "--tolerance", "nan"], "finite"),
        (["run", "--model", "tiny", "--seeds", "0"], "positive integer"),
        (["run", "--model", "qwen3.5-27b", "--layer", "stack", "--layers", "4"], "tiny"),
        (["simulate", "--model", "tiny", "--trace", str(tmp / "no" / "t.json")], "does not exist"),
        (["simulate", "--model", "tiny", "--trace", str(tmp)], "is a folder"),
        (["simulate", "--model", "tiny", "--gpu", "v100"], "unknown GPU 'v100'"),
        (["simulate", "--model", "tiny", "--gpu", str(bad_gpu)], "JSON object"),
        (["simulate", "--model", "tiny", "--gpu", str(tmp / "gpu2.json")], "not found"),
        (["simulate", "--model", "tiny", "--weight-bytes", "nan"], "finite"),
        (["simulate", "--model", "tiny", "--weight-bytes", "0"], "must be > 0"),
        (["fidelity", "--batches", "0"], "positive integer"),
        (["report", "--timeout", "0"], "positive number of seconds"),
        (["report", "--notebooks", str(tmp / "none")], "not found"),
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ]


def test_bad_input_is_one_line_and_non_zero(tmp_path: Path) -> None:
    """Issue 12: each bad value, name or file is one `lace: error:` line on stderr, exit ≠ 0,
    nothing on stdout, never a traceback (each in a fresh process)."""
    for argv, needle in _bad_inputs(tmp_path):
        done = lace(*argv)
        assert done.returncode != 0, argv
        assert done.stderr.startswith("lace: error: "), (argv, done.stderr)
        assert needle in done.stderr, (argv, done.stderr)
        assert done.stderr.count("\n") == 1, (argv, done.stderr)
        assert "Traceback" not in done.stderr and done.stdout == "", argv


def test_engine_fidelity_without_the_engine_fails_with_the_reason(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fidelity run the user asked for that cannot probe the engine is an error, not a
    table with a note."""
    from concurrency.errors import MissingToolError
    from concurrency.oracle import engine

    def missing() -> str:
        raise MissingToolError("the engine probe needs llama-cpp-python; run make oracle")

    monkeypatch.setattr(engine, "llama_version", missing)
    code, out, err = run(capsys, "fidelity", "--engine", "--format", "json")
    assert code != 0 and out == ""
    assert "needs llama-cpp-python" in err and err.count("\n") == 1


def test_ggml_fidelity_without_the_oracle_fails_with_the_reason(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrency.errors import MissingToolError
    from concurrency.oracle.ggml_lib import Ggml

    def missing(cls):  # type: ignore[no-untyped-def]
        raise MissingToolError("the ggml oracle needs llama-cpp-python; run make oracle")

    monkeypatch.setattr(Ggml, "load", classmethod(missing))
    code, out, err = run(capsys, "fidelity", "--models", "tiny")
    assert code != 0 and out == ""
    assert err == "lace: error: the ggml oracle needs llama-cpp-python; run make oracle\n"


# ----------------------------------------------------------------------------- progress
def test_progress_goes_to_stderr_and_stdout_stays_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no delay every step is announced on stderr; --quiet silences it; stdout holds the
    JSON either way."""
    from concurrency.cli import progress

    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    code, out, err = run(capsys, "plan", "--model", "tiny", "--format", "json")
    assert code == 0 and len(json.loads(out)["policies"]) == 8
    assert "lace: building the gdn graph of tiny …\n" in err
    assert "lace: planning and checking 8 policies (8/8: torch_record_stream) …\n" in err
    assert all(line.startswith("lace: ") for line in err.splitlines())
    code, out, err = run(capsys, "plan", "--model", "tiny", "--format", "json", "--quiet")
    assert code == 0 and err == "" and json.loads(out)["policies"]


def test_progress_shows_nothing_for_quick_work() -> None:
    import io

    from concurrency.cli.progress import Progress

    stream = io.StringIO()
    p = Progress(stream, delay_s=60)
    for _ in p.steps("planning", ["a", "b"]):
        pass
    p.close()
    assert stream.getvalue() == ""


def test_progress_on_a_terminal_rewrites_one_line_and_erases_it() -> None:
    import io

    from concurrency.cli.progress import Progress

    stream = io.StringIO()
    p = Progress(stream, delay_s=0, tty=True)
    p.update("one")
    p.update("two")
    p.close()
    assert stream.getvalue() == "\r\x1b[Klace: one …\r\x1b[Klace: two …\r\x1b[K"


def test_progress_timer_announces_a_long_stage() -> None:
    """An update made before the delay is shown when the delay passes, even with no update
    after it (one long stage)."""
    import io
    import time

    from concurrency.cli.progress import Progress

    stream = io.StringIO()
    p = Progress(stream, delay_s=0.05)
    p.update("a long stage")
    deadline = time.monotonic() + 30
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    p.close()
    assert stream.getvalue() == "lace: a long stage …\n"


# ----------------------------------------------------------------------------- plans, hazards
def test_plan_engine_flow_names_its_plans_and_context(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12: with ggml-cuda's detector every safe policy is race-free in the engine flow,
    sequential and interleave race, and every row says which plan its figures come from."""
    from concurrency.memory.policies import POLICIES, STREAM_SAFE_POLICIES

    code, out, _ = run(capsys, "plan", *STACK, "--detector", "ggml", "--format", "json")
    doc = json.loads(out)
    assert code == 0
    assert (doc["flow"], doc["n_ctx"], doc["n_ubatch"]) == ("engine", 512, 512)
    assert doc["reserves"] == ["pp512", "tg1", "pp512"]
    rows = {r["policy"]: r for r in doc["policies"]}
    assert set(rows) == set(POLICIES)
    for name in STREAM_SAFE_POLICIES:
        assert rows[name]["hazards"] == 0, name
    assert rows["sequential"]["hazards"] > 0 and rows["interleave"]["hazards"] > 0
    assert rows["sequential"]["planned_graph"] == "pp512 reserve"
    assert rows["alloc_dep"]["plan_source"].startswith("re-planned: 245 nodes")
    for r in rows.values():
        assert r["lower_bound_bytes"] <= r["arena_bytes"] <= r["buffer_bytes"]
        assert sum(r["hazards_by_site"].values()) == r["hazards"]
        assert r["races"] + r["uses_after_reuse"] == r["hazards"]
    code, out, _ = run(capsys, "plan", *STACK, "--detector", "ggml")
    assert code == 0 and "n_ctx 512 (default), n_ubatch 512 (default)" in out
    assert "alloc_dep: re-planned: 245 nodes, the stored pp512 plan has 241" in out


def test_plan_table_has_a_column_per_hazard_kind(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "--model", "tiny", "--format", "json")
    rows = {r["policy"]: r for r in json.loads(out)["policies"]}
    code, out, _ = run(capsys, "plan", "--model", "tiny")
    lines = out.splitlines()
    assert code == 0 and lines[1].split()[7:13] == ["races", "uses", "after", "reuse", "by", "site"]
    for line in lines[2 : 2 + len(rows)]:
        # policy, "this graph", arena, bound (value and unit each), ratio, buffer, races, uses
        cells = line.split()
        name = cells[0]
        assert (int(cells[10]), int(cells[11])) == (
            rows[name]["races"],
            rows[name]["uses_after_reuse"],
        ), line
    assert rows["sequential"]["races"] > 0


def test_policy_result_counts_each_kind(capsys: pytest.CaptureFixture[str]) -> None:
    """`PolicyResult.races` and `.uses_after_reuse` split the hazards by kind (a planted use
    after reuse, since no policy makes one on these graphs)."""
    import dataclasses

    from concurrency.graph.branches import detect_branches
    from concurrency.graph.builders import build_graph
    from concurrency.graph.schedule import stream_schedule
    from concurrency.memory.check import USE_AFTER_REUSE
    from concurrency.memory.compare import compare_policies

    graph = build_graph("tiny")
    report = detect_branches(graph)
    (result,) = compare_policies(graph, stream_schedule(graph, report), report, ["sequential"])
    assert result.races and not result.uses_after_reuse
    planted = dataclasses.replace(result.hazards[0], kind=USE_AFTER_REUSE)
    mixed = dataclasses.replace(result, hazards=(*result.hazards, planted))
    row = mixed.row()
    assert (row["races"], row["uses_after_reuse"]) == (len(result.hazards), 1)
    assert row["hazards"] == len(result.hazards) + 1


def test_n_ctx_and_n_ubatch_options(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["plan", *STACK, "--policy", "sequential", "--n-ctx", "1024", "--n-ubatch", "256"]
    code, out, _ = run(capsys, *argv, "--format", "json")
    doc = json.loads(out)
    assert code == 0 and (doc["n_ctx"], doc["n_ubatch"]) == (1024, 256)
    assert doc["reserves"] == ["pp256", "tg1", "pp256"]
    code, out, _ = run(capsys, *argv)
    assert "n_ctx 1024, n_ubatch 256; reserves pp256, tg1, pp256" in out


def test_hazards_json_names_flow_plan_sites_and_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "hazards", *STACK, "--format", "json")
    doc = json.loads(out)
    (policy,) = doc["policies"]
    assert code == 0 and policy["policy"] == "sequential"
    assert policy["plan_source"] == "replays the pp512 reserve plan"
    assert len(policy["hazards"]) == sum(policy["hazards_by_site"].values()) > 0
    assert {h["site"] for h in policy["hazards"]} <= {"gdn", "attn"}
    kinds = [h["kind"] for h in policy["hazards"]]
    assert (kinds.count("race"), kinds.count("use after reuse")) == (
        policy["races"],
        policy["uses_after_reuse"],
    )


def test_hazards_policy_all_lists_every_policy(capsys: pytest.CaptureFixture[str]) -> None:
    from concurrency.memory.policies import POLICIES

    code, out, _ = run(capsys, "hazards", "--model", "tiny", "--policy", "all", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and [p["policy"] for p in doc["policies"]] == list(POLICIES)
    counts = {p["policy"]: len(p["hazards"]) for p in doc["policies"]}
    code, out, _ = run(capsys, "hazards", "--model", "tiny", "--policy", "all", "--limit", "1")
    assert code == 0
    for name in POLICIES:
        assert f"policy {name}: {counts[name]} hazard(s): {counts[name]} race(s), 0 use(s)" in out
    assert out.count("  [race, gdn] ") == sum(1 for n in counts.values() if n)


def test_simulate_policy_all_draws_a_counter_per_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from concurrency.memory.policies import POLICIES
    from concurrency.timing.trace import COUNTER_NAME, load_trace

    path = tmp_path / "all.json"
    argv = ["simulate", "--model", "tiny", "--policy", "all", "--trace", str(path)]
    code, out, _ = run(capsys, *argv, "--format", "json")
    assert code == 0 and json.loads(out)["trace"] == str(path)
    counters = {e["name"] for e in load_trace(path)["traceEvents"] if e["ph"] == "C"}
    assert counters == {f"{COUNTER_NAME} ({name})" for name in POLICIES}
