"""The plan checker on real Qwen3.5 layers: the seed's hazards, named in one sentence, next to
ggml-cuda's own check. (Checker against its independent oracle: tests/test_check_oracle.py.)"""

from __future__ import annotations

import pytest
from hypothesis import given
from oracle_check import hazard_key as _key
from strategies import no_reuse_plan, random_graphs

from concurrency.errors import LaceError
from concurrency.graph.branches import ForkRegion, detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import (
    Schedule,
    schedule_from_streams,
    serial_schedule,
    stream_schedule,
)
from concurrency.memory.check import RACE, RAW, USE_AFTER_REUSE, WAR, WAW, check_plan
from concurrency.memory.ggml.cuda_is_valid import is_valid_ggml
from concurrency.memory.plan import MemoryPlan


# ---------------------------------------------------------------------------- plans without reuse
@given(random_graphs())
def test_serial_no_reuse_has_no_hazards(graph: Graph) -> None:
    assert check_plan(no_reuse_plan(graph)).hazards == ()


@pytest.mark.parametrize("layer", ["gdn", "attn"])
def test_real_layers_without_reuse_are_hazard_free_on_streams(layer: str) -> None:
    g = build_graph("qwen3.5-27b", layer, "decode", 1)
    plan = no_reuse_plan(g)
    assert check_plan(plan).ok
    streams = check_plan(plan, stream_schedule(g, detect_branches(g)))
    assert streams.ok and streams.note is not None and "re-checked" in streams.note


def test_the_64_layer_stack_without_reuse_is_hazard_free() -> None:
    g = build_graph("qwen3.5-27b", "stack", "decode", 1)
    assert len(g) > 3000
    assert check_plan(no_reuse_plan(g), stream_schedule(g, detect_branches(g))).hazards == ()


def test_a_schedule_for_another_graph_is_refused() -> None:
    g = build_graph("qwen3.5-27b", "gdn")
    other = build_graph("qwen3.5-27b", "attn")
    with pytest.raises(LaceError, match="different graph"):
        check_plan(no_reuse_plan(g), serial_schedule(other))


def test_a_plan_missing_a_planned_tensor_is_refused() -> None:
    g = build_graph("tiny", "gdn")
    plan = no_reuse_plan(g)
    offsets = dict(plan.offsets)
    del offsets["z-0"]
    partial = MemoryPlan(
        "partial", 32, offsets, plan.sizes, plan.arena_bytes, plan.order, graph=g,
        schedule=plan.schedule,
    )  # fmt: skip
    with pytest.raises(LaceError, match=r"no offset to 1 planned tensor.*'z-0'"):
        check_plan(partial)


# ---------------------------------------------------------------------------- seed hazard (b)
def _moved(plan: MemoryPlan, onto: str, name: str, order: tuple[str, ...]) -> MemoryPlan:
    """`plan` with `onto` placed at `name`'s offset, planned in `order`."""
    offsets = dict(plan.offsets)
    offsets[onto] = offsets[name]
    return MemoryPlan(
        "racy",
        plan.alignment,
        offsets,
        plan.sizes,
        plan.arena_bytes,
        order,
        graph=plan.graph,
        schedule=plan.schedule,
    )


def test_gdn_branch_overwrites_the_fork_output() -> None:
    """seed-anatomy §1.7: `conv_output_raw` reuses `attn_norm`'s bytes, which would be legal
    on one stream in an order that ran the projections first. On streams it races with them;
    on one stream in graph order (conv before the projections) it overwrites attn_norm before
    they read it in every run: a use after reuse, not "no hazard"."""
    g = build_graph("qwen3.5-27b", "gdn", "decode", 1)
    projections = ("alpha_proj-0", "beta_proj-0", "z-0")
    rest = [n for n in g.nodes if n not in projections]
    k = rest.index("attn_norm-0") + 1
    order = (*rest[:k], *projections, *rest[k:])
    # attn_norm (20 KiB) moves into conv_output_raw's 40 KiB slot; every other tensor stays
    plan = _moved(no_reuse_plan(g, order), "attn_norm-0", "conv_output_raw-0", order)
    span = plan.byte_range(g, "attn_norm-0")
    start, end = span
    schedule = stream_schedule(g, detect_branches(g))
    hazards = check_plan(plan, schedule).hazards
    assert {_key(h) for h in hazards} == {
        (RACE, WAR, reader, "conv_output_raw-0", "attn_norm-0", "conv_output_raw-0", s, 1, *span)
        for reader, s in (("alpha_proj-0", 2), ("beta_proj-0", 3), ("z-0", 4))
    }
    z = next(h for h in hazards if h.first_node == "z-0")
    assert z.explanation == (
        f"`conv_output_raw-0` (stream 1) overwrites bytes {start}–{end - 1} of `attn_norm-0` "
        "while `z-0` on stream 4 may still read it"
    )
    serial = check_plan(plan, serial_schedule(g))
    tensors = ("conv_output_raw-0", "attn_norm-0")
    assert serial.races == ()
    assert {_key(h) for h in serial.uses_after_reuse} == {
        (USE_AFTER_REUSE, None, "conv_output_raw-0", reader, *tensors, 0, 0, *span)
        for reader in ("alpha_proj-0", "beta_proj-0", "z-0")
    }
    z = next(h for h in serial.hazards if h.second_node == "z-0")
    assert z.explanation == (
        f"`conv_output_raw-0` (stream 0) overwrites bytes {start}–{end - 1} of `attn_norm-0`, "
        "which `z-0` (stream 0) reads later: use after reuse in every run"
    )


# ---------------------------------------------------------------------------- ggml's check
@pytest.fixture(scope="module")
def attn() -> tuple[Graph, Schedule, MemoryPlan, ForkRegion]:
    """The attention layer, branches on streams 1–3 as ggml-cuda detects them, no reuse."""
    g = build_graph("qwen3.5-27b", "attn", "decode", 1)
    report = detect_branches(g, "ggml")
    (region,) = report.regions
    schedule = stream_schedule(g, report)
    return g, schedule, no_reuse_plan(g, schedule=schedule), region


Attn = tuple[Graph, Schedule, MemoryPlan, ForkRegion]


def _pairs(rng: tuple[int, int] | None, *pairs: tuple[str, str, str, str, str, int, int]) -> set:
    """Expected race keys, all over the same byte range."""
    assert rng is not None
    return {(RACE, *p, *rng) for p in pairs}


def test_ggml_accepts_the_no_reuse_plan(attn: Attn) -> None:
    g, schedule, plan, region = attn
    ok, why = is_valid_ggml(g, schedule, plan, region)
    assert ok and why.startswith("accepted")
    assert check_plan(plan).hazards == ()


def test_ggml_misses_a_branch_overwriting_the_fork_output(attn: Attn) -> None:
    g, schedule, plan, region = attn
    racy = _moved(plan, "Kcur_normed_rms-0", "attn_norm-0", g.nodes)
    ok, _ = is_valid_ggml(g, schedule, racy, region)
    assert ok  # ggml-cuda never looks at the fork output
    assert {_key(h) for h in check_plan(racy).hazards} == _pairs(
        racy.byte_range(g, "Kcur_normed_rms-0"),
        (WAR, "Qcur_full-0", "Kcur_normed_rms-0", "attn_norm-0", "Kcur_normed_rms-0", 1, 3),
        (WAR, "Vcur_proj-0", "Kcur_normed_rms-0", "attn_norm-0", "Kcur_normed_rms-0", 2, 3),
    )


def test_ggml_rejects_two_branch_outputs_in_the_same_bytes(attn: Attn) -> None:
    g, schedule, plan, region = attn
    racy = _moved(plan, "Kcur_proj-0", "Vcur_proj-0", g.nodes)
    ok, why = is_valid_ggml(g, schedule, racy, region)
    assert not ok
    # ggml counts a view as writing its whole base: Kcur_heads-0 stands for Kcur_proj-0
    assert why.startswith(
        "writes overlap: `Vcur_proj-0` (stream 2) and `Kcur_heads-0` (stream 3, in `Kcur_proj-0`)"
    )
    assert {_key(h) for h in check_plan(racy).hazards} == _pairs(
        racy.byte_range(g, "Vcur_proj-0"),
        (WAW, "Vcur_proj-0", "Kcur_proj-0", "Vcur_proj-0", "Kcur_proj-0", 2, 3),
        (RAW, "Vcur_proj-0", "Kcur_normed_rms-0", "Vcur_proj-0", "Kcur_heads-0", 2, 3),
        (RAW, "Kcur_proj-0", "v_cache_write-0", "Kcur_proj-0", "Vcur_rows-0", 3, 2),
    )
    start, end = racy.byte_range(g, "Vcur_proj-0")
    said = {h.access: h.explanation for h in check_plan(racy).hazards}
    assert said[WAW] == (
        f"`Vcur_proj-0` (stream 2) and `Kcur_proj-0` (stream 3) both write bytes "
        f"{start}–{end - 1} (`Vcur_proj-0`, `Kcur_proj-0`) with nothing ordering them"
    )
    assert said[RAW] == (
        f"`v_cache_write-0` (stream 2) reads bytes {start}–{end - 1} as `Vcur_rows-0` while "
        "`Kcur_proj-0` on stream 3, planned earlier, may still be writing `Kcur_proj-0` there"
    )


def test_ggml_skips_writes_into_the_join_buffer(attn: Attn) -> None:
    g, schedule, plan, region = attn
    racy = _moved(plan, "Kcur_proj-0", "fattn-0", g.nodes)
    racy = _moved(racy, "Vcur_proj-0", "fattn-0", g.nodes)
    ok, _ = is_valid_ggml(g, schedule, racy, region)
    assert ok  # both overlap the join's buffer, so ggml-cuda does not compare them
    first = check_plan(racy).hazards[0]
    assert _key(first)[:4] == (RACE, WAW, "Vcur_proj-0", "Kcur_proj-0")


def test_ggml_rejects_a_branch_reading_another_stream(attn: Attn) -> None:
    g, schedule, plan, region = attn
    streams = list(schedule.stream)
    streams[g.index["Qcur_normed-0"]] = 2  # its source Qcur_normed_rms-0 stays on stream 1
    ok, why = is_valid_ggml(g, schedule_from_streams(g, streams), plan, region)
    assert not ok
    assert why.startswith("`Qcur_normed-0` (stream 2) reads `Qcur_normed_rms-0` from stream 1")
