"""`lace branches`: the fork regions one detector finds in a graph, and the forks it rejects."""

from __future__ import annotations

import argparse

from concurrency.cli.common import add_format_arg, add_graph_args, graph_from_args, graph_id
from concurrency.cli.output import Result
from concurrency.cli.progress import Progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_graph_args(p)
    add_format_arg(p, ("text", "json"))


def run(args: argparse.Namespace, progress: Progress) -> Result:
    from concurrency.format import format_bytes
    from concurrency.graph.branches import detect_branches

    graph = graph_from_args(args, progress)
    progress.update(f"finding fork regions ({args.detector} detector)")
    report = detect_branches(graph, args.detector)
    activation_bytes = sum(graph[n].nbytes for n in graph.nodes if not graph[n].is_view)
    if args.format == "json":
        return Result.json(
            {
                "graph": graph_id(graph),
                "nodes": len(graph),
                "activation_bytes": activation_bytes,
                **report.to_dict(),
            }
        )
    lines = [
        f"{graph_id(graph)}: {len(graph)} nodes, {format_bytes(activation_bytes)} of activations",
        f"[{report.detector}] {len(report.regions)} region(s)",
    ]
    for r in report.regions:
        sizes = ", ".join(f"{b.nodes[0]}…({len(b.nodes)})→{b.join}" for b in r.branches)
        lines.append(f"  fork {r.fork}: {sizes}")
    for x in report.rejections:
        lines.append(f"  rejected {x.fork}: {x.reason}")
    return Result.lines(lines)
