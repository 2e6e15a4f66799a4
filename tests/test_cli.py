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
