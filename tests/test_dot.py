"""The branch drawing, inspected as DOT source (no rendering needed)."""

from __future__ import annotations

import shutil

import pytest

from concurrency.errors import LaceError
from concurrency.graph.builders import build_graph
from concurrency.render.dot import BRANCH_COLOURS, graph_dot, render_svg


def test_gdn_drawing_has_one_cluster_per_branch_and_marks_fork_and_joins() -> None:
    src = graph_dot(build_graph("qwen3.5-27b", "gdn", "decode", 1)).source
    for b in range(4):
        assert f"cluster_r0_b{b}" in src
        assert BRANCH_COLOURS[b] in src
    assert "doubleoctagon" in src and '"attn_norm-0"' in src
    assert src.count("peripheries=2") == 2  # gdn-0 and gdn_gated-0
    assert "mul_mat 10240×1" in src and "40.0 KiB" in src


def test_hide_views_removes_reshapes_but_keeps_edges_through_them() -> None:
    g = build_graph("qwen3.5-27b", "gdn", "decode", 1)
    hidden = graph_dot(g, hide_views=True).source
    shown = graph_dot(g, hide_views=False).source
    assert '"qkv_mixed-0"' not in hidden and '"qkv_mixed-0"' in shown
    assert '"qkv-0" -> "conv_input-0"' in hidden  # through the reshape and transpose


def test_cache_ordering_is_drawn_dashed() -> None:
    src = graph_dot(build_graph("qwen3.5-27b", "attn", "decode", 1), hide_views=True).source
    assert '"k_cache_write-0" -> "fattn-0"' in src or "style=dashed" in src


def test_focus_on_unknown_fork_names_the_forks() -> None:
    with pytest.raises(LaceError, match="attn_norm-0"):
        graph_dot(build_graph("tiny", "gdn"), focus="nope")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_svg_renders() -> None:
    svg = render_svg(graph_dot(build_graph("tiny", "attn")))
    assert svg.lstrip().startswith("<?xml") or "<svg" in svg


def test_missing_dot_gives_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LaceError, match="apt-get install graphviz"):
        render_svg(graph_dot(build_graph("tiny", "attn")))
