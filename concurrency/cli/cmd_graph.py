"""`lace graph`: one graph as JSON (nodes and every detector's fork regions), DOT or SVG."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from concurrency.cli.common import add_format_arg, add_graph_args, graph_from_args
from concurrency.cli.output import Result
from concurrency.cli.progress import Progress

if TYPE_CHECKING:
    from concurrency.graph.ir import Graph


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_graph_args(p)
    add_format_arg(p, ("json", "dot", "svg"))
    p.add_argument("--show-views", action="store_true", help="draw view/reshape nodes too")


def run(args: argparse.Namespace, progress: Progress) -> Result:
    graph = graph_from_args(args, progress)
    if args.format == "json":
        from concurrency.graph.branches import DETECTORS

        progress.update("finding fork regions")
        return Result.json(graph_to_json(graph, DETECTORS))
    from concurrency.render.dot import graph_dot, render_svg

    progress.update("drawing the graph" + (" with Graphviz" if args.format == "svg" else ""))
    dot = graph_dot(graph, detector=args.detector, hide_views=not args.show_views)
    return Result(text=dot.source if args.format == "dot" else render_svg(dot))


def graph_to_json(graph: Graph, detectors: Sequence[str]) -> dict[str, object]:
    """The `lace graph --format json` document: nodes in order and branches per detector."""
    from concurrency.graph.branches import detect_branches

    return {
        "model": graph.meta.model,
        "layer": graph.meta.layer,
        "mode": graph.meta.mode,
        "batch": graph.meta.batch,
        "tokens": graph.meta.tokens,
        "layers": graph.meta.n_layers,
        "nodes": [
            {
                "index": i,
                "name": t.name,
                "ggml_name": t.ggml_name,
                "op": t.op,
                "params": [p if isinstance(p, (int, float, str)) else str(p) for p in t.params],
                "inputs": list(t.srcs),
                "output": {
                    "shape": list(t.shape),
                    "dtype": t.dtype,
                    "bytes": t.nbytes,
                    "kind": t.kind.value,
                    "view_of": t.view_src,
                },
            }
            for i, t in enumerate(graph.node_tensors())
        ],
        "branches": {d: detect_branches(graph, d).to_dict() for d in detectors},
    }
