"""Schedules and their happens-before relation."""

from __future__ import annotations

import pytest

from concurrency.errors import ConfigError
from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.schedule import serial_schedule, stream_schedule


def test_serial_orders_every_pair() -> None:
    g = build_graph("tiny", "gdn")
    s = serial_schedule(g)
    n = len(g)
    assert all(s.happens_before(a, b) for a in range(n) for b in range(a + 1, n))


def test_gdn_branches_are_concurrent_but_fork_and_join_order_them() -> None:
    g = build_graph("qwen3.5-27b", "gdn", "decode", 1)
    s = stream_schedule(g, detect_branches(g))
    i = g.index
    assert s.n_streams == 5
    assert {s.stream_of(n) for n in ("qkv-0", "alpha_proj-0", "beta_proj-0", "z-0")} == {1, 2, 3, 4}
    assert not s.ordered(i["z-0"], i["conv_output_raw-0"])
    assert not s.ordered(i["beta_proj-0"], i["alpha_proj-0"])
    assert s.happens_before(i["attn_norm-0"], i["z-0"])
    assert s.happens_before(i["k_l2-0"], i["gdn-0"])
    assert s.happens_before(i["z_silu-0"], i["gdn_gated-0"])
    # the qkv branch waits for the conv-state gather done on the main stream
    assert i["conv_states_3d-0"] in s.waits[i["conv_input-0"]]
    assert s.happens_before(i["conv_states-0"], i["conv_input-0"])


def test_one_stream_is_serial() -> None:
    g = build_graph("qwen3.5-27b", "gdn")
    s = stream_schedule(g, detect_branches(g), max_streams=1)
    assert s.n_streams == 1 and set(s.stream) == {0}


def test_streams_wrap_at_the_maximum() -> None:
    g = build_graph("qwen3.5-27b", "gdn")
    s = stream_schedule(g, detect_branches(g), max_streams=3)
    assert s.stream_of("qkv-0") == 1 and s.stream_of("beta_proj-0") == 1
    assert s.happens_before(g.index["qkv-0"], g.index["beta_proj-0"])


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_stream_count(bad: int) -> None:
    g = build_graph("tiny", "gdn")
    with pytest.raises(ConfigError, match="max_streams"):
        stream_schedule(g, detect_branches(g), max_streams=bad)
