"""pandas tables of graphs and branch regions, for notebooks and reports."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from concurrency.format import format_bytes
from concurrency.graph.branches import BranchReport, detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.ir import Graph
from concurrency.memory.check import Hazard


def branch_frame(graph: Graph, report: BranchReport) -> pd.DataFrame:
    """One row per branch: fork, branch number, first node, node count, join, and the bytes
    its nodes write (views excluded); rejections follow as rows without a branch."""
    rows: list[dict[str, object]] = []
    for region in report.regions:
        for k, branch in enumerate(region.branches, 1):
            rows.append(
                {
                    "detector": report.detector,
                    "fork": region.fork,
                    "branch": k,
                    "first node": branch.nodes[0],
                    "nodes": len(branch.nodes),
                    "join": branch.join,
                    "bytes written": sum(
                        graph[n].nbytes for n in branch.nodes if not graph[n].is_view
                    ),
                    "verdict": "accepted",
                }
            )
    for rej in report.rejections:
        rows.append(
            {
                "detector": report.detector,
                "fork": rej.fork,
                "branch": None,
                "first node": None,
                "nodes": None,
                "join": None,
                "bytes written": None,
                "verdict": f"rejected: {rej.reason}",
            }
        )
    return pd.DataFrame(rows)


def batch_sweep(
    model: str, layer: str, batches: Iterable[int], mode: str = "decode", tokens: int | None = None
) -> pd.DataFrame:
    """Per batch size: node count, activation bytes, and per-branch bytes of the first fork
    region found by the general detector (how the branches grow with B)."""
    rows: list[dict[str, object]] = []
    for b in batches:
        g = build_graph(model, layer, mode, b, tokens)
        rep = detect_branches(g, "general")
        row: dict[str, object] = {
            "batch": b,
            "nodes": len(g),
            "activation bytes": sum(
                g[n].nbytes for n in g.nodes if not g[n].is_view and not g[n].external
            ),
        }
        if rep.regions:
            for k, br in enumerate(rep.regions[0].branches, 1):
                row[f"branch {k} ({br.nodes[0]})"] = sum(
                    g[n].nbytes for n in br.nodes if not g[n].is_view
                )
        rows.append(row)
    return pd.DataFrame(rows)


HAZARD_COLUMNS = [
    "kind",
    "access",
    "first tensor",
    "first node",
    "stream",
    "second tensor",
    "second node",
    "stream ",
    "size",
    "bytes",
    "explanation",
]


def hazard_frame(hazards: Iterable[Hazard], tensor: str | None = None) -> pd.DataFrame:
    """One row per hazard (kind: race or use after reuse, the access pair of a race, both
    tensors, both nodes and their streams, how many bytes and which, the sentence); only those
    touching `tensor` when it is given. The host's side is named for what it does there
    (`Hazard.first_label`, `second_label`), on stream -1."""
    rows = [
        {
            "kind": h.kind,
            "access": h.access or "",
            "first tensor": h.first_tensor,
            "first node": h.first_label,
            "stream": h.first_stream,
            "second tensor": h.second_tensor,
            "second node": h.second_label,
            "stream ": h.second_stream,
            "size": format_bytes(h.end - h.start),
            "bytes": f"{h.start}–{h.end - 1}",
            "explanation": h.explanation,
        }
        for h in hazards
        if tensor is None or tensor in (h.first_tensor, h.second_tensor)
    ]
    return pd.DataFrame(rows, columns=HAZARD_COLUMNS)
