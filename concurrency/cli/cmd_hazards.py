"""`lace hazards`: each hazard of one policy's plan (or of every policy's, `--policy all`),
with its kind (race or use after reuse), its site and a sentence saying what goes wrong."""

from __future__ import annotations

import argparse
import dataclasses

from concurrency.cli.common import (
    add_format_arg,
    add_graph_args,
    add_policy_arg,
    add_schedule_args,
    compare_from_args,
    flow_json,
    flow_line,
    graph_id,
    positive_int,
)
from concurrency.cli.output import Result
from concurrency.cli.progress import Progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_graph_args(p)
    add_schedule_args(p)
    add_policy_arg(p, "sequential")
    p.add_argument(
        "--limit", type=positive_int, default=20, help="hazards printed per policy (table)"
    )
    add_format_arg(p)


def run(args: argparse.Namespace, progress: Progress) -> Result:
    from concurrency.memory.sites import SiteMap, format_sites

    c = compare_from_args(args, progress)
    graph, report, schedule, engine, results = c.graph, c.report, c.schedule, c.engine, c.results
    sites = SiteMap(graph, report)
    if args.format == "json":
        doc = {
            "graph": graph_id(graph),
            "streams": schedule.n_streams,
            **flow_json(args, engine),
            "policies": [
                {
                    "policy": r.policy,
                    "planned_graph": r.planned_graph,
                    "plan_source": r.source,
                    "races": len(r.races),
                    "uses_after_reuse": len(r.uses_after_reuse),
                    "hazards_by_site": dict(r.sites),
                    "hazards": [
                        {**dataclasses.asdict(h), "site": sites.hazard_site(h)} for h in r.hazards
                    ],
                }
                for r in results
            ],
        }
        return Result.json(doc)
    lines = [
        f"{graph_id(graph)}, {schedule.n_streams} stream(s); {flow_line(args, engine)}",
        "race: two streams may touch the same bytes unordered (wrong in some runs); use after "
        "reuse: bytes overwritten before their last read (wrong in every run)",
    ]
    for r in results:
        lines.append(
            f"policy {r.policy}: {len(r.hazards)} hazard(s): {len(r.races)} race(s), "
            f"{len(r.uses_after_reuse)} use(s) after reuse; by site: {format_sites(r.sites)}"
        )
        lines.append(f"  offsets: {r.source}")
        lines += [
            f"  [{h.kind}, {sites.hazard_site(h)}] {h.explanation}" for h in r.hazards[: args.limit]
        ]
        if len(r.hazards) > args.limit:
            lines.append(f"  … {len(r.hazards) - args.limit} more (raise --limit)")
    return Result.lines(lines)
