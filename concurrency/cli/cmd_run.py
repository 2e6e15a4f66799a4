"""`lace run`: execute policies' plans on the CPU (NumPy, float32 inside the planned arena)
under orders the schedule allows, and compare each run with a float64 reference."""

from __future__ import annotations

import argparse

from concurrency.cli.common import (
    add_format_arg,
    add_graph_args,
    add_policy_arg,
    add_schedule_args,
    engine_from_args,
    flow_json,
    flow_line,
    graph_id,
    non_negative_float,
    non_negative_int,
    policy_names,
    positive_int,
    schedule_from_args,
)
from concurrency.cli.output import Result
from concurrency.cli.progress import Progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_graph_args(p)
    add_schedule_args(p)
    p.add_argument(
        "--backend",
        choices=("numpy",),
        default="numpy",
        help="numpy: CPU, float32 inside the planned arena",
    )
    add_policy_arg(p, "sequential")
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the inputs and of the first execution order",
    )
    p.add_argument("--seeds", type=positive_int, default=1, help="execution orders to try")
    p.add_argument(
        "--tolerance",
        type=non_negative_float,
        default=1e-4,
        help="max relative error allowed (≥ 0; default 1e-4)",
    )
    add_format_arg(p)


def run(args: argparse.Namespace, progress: Progress) -> Result:
    from concurrency.execute.numpy_arena import compare_runs
    from concurrency.memory.policies import plan_memory

    graph, report, schedule = schedule_from_args(args, progress)
    engine = engine_from_args(args, graph, progress)
    seeds = range(args.seed, args.seed + args.seeds)
    names = policy_names(args.policy)
    rows: list[dict[str, object]] = []
    runs = f"running {len(names)} plan(s) × {args.seeds} order(s)"
    for name in progress.steps(runs, names):
        if engine is not None:
            placed = engine.plan(graph, schedule, report, name, args.alignment)
            plan, source = placed.plan, placed.source
        else:
            plan = plan_memory(graph, schedule, report, name, args.alignment)
            source = "planned on this graph"
        for r in compare_runs(graph, schedule, plan, seeds, input_seed=args.seed):
            rows.append(
                {
                    "policy": name,
                    "plan_source": source,
                    "seed": r.seed,
                    "max_rel_error": r.error,
                    "matches": r.ok(args.tolerance),
                }
            )
    if args.format == "json":
        return Result.json(
            {
                "graph": graph_id(graph),
                "streams": schedule.n_streams,
                **flow_json(args, engine),
                "tolerance": args.tolerance,
                "runs": rows,
            }
        )
    lines = [
        f"{graph_id(graph)}, {schedule.n_streams} stream(s), numpy backend, "
        f"float32 arena vs float64 reference (tolerance {args.tolerance:g})",
        flow_line(args, engine),
    ]
    if engine is not None:
        for name, source in dict.fromkeys((r["policy"], r["plan_source"]) for r in rows):
            lines.append(f"  {name}: {source}")
    w = max(len(str(r["policy"])) for r in rows)
    lines.append(f"{'policy':{w}} {'seed':>5} {'max rel error':>14}  verdict")
    for r in rows:
        verdict = "matches" if r["matches"] else "WRONG (race or use after reuse)"
        lines.append(f"{r['policy']:{w}} {r['seed']:>5} {r['max_rel_error']:>14.3e}  {verdict}")
    return Result.lines(lines)
