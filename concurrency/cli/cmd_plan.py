"""`lace plan`: every policy's memory plan for one graph, with both kinds of hazard counted.

A row per policy: the arena of the plan the figures come from and that graph's lower bound,
the compute buffer the flow ends with, races (wrong in some runs) and uses after reuse (wrong
in every run) as separate columns, the hazards by site, and the planning time.
"""

from __future__ import annotations

import argparse

from concurrency.cli.common import (
    add_format_arg,
    add_graph_args,
    add_policy_arg,
    add_schedule_args,
    compare_from_args,
    flow_json,
    flow_line,
    graph_id,
)
from concurrency.cli.output import Result
from concurrency.cli.progress import Progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_graph_args(p)
    add_schedule_args(p)
    add_policy_arg(p, "all")
    add_format_arg(p)


def run(args: argparse.Namespace, progress: Progress) -> Result:
    from concurrency.format import format_bytes
    from concurrency.memory.sites import format_sites

    c = compare_from_args(args, progress)
    graph, schedule, engine, results = c.graph, c.schedule, c.engine, c.results
    if args.format == "json":
        doc = {"graph": graph_id(graph), "streams": schedule.n_streams, **flow_json(args, engine)}
        return Result.json({**doc, "policies": [r.row() for r in results]})
    lines = [f"{graph_id(graph)}, {schedule.n_streams} stream(s); {flow_line(args, engine)}"]
    if engine is not None:
        lines.append(
            "arena and bound: of the graph each plan was made for ('plan of'); hazards: of the "
            "live graph with the offsets it runs with"
        )
    w = max(len(r.policy) for r in results)
    lines.append(
        f"{'policy':{w}} {'plan of':14} {'arena':>10} {'bound':>10} {'bound/arena':>11} "
        f"{'buffer':>10} {'races':>6} {'uses after reuse':>16}  {'by site':18} "
        f"{'ms':>7}"
    )
    for r in results:
        lines.append(
            f"{r.policy:{w}} {r.planned_graph:14} {format_bytes(r.arena_bytes):>10} "
            f"{format_bytes(r.lower_bound_bytes):>10} {r.efficiency:>11.3f} "
            f"{format_bytes(r.buffer_bytes):>10} {len(r.races):>6} "
            f"{len(r.uses_after_reuse):>16}  {format_sites(r.sites):18} {r.planning_ms:>7.1f}"
        )
    lines.append(
        "races: two streams may touch the same bytes unordered (wrong in some runs); uses "
        "after reuse: bytes overwritten before their last read (wrong in every run)"
    )
    if engine is not None:
        lines.append("where each plan comes from:")
        lines += [f"  {r.policy}: {r.source}" for r in results]
    return Result.lines(lines)
