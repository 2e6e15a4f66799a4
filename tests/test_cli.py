"""The `lace` command line: output formats and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from concurrency.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv)) if argv else main([])
    out, err = capsys.readouterr()
    return code, out, err


def test_models_lists_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models")
    assert code == 0 and "qwen3.5-27b" in out and "qwen3-next-80b-a3b" in out


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


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["graph", "--model", "qwen9"], "unknown model 'qwen9'"),
        (["graph", "--model", "tiny", "--batch", "0"], "positive integer"),
        (["graph", "--model", "tiny", "--batch", "-2"], "positive integer"),
        (["graph", "--model", "tiny", "--layer", "mamba"], "invalid choice"),
        (["graph", "--model", "tiny", "--layer", "stack", "--layers", "9"], "has 4 layers"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(argv: list[str], needle: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "concurrency", *argv], capture_output=True, text=True
    )
    assert done.returncode != 0
    assert needle in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_module_entry_point_matches_console_script() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "concurrency", "models", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "qwen3.5-27b" in json.loads(done.stdout)


STACK = ["--model", "tiny", "--layer", "stack", "--layers", "4"]


def test_plan_engine_flow_names_its_plans_and_context(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12: with ggml-cuda's detector every safe policy is race-free in the engine flow,
    sequential and interleave race, and every row says which plan its figures come from."""
    from concurrency.memory.policies import POLICIES, SAFE_POLICIES

    code, out, _ = run(capsys, "plan", *STACK, "--detector", "ggml", "--format", "json")
    doc = json.loads(out)
    assert code == 0
    assert (doc["flow"], doc["n_ctx"], doc["n_ubatch"]) == ("engine", 512, 512)
    assert doc["reserves"] == ["pp512", "tg1", "pp512"]
    rows = {r["policy"]: r for r in doc["policies"]}
    assert set(rows) == set(POLICIES)
    for name in SAFE_POLICIES:
        assert rows[name]["hazards"] == 0, name
    assert rows["sequential"]["hazards"] > 0 and rows["interleave"]["hazards"] > 0
    assert rows["sequential"]["planned_graph"] == "pp512 reserve"
    assert rows["alloc_dep"]["plan_source"].startswith("re-planned: 245 nodes")
    for r in rows.values():
        assert r["lower_bound_bytes"] <= r["arena_bytes"] <= r["buffer_bytes"]
        assert sum(r["hazards_by_site"].values()) == r["hazards"]
    code, out, _ = run(capsys, "plan", *STACK, "--detector", "ggml")
    assert code == 0 and "n_ctx 512 (default), n_ubatch 512 (default)" in out
    assert "alloc_dep: re-planned: 245 nodes, the stored pp512 plan has 241" in out


def test_n_ctx_and_n_ubatch_options(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["plan", *STACK, "--policy", "sequential", "--n-ctx", "1024", "--n-ubatch", "256"]
    code, out, _ = run(capsys, *argv, "--format", "json")
    doc = json.loads(out)
    assert code == 0 and (doc["n_ctx"], doc["n_ubatch"]) == (1024, 256)
    assert doc["reserves"] == ["pp256", "tg1", "pp256"]
    code, out, _ = run(capsys, *argv)
    assert "n_ctx 1024, n_ubatch 256; reserves pp256, tg1, pp256" in out


def test_hazards_json_names_flow_plan_and_sites(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "hazards", *STACK, "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["plan_source"] == "replays the pp512 reserve plan"
    assert len(doc["hazards"]) == sum(doc["hazards_by_site"].values()) > 0
    assert {h["site"] for h in doc["hazards"]} <= {"gdn", "attn"}


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
