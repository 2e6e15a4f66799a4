"""Benchmarks (pytest-benchmark): run once as smoke tests in the normal suite; measured with
`make bench`, which prints the timing table."""

from __future__ import annotations

import pytest

from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph


@pytest.mark.benchmark(group="build")
def test_bench_build_27b_stack(benchmark) -> None:  # type: ignore[no-untyped-def]
    g = benchmark(build_graph, "qwen3.5-27b", "stack", "decode", 1)
    assert g.meta.n_layers == 64 and len(g) > 3000


@pytest.mark.benchmark(group="build")
def test_bench_detect_27b_stack(benchmark) -> None:  # type: ignore[no-untyped-def]
    g = build_graph("qwen3.5-27b", "stack", "decode", 1)
    rep = benchmark(detect_branches, g, "general")
    assert len(rep.regions) == 128  # one mixer fork and one FFN fork per layer


@pytest.mark.benchmark(group="build")
def test_bench_stream_schedule_27b_stack(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Streams, waits, the checks a Schedule makes when built and its happens-before
    bitsets, for the 3 751-node Qwen3.5-27B decode stack."""
    from concurrency.graph.schedule import stream_schedule

    g = build_graph("qwen3.5-27b", "stack", "decode", 1)
    report = detect_branches(g)
    assert g.dependencies  # computed once per graph, before the measured calls
    s = benchmark(stream_schedule, g, report)
    assert s.n_streams == 5 and len(s.nodes) == len(g)


def _plan_and_check_all(graph, schedule, report):  # type: ignore[no-untyped-def]
    from concurrency.memory.check import check_plan
    from concurrency.memory.policies import POLICIES, plan_memory

    return {
        name: len(check_plan(plan_memory(graph, schedule, report, name)).hazards)
        for name in POLICIES
    }


@pytest.mark.benchmark(group="plan")
def test_bench_every_policy_and_hazards_27b_stack(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Issue 3's budget: every policy plus its hazard check on the 64-layer Qwen3.5-27B
    decode stack (250 ms on one core for the first six)."""
    from concurrency.graph.schedule import stream_schedule

    g = build_graph("qwen3.5-27b", "stack", "decode", 1)
    rep = detect_branches(g)
    sched = stream_schedule(g, rep)
    counts = benchmark(_plan_and_check_all, g, sched, rep)
    assert counts["happens_before"] == counts["alloc_dep"] == counts["torch_record_stream"] == 0
    assert counts["sequential"] > 0


@pytest.mark.benchmark(group="plan")
@pytest.mark.parametrize("policy", ["happens_before", "torch_caching", "torch_record_stream"])
def test_bench_plan_27b_stack(benchmark, policy: str) -> None:  # type: ignore[no-untyped-def]
    """Planning alone on the 64-layer Qwen3.5-27B decode stack (happens_before: ~25 ms)."""
    from concurrency.graph.schedule import stream_schedule
    from concurrency.memory.policies import plan_memory

    g = build_graph("qwen3.5-27b", "stack", "decode", 1)
    rep = detect_branches(g)
    sched = stream_schedule(g, rep)
    assert len(sched.settled_at) == len(g.nodes)  # computed once per schedule, not per plan
    plan = benchmark(plan_memory, g, sched, rep, policy)
    assert set(plan.offsets) == set(g.planned)


def _engine_flow_all(graph, schedule, report):  # type: ignore[no-untyped-def]
    """The engine's flow for every policy: the context (reserve graphs, their branches and
    schedules) built once, each policy's reserve plans, replay or re-plan, and its check."""
    from concurrency.memory.check import check_plan
    from concurrency.memory.engine_flow import EngineFlow
    from concurrency.memory.policies import POLICIES

    flow = EngineFlow.for_graph(graph, detector=report.detector)
    out = {}
    for name in POLICIES:
        placed = flow.plan(graph, schedule, report, name, 128)
        out[name] = (placed.source, len(check_plan(placed.plan, schedule).hazards))
    return out


@pytest.mark.benchmark(group="plan")
def test_bench_engine_flow_all_policies_27b_stack(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Issue 12's budget: every policy planned in the engine's flow (context included) plus
    its hazard check on the 64-layer Qwen3.5-27B decode stack, well under 1 s on one core."""
    from concurrency.graph.schedule import stream_schedule
    from concurrency.memory.policies import STREAM_SAFE_POLICIES

    g = build_graph("qwen3.5-27b", "stack", "decode", 1, n_ctx=512)
    rep = detect_branches(g)
    sched = stream_schedule(g, rep)
    result = benchmark(_engine_flow_all, g, sched, rep)
    assert result["sequential"] == ("replays the pp512 reserve plan", 768)
    assert all(result[name][1] == 0 for name in STREAM_SAFE_POLICIES)


@pytest.mark.benchmark(group="simulate")
def test_bench_simulate_27b_stack(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Issue 5's budget: simulating the 64-layer Qwen3.5-27B decode stack on the
    multi-stream schedule takes well under a second."""
    import time

    from concurrency.graph.schedule import stream_schedule
    from concurrency.timing.metrics import makespan_us
    from concurrency.timing.simulate import simulate

    g = build_graph("qwen3.5-27b", "stack", "decode", 1)
    sched = stream_schedule(g, detect_branches(g))
    timeline = benchmark(simulate, g, sched, "h100")
    assert len(timeline) > 2000 and makespan_us(timeline) > 0
    began = time.perf_counter()
    simulate(g, sched, "h100")
    assert time.perf_counter() - began < 1.0


@pytest.mark.benchmark(group="check")
def test_bench_check_sequential_plan_27b_stack(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Issue 12's budget: one plan checked for both kinds of hazard on the 64-layer stack in
    at most 25 ms; `sequential` is the worst case (the most races to name)."""
    from concurrency.graph.schedule import stream_schedule
    from concurrency.memory.check import check_plan
    from concurrency.memory.policies import plan_memory

    g = build_graph("qwen3.5-27b", "stack", "decode", 1)
    rep = detect_branches(g)
    plan = plan_memory(g, stream_schedule(g, rep), rep, "sequential")
    checked = benchmark(check_plan, plan)
    assert len(checked.races) > 2000 and checked.uses_after_reuse == ()


def _lace(*argv: str) -> str:
    """`python -m concurrency ARGV` in a fresh interpreter loading this checkout: the whole
    start-up a user waits for (interpreter, imports, parser, command)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "concurrency", *argv],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    return done.stdout


@pytest.mark.benchmark(group="cli")
@pytest.mark.parametrize("argv", [["models"], ["--help"]], ids=["models", "help"])
def test_bench_cli_start_up(benchmark, argv: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Issue 12's budget: `lace models` and `lace --help` answer in under 0.5 s (they took
    ~1.6 s importing the notebook tooling); compare with `python -c pass` on the same machine."""
    out = benchmark(_lace, *argv)
    assert "qwen3.5-27b" in out if argv == ["models"] else "usage: lace" in out


@pytest.mark.benchmark(group="cli")
def test_bench_python_start_up(benchmark) -> None:  # type: ignore[no-untyped-def]
    """The floor under the CLI figures: a bare interpreter start on the same machine."""
    import subprocess
    import sys

    benchmark(subprocess.run, [sys.executable, "-c", "pass"], check=True)


@pytest.mark.benchmark(group="sweep")
def test_bench_sweep_group_9b_stack(benchmark) -> None:  # type: ignore[no-untyped-def]
    """`lace sweep`'s unit of work: one graph context (the 32-layer Qwen3.5-9B decode stack,
    engine flow), every policy planned and checked, two GPUs simulated."""
    from concurrency.memory.policies import POLICIES
    from concurrency.sweep import expand_grid, run_group

    cases = expand_grid(
        ["qwen3.5-9b"], layer_kinds=["stack"], policies=["all"], gpus=["h100", "h200"]
    )
    rows = benchmark(run_group, cases)
    assert len(rows) == 2 * len(POLICIES) and all(r["status"] == "ok" for r in rows)


#: The grid both sweep benchmarks run: 64 cases in 8 graph contexts.
SWEEP_GRID = {"layer_kinds": ["gdn", "stack"], "batches": [1, 4], "gpus": ["h100"]}


@pytest.mark.parametrize("backend", ["process", "dask"])
@pytest.mark.benchmark(group="sweep-grid")
def test_bench_sweep_one_process_vs_local_cluster(benchmark, backend, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The same grid in one process and on a local Dask cluster of 2 worker processes (started
    once, outside the timing): extra_info's cases_per_s is the throughput each way. A fresh
    results file each round, so nothing is skipped. `lace sweep --bench` prints the same
    comparison for any grid."""
    import itertools

    from concurrency.sweep import expand_grid, run_sweep

    if backend == "dask":
        pytest.importorskip("distributed")
    cases = expand_grid(["tiny", "qwen3.5-9b"], **SWEEP_GRID)
    paths = (tmp_path / f"{i}.parquet" for i in itertools.count())
    with _sweep_client(backend) as client:
        kwargs = {"backend": "process"} if client is None else {"client": client}

        def fresh():  # type: ignore[no-untyped-def]
            return (cases, next(paths)), kwargs

        summary = benchmark.pedantic(run_sweep, setup=fresh, rounds=3)
    assert summary.ran == summary.ok == len(cases) == 64
    benchmark.extra_info["cases"] = len(cases)
    benchmark.extra_info["workers"] = summary.workers
    if benchmark.stats is not None:
        benchmark.extra_info["cases_per_s"] = len(cases) / benchmark.stats.stats.mean


def _sweep_client(backend: str):  # type: ignore[no-untyped-def]
    """A context giving None (one process) or a Client of 2 local worker processes."""
    import contextlib

    if backend == "process":
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def cluster():  # type: ignore[no-untyped-def]
        import logging

        import dask
        import distributed

        from concurrency.sweep.backends import LOCAL_WORKER_CONFIG
        from concurrency.sweep.work import warm_up

        with (
            dask.config.set(LOCAL_WORKER_CONFIG),  # as `lace sweep` starts its workers
            distributed.LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            ) as local,
            distributed.Client(local) as client,
        ):
            client.run(warm_up)  # imports on the workers, outside the timing
            yield client

    return cluster()
