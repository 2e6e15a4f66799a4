"""Whole layers and stacks on the GPU against the float64 NumPy reference: the tiny model and a
scaled-down Qwen3.5-27B (its head structure: 16/48 GDN heads, 24/4 attention heads), GDN,
attention and 4-layer stacks, decode B = 1, 2, 4 and prefill T = 8, 64, 65; every safe policy
on the multi-stream schedule, eager and graph-replayed; f16 and bf16 weights; MoE and
Qwen3-Next stacks; the engine flow's replayed offsets; B up to 64."""

from __future__ import annotations

import numpy as np
import pytest
from gpu_cases import layer_graph, planned, report, report_check

from concurrency.execute.gpu import (
    Ptr,
    build_launch_plan,
    check_gpu,
    reference_inputs,
    run_gpu,
    tolerance,
)
from concurrency.execute.gpu.launch import ARENA
from concurrency.execute.numpy_arena import reference_run
from concurrency.graph.branches import detect_branches
from concurrency.graph.schedule import serial_schedule, stream_schedule
from concurrency.memory.check import check_plan
from concurrency.memory.engine_flow import EngineFlow
from concurrency.memory.policies import STREAM_SAFE_POLICIES, plan_memory

pytestmark = pytest.mark.gpu

STEPS = [
    ("decode", 1, None),
    ("decode", 2, None),
    ("decode", 4, None),
    ("prefill", 1, 8),
    ("prefill", 1, 64),
    ("prefill", 1, 65),
]
CASES = [
    (model, layer, *step)
    for model in ("tiny", "27b-scaled")
    for layer in ("gdn", "attn", "stack")
    for step in STEPS
]


def _id(case) -> str:
    model, layer, mode, batch, tokens = case
    return f"{model}-{layer}-{mode}-B{batch}" + (f"-T{tokens}" if tokens else "")


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_layer_every_safe_policy_eager_and_graph(case, record_property) -> None:
    model, layer, mode, batch, tokens = case
    graph = layer_graph(model, layer, mode, batch, tokens)
    inputs = reference_inputs(graph, seed=1)
    ref = reference_run(graph, inputs)
    tol = tolerance(graph, "f32")
    failures, worst = [], (0.0, "")
    for policy in STREAM_SAFE_POLICIES:
        schedule, plan = planned(graph, policy)
        for launch in ("eager", "graph"):
            check = check_gpu(graph, schedule, plan, inputs=inputs, reference=ref, launch=launch)
            if check.error > worst[0]:
                worst = (check.error, f"{policy}/{launch}/{check.worst}")
            if not check.ok:
                failures.append(f"{policy}/{launch}: {check.worst} {check.error:.2e}")
    report(record_property, worst[0], tol, worst[1])
    assert not failures, f"above {tol}: {failures}"


TYPE_CASES = [c for c in CASES if c[3] in (1, 4) or c[2] == "prefill"]


@pytest.mark.parametrize("weight_dtype", ["f16", "bf16"])
@pytest.mark.parametrize(
    "case", [c for c in TYPE_CASES if c[1] == "stack" or c[0] == "27b-scaled"], ids=_id
)
def test_layer_half_precision_weights(case, weight_dtype: str, record_property) -> None:
    model, layer, mode, batch, tokens = case
    graph = layer_graph(model, layer, mode, batch, tokens)
    schedule, plan = planned(graph, "happens_before")
    check = check_gpu(graph, schedule, plan, weight_dtype=weight_dtype, launch="graph", seed=2)
    report_check(record_property, check)
    assert check.ok, check.summary()


EXTRA = [
    # model, layer, mode, batch, tokens, kv_tokens, policy, matmul, gdn
    ("moe-scaled", "stack", "decode", 2, None, 0, "happens_before", "auto", "auto"),
    ("moe-scaled", "stack", "prefill", 1, 8, 0, "alloc_dep", "auto", "auto"),
    ("next-scaled", "stack", "decode", 2, None, 0, "happens_before", "auto", "auto"),
    ("next-scaled", "stack", "prefill", 1, 8, 0, "no_alloc_free", "auto", "auto"),
    ("tiny", "gdn", "prefill", 1, 2, 0, "happens_before", "auto", "auto"),  # T < W
    ("tiny", "gdn", "prefill", 2, 8, 0, "happens_before", "auto", "auto"),
    ("tiny", "attn", "prefill", 2, 8, 0, "happens_before", "auto", "auto"),
    ("tiny", "stack", "prefill", 2, 8, 0, "alloc_dep", "auto", "auto"),
    ("tiny", "attn", "decode", 2, None, 100, "happens_before", "auto", "auto"),
    ("tiny", "stack", "decode", 16, None, 40, "happens_before", "auto", "auto"),
    ("tiny", "gdn", "decode", 64, None, 0, "happens_before", "auto", "auto"),
    ("tiny", "stack", "decode", 64, None, 0, "no_reuse", "auto", "auto"),
    ("27b-scaled", "stack", "decode", 4, None, 0, "happens_before", "nvmath", "auto"),
    ("27b-scaled", "stack", "prefill", 1, 65, 0, "happens_before", "custom", "auto"),
    ("27b-scaled", "gdn", "prefill", 1, 65, 0, "happens_before", "auto", "recurrent"),
    ("27b-scaled", "gdn", "decode", 2, None, 0, "happens_before", "auto", "chunked"),
]


@pytest.mark.parametrize("case", EXTRA, ids=lambda c: "{}-{}-{}-B{}-T{}-kv{}-{}-{}-{}".format(*c))
def test_more_models_modes_and_paths(case, record_property) -> None:
    model, layer, mode, batch, tokens, kv, policy, matmul, gdn = case
    graph = layer_graph(model, layer, mode, batch, tokens, kv_tokens=kv)
    schedule, plan = planned(graph, policy)
    worst = 0.0
    for launch in ("eager", "graph"):
        check = check_gpu(graph, schedule, plan, launch=launch, matmul=matmul, gdn=gdn, seed=3)
        worst = max(worst, check.error)
        assert check.ok, f"{launch}: {dict(check.errors)}"
    report(record_property, worst, tolerance(graph, "f32"))


#: (policy, schedule, replayed): the engine's rule for a decode step of the tiny model. The
#: replayed policies run the pp512 reserve plan's offsets (ggml-alloc's stored slots, by node
#: index) that the hazard checker finds safe under that schedule; happens_before's stored plan
#: is for the reserve graph's schedule, so the decode step is re-planned.
ENGINE_CASES = [
    ("alloc_dep", "multi", True),
    ("no_reuse", "multi", True),
    ("sequential", "serial", True),
    ("happens_before", "multi", False),
]


@pytest.mark.parametrize("policy,streams,replayed", ENGINE_CASES, ids=lambda c: str(c))
def test_engine_flow_offsets_on_the_gpu(policy, streams, replayed, record_property) -> None:
    """A whole-model decode graph (every layer of the tiny model, embeddings to logits) run in
    the arena the engine flow gives it: the launch plan addresses every planned tensor at the
    flow's offset, in a buffer of the flow's size, and the GPU matches the reference."""
    graph = layer_graph("tiny", "stack", "decode", 2)
    assert graph.config is not None and graph.meta.n_layers == graph.config.n_layer
    report_ = detect_branches(graph)
    schedule = stream_schedule(graph, report_) if streams == "multi" else serial_schedule(graph)
    flow = EngineFlow.for_graph(graph).plan(graph, schedule, report_, policy, 128)
    assert flow.replayed == replayed, flow.source
    assert check_plan(flow.plan, schedule).ok
    lp = build_launch_plan(graph, schedule, flow.plan)
    assert lp.buffers[ARENA].nbytes == flow.buffer_bytes == flow.plan.arena_bytes
    fresh = plan_memory(graph, schedule, report_, policy, 128)
    moved = 0
    for name in graph.planned:
        if name in lp.tensors:
            offset = flow.plan.address(graph, name)
            assert lp.tensors[name].ptr == Ptr(ARENA, offset), name
            moved += offset != fresh.address(graph, name)
    if replayed:  # the reserve plan's offsets, not the ones a fresh plan would give
        assert moved > 0
    check = check_gpu(graph, schedule, flow.plan, launch="graph", seed=4)
    report_check(record_property, check)
    assert check.ok, check.summary()


def test_graph_replays_are_identical(record_property) -> None:
    """Three replays of one captured graph from the same inputs give bit-identical results
    (no state leaks between replays; the schedule's events order every cross-stream read)."""
    graph = layer_graph("27b-scaled", "stack", "decode", 2)
    schedule, plan = planned(graph, "happens_before")
    inputs = reference_inputs(graph, seed=5)
    lp = build_launch_plan(graph, schedule, plan)
    from concurrency.execute.gpu.runner import DeviceRun

    run = DeviceRun(lp)
    run.upload(inputs)
    run.run_eager()
    exec_ = run.capture()
    results = []
    for _ in range(3):
        run.upload(inputs)
        run.replay(exec_)
        results.append(run.read())
    run.free()
    for other in results[1:]:
        for key, value in results[0].items():
            assert np.array_equal(value, other[key]), key
    eager = run_gpu(lp, inputs, "eager")
    diff = max(float(np.max(np.abs(eager[k] - results[0][k]))) for k in eager)
    report(record_property, diff, 0.0)
    assert diff == 0.0, "eager and replayed results differ"
