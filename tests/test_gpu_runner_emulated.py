"""The CuPy runner's own logic on the CPU: `DeviceRun` driven through a stand-in for CuPy
(tests/cuda_emu/fake_cupy.py) whose kernels are the emulated ones — binding and argument types,
the raised shared-memory limit, uploads and reads at the planned addresses, the per-stream enqueue
with every awaited event recorded first, stream capture and replay — for a GDN and an attention
layer on the multi-stream schedule, compared with the float64 reference. Skipped without g++."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
from cuda_emu import emulator, fake_cupy
from gpu_cases import layer_graph, planned

from concurrency.execute.gpu import build_launch_plan, check_gpu, reference_inputs
from concurrency.execute.gpu import kernels as kernel_files

pytestmark = pytest.mark.skipif(emulator.compiler() is None, reason="g++ is not installed here")


@pytest.fixture(autouse=True)
def fake_gpu(monkeypatch):
    fake_cupy.use_in_place_of_cupy(monkeypatch)
    yield
    kernel_files.module.cache_clear()


@pytest.mark.parametrize(
    "layer,mode,batch,tokens",
    [("gdn", "decode", 2, None), ("gdn", "prefill", 1, 65), ("attn", "prefill", 2, 8)],
)
@pytest.mark.parametrize("launch", ["eager", "graph"])
def test_device_run_matches_the_reference(layer, mode, batch, tokens, launch) -> None:
    graph = layer_graph("tiny", layer, mode, batch, tokens)
    schedule, plan = planned(graph, "happens_before")
    assert schedule.n_streams > 1
    check = check_gpu(graph, schedule, plan, launch=launch, matmul="custom", seed=21)
    assert check.ok, dict(check.errors)


def test_replays_restart_from_the_uploaded_inputs() -> None:
    from concurrency.execute.gpu.runner import DeviceRun

    graph = layer_graph("tiny", "gdn", "decode", 1)
    schedule, plan = planned(graph, "happens_before")
    run = DeviceRun(build_launch_plan(graph, schedule, plan, matmul="custom"))
    inputs = reference_inputs(graph, seed=22)
    run.upload(inputs)
    run.run_eager()
    first = run.read()
    exec_ = run.capture()
    run.upload(inputs)
    run.replay(exec_)
    again = run.read()
    for key in first:
        assert np.array_equal(first[key], again[key]), key
    run.replay(exec_)  # a second step from the updated caches changes the states
    assert not np.array_equal(run.read()["cache_s_l0"], again["cache_s_l0"])


@pytest.mark.parametrize("launch", ["eager", "graph"])
def test_measured_timeline_mapping(launch, monkeypatch) -> None:
    """measure.py's record-to-node mapping over fake CUPTI records of the emulated launches:
    every launching node gets one span on its schedule stream, named after its kernel."""
    from concurrency.execute.gpu import measure
    from concurrency.execute.gpu.runner import DeviceRun

    cupti_pkg = type(sys)("cupti")
    cupti_pkg.cupti = fake_cupy.CUPTI.module()
    monkeypatch.setitem(sys.modules, "cupti", cupti_pkg)
    monkeypatch.setitem(sys.modules, "cupti.cupti", cupti_pkg.cupti)
    monkeypatch.setattr(measure, "_HUB", measure._Hub())
    fake_cupy.CUPTI.callbacks = None
    graph = layer_graph("tiny", "gdn", "decode", 2)
    schedule, plan = planned(graph, "happens_before")
    lp = build_launch_plan(graph, schedule, plan, matmul="custom")
    run = DeviceRun(lp)
    run.upload(reference_inputs(graph, seed=23))
    timeline = measure.measure_timeline(run, launch)
    launched = [n for n in lp.nodes if n.launches]
    assert [s.node for s in sorted(timeline.spans, key=lambda s: s.start_us)] == [
        n.node for n in launched
    ]
    for node in launched:
        span = timeline.span(node.node)
        assert span.stream == node.stream and span.kernel == node.launches[0].kernel
    assert timeline.meta.launch == launch and timeline.meta.device == "emulated"
    from concurrency.execute.gpu.bench import kernel_table

    rows = kernel_table(lp, timeline)
    assert sorted(r.node for r in rows) == sorted(s.node for s in timeline.spans)
    assert all(a.duration_us >= b.duration_us for a, b in itertools.pairwise(rows))
    assert all(r.bytes_moved > 0 and r.gb_per_s > 0 for r in rows)


def test_every_replay_sets_the_graph_inputs_again() -> None:
    """A plan may give an input's arena bytes to a later tensor (here the attention layer's
    mask and indices under `sequential`), as ggml frees inputs like any tensor; the engine sets
    its inputs before every step, and so does `replay`: a second step from the same states
    gives the first step's results. Without setting them it reads what that tensor left."""
    from concurrency.execute.gpu.runner import DeviceRun
    from concurrency.graph.ir import TensorKind

    graph = layer_graph("tiny", "attn", "decode", 2, kv_tokens=40)
    schedule, plan = planned(graph, "sequential")
    run = DeviceRun(build_launch_plan(graph, schedule, plan, matmul="custom"))
    inputs = reference_inputs(graph, seed=23)
    run.upload(inputs)
    run.run_eager()
    exec_ = run.capture()
    states = {n: v for n, v in inputs.items() if graph[n].kind is TensorKind.STATE}

    def step(set_inputs: bool) -> dict[str, np.ndarray]:
        for name, value in states.items():  # the same caches each time
            run.upload_leaf(name, value)
        run.replay(exec_, set_inputs=set_inputs)
        return run.read()

    first = step(True)
    overwritten = [n for n in run.input_names if not np.array_equal(run.read([n])[n], inputs[n])]
    assert overwritten, "no input's bytes were reused: the case does not test anything"
    again = step(True)
    for key in first:
        assert np.array_equal(first[key], again[key]), key
    stale = step(False)
    assert any(not np.array_equal(first[k], stale[k]) for k in first), "stale inputs went unseen"
