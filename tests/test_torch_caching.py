"""PyTorch's caching allocator (memory/pytorch) and the torch_caching / torch_record_stream
policies built on it: hand-computed placements, per-stream pools, record_stream events, and
the hazard each policy does or does not have."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.builders.context import GraphContext
from concurrency.graph.ir import GraphMeta, TensorKind
from concurrency.graph.schedule import schedule_from_streams, serial_schedule, stream_schedule
from concurrency.memory.bound import lower_bound
from concurrency.memory.check import check_plan
from concurrency.memory.policies import plan_memory
from concurrency.memory.pytorch.caching_allocator import (
    Block,
    CachingAllocator,
    round_size,
    segment_bytes,
)
from tests.strategies import random_graphs, random_schedules

MiB = 1 << 20
TORCH = ("torch_caching", "torch_record_stream")


def _never(_: int) -> bool:
    return False


# ------------------------------------------------------------------------- the allocator
def test_sizes_round_to_512_and_segments_follow_the_pool() -> None:
    assert [round_size(n) for n in (1, 512, 513, 1000)] == [512, 512, 1024, 1024]
    assert segment_bytes(512) == segment_bytes(MiB) == 2 * MiB  # small pool: 2 MiB segments
    assert segment_bytes(MiB + 512) == segment_bytes(10 * MiB - 512) == 20 * MiB
    assert segment_bytes(10 * MiB) == 10 * MiB
    assert segment_bytes(10 * MiB + 512) == 12 * MiB  # rounded up to 2 MiB


def test_a_freed_block_is_reused_only_by_its_own_stream() -> None:
    cca = CachingAllocator()
    a = cca.malloc(1000, stream=0)
    assert (a.offset, a.size) == (0, 1024)  # a 2 MiB small segment, split
    cca.free(a, lambda s: 0)
    b = cca.malloc(1000, stream=1)  # stream 1 cannot take stream 0's cached bytes
    assert b.offset == 2 * MiB and cca.reserved_bytes == 4 * MiB
    c = cca.malloc(1000, stream=0)
    assert c.offset == 0 and cca.segments == 2


def test_best_fit_takes_the_smallest_block_then_the_lowest_address() -> None:
    cca = CachingAllocator()
    blocks = [cca.malloc(n, 0) for n in (1024, 512, 1024, 512, 2048, 512)]
    assert [b.offset for b in blocks] == [0, 1024, 1536, 2560, 3072, 5120]
    for k in (0, 2, 4):  # free holes of 1024, 1024 and 2048 bytes, never touching
        cca.free(blocks[k], lambda s: 0)
    assert cca.malloc(1000, 0).offset == 0  # two 1024 B holes: the lower one
    assert cca.malloc(1000, 0).offset == 1536
    assert cca.malloc(1500, 0).offset == 3072  # only the 2048 B hole fits: split it


def test_freed_neighbours_merge_within_a_segment() -> None:
    cca = CachingAllocator()
    a, b, c = (cca.malloc(MiB // 2, 0) for _ in range(3))
    cca.free(a, lambda s: 0)
    cca.free(c, lambda s: 0)  # merges with the segment's free tail
    cca.free(b, lambda s: 0)  # merges with both: the whole 2 MiB segment is one block again
    assert cca.pools[(True, 0)] and len(cca.pools[(True, 0)]) == 1
    whole = cca.malloc(MiB, 0)
    assert whole.offset == 0 and cca.segments == 1


def test_large_blocks_split_only_when_more_than_1_mib_remains() -> None:
    cca = CachingAllocator()
    big = cca.malloc(19 * MiB + MiB // 2, 0)  # ≥ 10 MiB: a 20 MiB segment of its own
    assert (big.offset, big.size) == (0, 20 * MiB)  # rest 0.5 MiB ≤ 1 MiB: not split
    mid = cca.malloc(2 * MiB, 0)  # < 10 MiB: a 20 MiB segment, 18 MiB left: split
    assert (mid.offset, mid.size) == (20 * MiB, 2 * MiB)
    small = cca.malloc(4096, 0)  # small requests never take large-pool bytes
    assert small.offset == 40 * MiB and cca.reserved_bytes == 42 * MiB


def test_record_stream_holds_the_block_until_its_events_complete() -> None:
    cca = CachingAllocator()
    a = cca.malloc(1024, 0)
    tail = cca.malloc(1024, 0)
    cca.record_stream(a, 0)  # its own stream: ignored
    cca.record_stream(a, 2)
    cca.free(a, lambda stream: 100 + stream)  # event 102, recorded on stream 2
    assert a.events == (102,)
    waiting = cca.malloc(1024, 0, _never)
    assert waiting.offset == 2048  # a's bytes are held back (and never merged meanwhile)
    cca.free(tail, lambda s: 0)
    assert cca.malloc(1024, 0, lambda e: e == 101).offset == 1024  # tail's bytes are free
    assert cca.malloc(1024, 0, lambda e: e == 102).offset == 0  # event done: a's bytes back


# ------------------------------------------------------------------------- random allocator runs
@settings(max_examples=150)
@given(data=st.data())
def test_the_allocator_never_hands_out_live_or_foreign_bytes(data: st.DataObject) -> None:
    """An oracle that knows only the contract: live and still-awaited blocks never overlap a
    new one, a new block lies inside a segment cudaMalloc'd for the requesting stream, and
    the segments tile the arena."""
    cca = CachingAllocator()
    sizes = st.one_of(st.integers(1, 4096), st.integers(MiB - 4096, 3 * MiB), st.just(12 * MiB))
    live: list[Block] = []
    waiting: list[tuple[Block, tuple[int, int], tuple[int, ...]]] = []
    segments: list[tuple[int, int, int]] = []  # (start, end, stream)
    done_upto = 0
    for clock in range(data.draw(st.integers(1, 40))):
        if live and data.draw(st.booleans()):
            block = live.pop(data.draw(st.integers(0, len(live) - 1)))
            for s in data.draw(st.sets(st.integers(0, 2), max_size=2)):
                cca.record_stream(block, s)
            span = (block.offset, block.offset + block.size)
            cca.free(block, lambda s, clock=clock: clock)
            if block.events:
                waiting.append((block, span, block.events))
            continue
        done_upto = max(done_upto, data.draw(st.integers(0, clock)))
        stream = data.draw(st.integers(0, 2))
        before = cca.reserved_bytes
        block = cca.malloc(data.draw(sizes), stream, lambda e, d=done_upto: e <= d)
        if cca.reserved_bytes > before:
            segments.append((before, cca.reserved_bytes, stream))
        start, end = block.offset, block.offset + block.size
        assert any(lo <= start and end <= hi and s == stream for lo, hi, s in segments)
        for other in live:
            assert end <= other.offset or other.offset + other.size <= start
        for _, (lo, hi), events in waiting:
            if not all(e <= done_upto for e in events):
                assert end <= lo or hi <= start
        live.append(block)
    assert sum(hi - lo for lo, hi, _ in segments) == cca.reserved_bytes


# ------------------------------------------------------------------------- a worked example
def _fork_example():  # type: ignore[no-untyped-def]
    """x (input) → a (stream 0) → b (stream 1); c = f(x) on stream 0; d = b + c (stream 0)."""
    ctx = GraphContext()
    x = ctx.leaf("x", "f32", (256,), TensorKind.INPUT)  # 1024 B each
    a = ctx.unary(x, "silu", base="a")
    b = ctx.unary(a, "silu", base="b")
    c = ctx.unary(x, "sigmoid", base="c")
    d = ctx.add(b, c, base="d")
    ctx.expand(d)
    ctx.set_output(d)
    g = ctx.finish(GraphMeta("fork", "gdn", "decode", 1, 1, 1), None)
    assert g.nodes == ("a", "b", "c", "d")
    return g, schedule_from_streams(g, [0, 1, 0, 0])


def test_worked_example_without_record_stream_races() -> None:
    """By hand: x takes the start of stream 0's first 2 MiB segment, a the next 1024 B; b is
    on stream 1, so a segment of its own at 2 MiB. b is a's last reference: a's block goes
    back to stream 0's pool, and c, the next stream-0 request, takes it while b may still be
    reading it. d takes the bytes after a."""
    g, sched = _fork_example()
    plan = plan_memory(g, sched, detect_branches(g), "torch_caching")
    assert dict(plan.offsets) == {"x": 0, "a": 1024, "b": 2 * MiB, "c": 1024, "d": 2048}
    assert plan.arena_bytes == 4 * MiB and plan.freed_after["a"] == "b"
    hazards = list(check_plan(plan, sched).hazards)
    assert {(h.first_tensor, h.second_tensor, h.first_node, h.second_node) for h in hazards} == {
        ("a", "c", "b", "c")
    }


def test_worked_example_with_record_stream_is_safe() -> None:
    """By hand: a is recorded on stream 1, so its free records an event after b; c is not
    ordered after b, so a's bytes stay held and c goes after a (2048). d waits for b, so at
    d's allocation the event has completed and d takes a's 1024 B back."""
    g, sched = _fork_example()
    plan = plan_memory(g, sched, detect_branches(g), "torch_record_stream")
    assert dict(plan.offsets) == {"x": 0, "a": 1024, "b": 2 * MiB, "c": 2048, "d": 1024}
    assert list(check_plan(plan, sched).hazards) == []
    serial = serial_schedule(g)  # one stream: nothing to record, a's bytes go to c
    assert plan_memory(g, serial, detect_branches(g), "torch_record_stream").offsets["c"] == 1024


# ------------------------------------------------------------------------- the Qwen3.5 layers
@pytest.mark.parametrize("batch", [1, 4, 8])
def test_27b_gdn_races_without_record_stream_on_one_side_stream(batch: int) -> None:
    """vLLM and SGLang overlap on one auxiliary stream: with every branch on stream 1, q_l2
    and k_l2 (made on stream 1, read by gdn on stream 0) go back to stream 1's pool when gdn
    is issued, and z, issued next on stream 1, takes their bytes while gdn may still read."""
    g = build_graph("qwen3.5-27b", "gdn", "decode", batch)
    rep = detect_branches(g)
    sched = stream_schedule(g, rep, max_streams=2)
    res = {p: list(check_plan(plan_memory(g, sched, rep, p), sched).hazards) for p in TORCH}
    assert {(h.first_tensor, h.second_tensor) for h in res["torch_caching"]} >= {
        ("q_l2-0", "z-0"),
        ("k_l2-0", "z-0"),
    }
    assert res["torch_record_stream"] == []


@pytest.mark.parametrize("batch", [1, 4, 8])
def test_27b_gdn_torch_arenas_cover_the_lower_bound(batch: int) -> None:
    g = build_graph("qwen3.5-27b", "gdn", "decode", batch)
    rep = detect_branches(g)
    for sched in (stream_schedule(g, rep), stream_schedule(g, rep, 2), serial_schedule(g)):
        bound = lower_bound(g, sched).bytes
        for p in TORCH:
            plan = plan_memory(g, sched, rep, p)
            assert bound <= plan.arena_bytes and plan.arena_bytes % (2 * MiB) == 0, p


def test_tiny_gdn_main_stream_reuse_races_on_four_side_streams() -> None:
    """The other direction: conv_states (stream 0) is last read by conv_input on stream 1;
    its block goes back to stream 0's pool and ssm_states, gathered next on stream 0, takes it.
    (In the 27B layer ssm_states is over 1 MiB and comes from the large pool instead.)"""
    g = build_graph("tiny", "gdn", "decode", 1)
    rep = detect_branches(g)
    sched = stream_schedule(g, rep)
    seq = list(check_plan(plan_memory(g, sched, rep, "torch_caching"), sched).hazards)
    assert {(h.first_tensor, h.second_tensor, h.first_node) for h in seq} == {
        ("conv_states_3d-0", "ssm_states-0", "conv_input-0")
    }
    assert list(check_plan(plan_memory(g, sched, rep, "torch_record_stream"), sched).hazards) == []


def test_one_stream_makes_both_torch_policies_the_same_and_race_free() -> None:
    g = build_graph("qwen3.5-9b", "stack", "decode", 2, layers=2)
    rep = detect_branches(g)
    sched = serial_schedule(g)
    plans = [plan_memory(g, sched, rep, p) for p in TORCH]
    assert plans[0].offsets == plans[1].offsets
    assert list(check_plan(plans[0], sched).hazards) == []


# ------------------------------------------------------------------------- random graphs
def _host_lifetimes(g) -> dict[str, tuple[int, int]]:  # type: ignore[no-untyped-def]
    """Independently of the policy: [issue of the writer, issue of the last node naming the
    tensor or a view of it]; inputs from before the first node, outputs and inputs to the end."""
    end = len(g.nodes)
    life: dict[str, list[int]] = {}
    for name in g.leafs:
        if g[name].is_input:
            life[name] = [-1, end]
    for i, name in enumerate(g.nodes):
        t = g[name]
        if t.view_src is None and not t.external:
            life.setdefault(name, [i, i])
        for ref in (name, *t.srcs):
            base = g[ref].view_src or ref
            if base in life:
                life[base][1] = max(life[base][1], i)
    for name, span in life.items():
        if g[name].is_output or g[name].is_input:
            span[1] = end
    return {n: (a, b) for n, (a, b) in life.items()}


@settings(max_examples=120)
@given(data=st.data())
def test_torch_plans_on_random_graphs(data: st.DataObject) -> None:
    """Bytes are shared only by tensors whose host lifetimes do not overlap and that were
    allocated on the same stream; with record_stream the plan is race-free under any
    schedule it was made for; with one stream both are."""
    g = data.draw(random_graphs())
    rep = detect_branches(g)
    sched = data.draw(random_schedules(g))
    life = _host_lifetimes(g)
    stream = {n: (0 if g[n].is_input else sched.stream[g.index[n]]) for n in life}
    for p in TORCH:
        plan = plan_memory(g, sched, rep, p, alignment=32)
        assert set(plan.offsets) == set(g.planned), p
        placed = [(n, plan.offsets[n], plan.offsets[n] + g[n].nbytes) for n in life if g[n].nbytes]
        for k, (x, x0, x1) in enumerate(placed):
            assert x1 <= plan.arena_bytes
            for y, y0, y1 in placed[k + 1 :]:
                if x0 < y1 and y0 < x1:
                    first, second = sorted((x, y), key=lambda n: life[n][0])
                    assert life[first][1] < life[second][0], (p, first, second)
                    assert stream[first] == stream[second], (p, first, second)
    plan = plan_memory(g, sched, rep, "torch_record_stream", alignment=32)
    assert list(check_plan(plan, sched).hazards) == []
    one = serial_schedule(g)
    for p in TORCH:
        assert list(check_plan(plan_memory(g, one, rep, p, alignment=32), one).hazards) == [], p
