"""Schedules and their happens-before relation."""

from __future__ import annotations

import pytest

from concurrency.errors import ConfigError
from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.schedule import (
    Schedule,
    schedule_from_streams,
    serial_schedule,
    stream_schedule,
)


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


# --- hand-built schedules ----------------------------------------------------------------


def _reachability(stream: list[int], waits: list[list[int]]) -> list[set[int]]:
    """The oracle for happens-before, written apart from Schedule: an explicit edge list
    (previous node of the same stream, each awaited node) searched depth-first per node."""
    n = len(stream)
    preds: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        earlier_same = [j for j in range(i) if stream[j] == stream[i]]
        if earlier_same:
            preds[i].append(earlier_same[-1])
        preds[i].extend(waits[i])
    before: list[set[int]] = []
    for i in range(n):
        seen: set[int] = set()
        todo = list(preds[i])
        while todo:
            j = todo.pop()
            if j not in seen:
                seen.add(j)
                todo.extend(preds[j])
        before.append(seen)
    return before


def test_hand_built_schedule_orders_like_the_oracle() -> None:
    """Ancestors are computed for a hand-built schedule; every pair agrees with a
    reachability search (so the relation is neither too strict nor too loose)."""
    stream = [0, 1, 2, 1, 0, 2, 0]
    waits = [[], [0], [0], [], [3, 1], [], [5]]
    s = Schedule(tuple("abcdefg"), stream, waits, 3)  # type: ignore[arg-type]
    oracle = _reachability(stream, waits)
    for b in range(7):
        for a in range(7):
            assert s.happens_before(a, b) == (a in oracle[b]), (a, b)
    assert not s.ordered(2, 3) and not s.ordered(5, 4)  # c ∥ d, f ∥ e
    assert s.happens_before(0, 6) and s.happens_before(5, 6)


def test_real_schedule_relation_matches_the_oracle() -> None:
    g = build_graph("tiny", "gdn")
    s = stream_schedule(g, detect_branches(g))
    oracle = _reachability(list(s.stream), [list(w) for w in s.waits])
    n = len(g)
    assert all(s.happens_before(a, b) == (a in oracle[b]) for b in range(n) for a in range(n))


def test_hand_built_copy_equals_the_made_one_and_is_usable() -> None:
    g = build_graph("tiny", "gdn")
    made = stream_schedule(g, detect_branches(g))
    copy = Schedule(list(g.nodes), list(made.stream), [list(w) for w in made.waits], 5)  # type: ignore[arg-type]
    assert copy == made and hash(copy) == hash(made)
    assert copy.unordered_sets == made.unordered_sets
    assert copy.settled_at == made.settled_at
    assert isinstance(copy.stream, tuple) and isinstance(copy.waits[0], tuple)


def test_waits_are_sorted_and_numpy_integers_accepted() -> None:
    import numpy as np

    s = Schedule(("a", "b", "c"), np.array([0, 1, 0]), [[], [0], [1, 1]], np.int64(2))  # type: ignore[arg-type]
    assert s.waits == ((), (0,), (1,)) and s.stream == (0, 1, 0) and s.n_streams == 2
    assert type(s.stream[0]) is int and type(s.n_streams) is int
    unsorted = Schedule(("a", "b", "c", "d"), (0, 1, 2, 0), ((), (0,), (0,), (2, 1, 2)), 3)
    assert unsorted.waits[3] == (1, 2)


@pytest.mark.parametrize(
    ("nodes", "stream", "waits", "n_streams", "message"),
    [
        (("a", "b"), (0,), ((), ()), 1, r"2 nodes but 1 stream numbers and 2 wait lists"),
        (("a", "b"), (0, 0), ((),), 1, r"2 nodes but 2 stream numbers and 1 wait lists"),
        (("a", "b"), (0, -1), ((), ()), 1, r"node 1 \('b'\) is on stream -1"),
        (("a", "b"), (0, 2), ((), (0,)), 2, r"stream 2; stream numbers are integers in 0\.\.1"),
        (("a", "b"), (0, 1.0), ((), (0,)), 2, r"stream 1\.0"),
        (("a", "b"), (0, True), ((), (0,)), 2, r"stream True"),
        (("a", "b"), (0, 1), ((), (0,)), 8, r"n_streams=8 but the nodes use streams 0\.\.1; set"),
        (("a", "b"), (0, 0), ((), ()), 0, r"n_streams must be a positive integer, got 0"),
        (("a", "b"), (0, 1), ((1,), ()), 2, r"node 0 \('a'\) waits for node 1, which comes later"),
        (("a", "b"), (0, 1), ((), (1,)), 2, r"node 1 \('b'\) waits for itself"),
        (("a", "b"), (0, 0), ((), (0,)), 1, r"waits for node 0 \('a'\) on its own stream 0"),
        (("a", "b"), (0, 1), ((), (-1,)), 2, r"waits for -1, which is not a node index"),
        (("a", "b"), (0, 1), ((), ("a",)), 2, r"waits for 'a', which is not a node index"),
        (("a", "a"), (0, 0), ((), ()), 1, r"node names \['a'\] appear more than once"),
        (("a", 3), (0, 0), ((), ()), 1, r"node names \(strings\)"),
        (("a", "b"), 5, ((), ()), 1, r"Schedule needs nodes"),
    ],
)
def test_bad_hand_built_schedules_are_named(
    nodes: object, stream: object, waits: object, n_streams: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Schedule(nodes, stream, waits, n_streams)  # type: ignore[arg-type]


def test_schedule_from_streams_names_a_bad_stream() -> None:
    g = build_graph("tiny", "gdn")
    bad = [0] * len(g)
    bad[3] = -2
    with pytest.raises(ConfigError, match=rf"node {g.nodes[3]!r} has stream -2"):
        schedule_from_streams(g, bad)
    with pytest.raises(ConfigError, match="need one stream per node"):
        schedule_from_streams(g, [0])
    assert schedule_from_streams(g, [0] * len(g)) == serial_schedule(g)
