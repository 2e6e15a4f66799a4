"""The work of a sweep: cases in, flat result rows out (pure: no Dask, no files).

The unit of work is a group of cases that share one graph context (`group_by_context`: the
same model, layer kind, depth, mode, batch, tokens, streams, flow, detector, n_ctx, n_ubatch
and alignment). `run_group` builds that context once — the graph, its fork regions, its stream
schedule and, in the engine flow, the engine's reserve graphs and their plans — then plans
each policy asked of it once (`compare_policies`: the lower bound is computed once too) and
simulates each GPU spec once (the simulation does not depend on the policy), and crosses the
two into one row per case. Planning a 9B model's stack costs ~35 ms a policy and simulating it
~100 ms a GPU, against ~100 ms for the context, so a case-at-a-time worker would redo most of
the work; a group is also large enough that sending it to a worker costs little.

A failure never escapes: the cases it touches become rows with `status="error"` and the error
(`TypeError: …`), the others finish. A context that cannot be built fails every case of the
group; a policy that fails, only its rows; a simulation that fails, only its GPU's rows.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from concurrency.errors import LaceError
from concurrency.sweep.cases import SIMULATION_FIELDS, SweepCase

if TYPE_CHECKING:
    from concurrency.graph.branches import BranchReport
    from concurrency.graph.ir import Graph
    from concurrency.graph.schedule import Schedule
    from concurrency.memory.compare import PolicyResult
    from concurrency.memory.engine_flow import EngineFlow

OK = "ok"
ERROR = "error"
#: The manifest's `source` for every sweep row: the timings come from the simulator.
SOURCE = "simulated"


@dataclass(frozen=True)
class _Context:
    """What every case of a group shares."""

    graph: Graph
    report: BranchReport
    schedule: Schedule
    engine: EngineFlow | None
    context_ms: float


def run_case(case: SweepCase, command: str = "") -> dict[str, object]:
    """One case's result row (see `run_group`)."""
    return run_group([case], command)[0]


def run_group(cases: Sequence[SweepCase], command: str = "") -> list[dict[str, object]]:
    """One flat row per case, in the order given: the case's fields, the manifest's fields
    that apply (device = the GPU spec, source "simulated", streams, date, command, LACE
    version), the memory figures of its policy's plan and the simulated timings on its GPU.

    The cases must share one context (`group_by_context`); `command` is recorded in every row
    (the command line or call that ran the sweep)."""
    cases = tuple(cases)
    if not cases:
        return []
    if len({c.context_id for c in cases}) != 1:
        raise LaceError("run_group takes cases of one context; split them with group_by_context")
    base = {
        "source": SOURCE,
        "date": datetime.date.today().isoformat(),
        "command": command,
        "lace_version": _version(),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }
    try:
        ctx = _context(cases[0])
    except Exception as exc:  # a case that cannot be built is recorded, never lost
        return [_row(c, base, error=exc) for c in cases]
    graph_cols = {
        "graph": _graph_label(ctx.graph),
        "nodes": len(ctx.graph.nodes),
        "fork_regions": len(ctx.report.regions),
        "streams": ctx.schedule.n_streams,
        "context_ms": ctx.context_ms,
    }
    plans = _plans(ctx, cases)
    sims = _simulations(ctx, cases)
    rows = []
    for case in cases:
        plan = plans[case.policy]
        sim = sims[_sim_key(case)]
        error = next((x for x in (plan, sim) if isinstance(x, BaseException)), None)
        row = _row(case, base | graph_cols, error=error)
        if not isinstance(plan, BaseException):
            row |= plan
        if not isinstance(sim, BaseException):
            row |= sim
        rows.append(row)
    return rows


def warm_up() -> None:
    """Import everything a case needs and run the smallest case once, so that a worker's
    first real group does not pay for the imports (a sweep calls this while starting, on
    every worker; the benchmark's start-up time includes it, its sweep time does not)."""
    case = SweepCase("tiny", policy="happens_before", gpu="h100")
    ctx = _context(case)
    _plans(ctx, [case])
    _simulations(ctx, [case])


def _context(case: SweepCase) -> _Context:
    from concurrency.graph.branches import detect_branches
    from concurrency.graph.builders import build_graph
    from concurrency.graph.schedule import stream_schedule
    from concurrency.memory.engine_flow import EngineFlow

    start = time.perf_counter()
    graph = build_graph(
        case.config,  # type: ignore[arg-type]
        case.layer,
        case.mode,
        case.batch,
        case.tokens,
        case.layers if case.layer == "stack" else None,
        n_ctx=case.n_ctx,
    )
    report = detect_branches(graph, case.detector)
    schedule = stream_schedule(graph, report, case.max_streams)
    engine = None
    if case.flow == "engine":
        engine = EngineFlow.for_graph(
            graph, detector=case.detector, max_streams=case.max_streams, n_ubatch=case.n_ubatch
        )
    return _Context(graph, report, schedule, engine, (time.perf_counter() - start) * 1e3)


def _plans(ctx: _Context, cases: Sequence[SweepCase]) -> dict[str, dict[str, object] | Exception]:
    """Each policy asked of the group, planned and checked once: its row columns, or the
    error it raised. All policies go through one `compare_policies` call (one lower bound);
    when that fails, each policy is tried alone so that only the failing one is lost."""
    from concurrency.memory.compare import compare_policies

    names = list(dict.fromkeys(c.policy for c in cases))
    case = cases[0]

    def plan(policies: list[str]) -> list[PolicyResult]:
        return compare_policies(
            ctx.graph,
            ctx.schedule,
            ctx.report,
            policies,
            case.alignment,
            flow=case.flow,
            engine=ctx.engine,
        )

    out: dict[str, dict[str, object] | Exception] = {}
    try:
        out = {r.policy: _plan_columns(r) for r in plan(names)}
    except Exception:
        for name in names:
            try:
                out[name] = _plan_columns(plan([name])[0])
            except Exception as exc:
                out[name] = exc
    return out


def _plan_columns(r: PolicyResult) -> dict[str, object]:
    return {
        "plan_source": r.source,
        "planned_graph": r.planned_graph,
        "arena_bytes": r.arena_bytes,
        "lower_bound_bytes": r.lower_bound_bytes,
        "efficiency": r.efficiency,
        "buffer_bytes": r.buffer_bytes if r.buffer_bytes >= 0 else r.arena_bytes,
        "hazards": len(r.hazards),
        "races": len(r.races),
        "uses_after_reuse": len(r.uses_after_reuse),
        "hazards_by_site": json.dumps(dict(r.sites), sort_keys=True),
        "planning_ms": r.planning_ms,
    }


def _sim_key(case: SweepCase) -> tuple[object, ...]:
    return tuple(getattr(case, name) for name in SIMULATION_FIELDS)


def _simulations(
    ctx: _Context, cases: Sequence[SweepCase]
) -> dict[tuple[object, ...], dict[str, object] | Exception]:
    """Each (GPU, launch mode, weight bytes) asked of the group, simulated once on the
    group's schedule and on one stream: its row columns, or the error it raised."""
    from concurrency.timing.metrics import concurrency_us
    from concurrency.timing.stream_study import compare_streams

    out: dict[tuple[object, ...], dict[str, object] | Exception] = {}
    for case in cases:
        key = _sim_key(case)
        if key in out:
            continue
        try:
            start = time.perf_counter()
            cmp = compare_streams(
                ctx.graph,
                case.gpu,
                launch=case.launch,
                weight_bytes_per_param=case.weight_bytes_per_param,
                schedule=ctx.schedule,
            )
            row = cmp.row()
            out[key] = {
                "serial_us": row["serial_us"],
                "parallel_us": row["parallel_us"],
                "critical_path_us": row["critical_path_us"],
                "work_bound_us": row["work_bound_us"],
                "speedup": row["speedup"],
                "overlap_ratio": row["overlap_ratio"],
                "concurrency_us": concurrency_us(cmp.parallel),
                "closeness": row["closeness"],
                "simulation_ms": (time.perf_counter() - start) * 1e3,
            }
        except Exception as exc:
            out[key] = exc
    return out


def _row(
    case: SweepCase, base: dict[str, object], error: BaseException | None
) -> dict[str, object]:
    """The case's fields, its status and error, and the manifest's columns."""
    return {
        "id": case.id,
        "status": OK if error is None else ERROR,
        "error": "" if error is None else error_text(error),
        **case.fields(),
        "device": case.gpu,
        **base,
    }


def error_text(error: BaseException) -> str:
    """'ConfigError: tiny has 4 layers; got layers=9': an error on one line."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _graph_label(graph: Graph) -> str:
    from concurrency.memory.compare import graph_label

    return graph_label(graph)


def _version() -> str:
    from concurrency import __version__

    return __version__


__all__ = ["ERROR", "OK", "SOURCE", "error_text", "run_case", "run_group", "warm_up"]
