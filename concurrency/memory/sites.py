"""Where a hazard happens: a GDN layer, an attention layer, a dense FFN fork, a MoE FFN fork,
elsewhere (embedding, LM head, graphs without a model config), or at the graph's inputs and
outputs ("host").

A node's *part* follows from its layer and position: in layer L, nodes up to the token mixer's
residual add (`attn_residual-L`) belong to the mixer — a GDN layer when the config says layer L
is recurrent, an attention layer otherwise — and later nodes to the FFN — MoE when the model
has experts, dense otherwise. A fork region takes the part of its fork node, and every node
inside the region (after the fork, up to its last join) takes the region's site. Two nodes race
only when one runs on a side stream, that is inside a region, so a hazard's site is the site of
the region holding one of its nodes (the first one, in plan order, that lies in a region).

A hazard with the host on one side (`Hazard.with_host`: the host's writes of the graph inputs
before the first node, or its reads of the outputs after the last) is at site "host", labelled
"graph input/output", whatever its node side: no fork region lets it happen, the plan gave
away bytes the host still needed (a view output's base freed by ggml's rule, say) or put an
input onto bytes still to be read. The checker never reports a race with the host, so these
are uses after reuse, wrong in every run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from concurrency.graph.branches import BranchReport
from concurrency.graph.ir import Graph
from concurrency.memory.check import Hazard

SITES = ("gdn", "attn", "ffn", "moe", "other", "host")
SITE_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "gdn": "GDN layer",
        "attn": "attention layer",
        "ffn": "FFN fork",
        "moe": "MoE FFN fork",
        "other": "other",
        "host": "graph input/output",
    }
)


def node_parts(graph: Graph) -> tuple[str, ...]:
    """The part (a site name) of every node, by its layer and position alone."""
    cfg = graph.config
    mixer_end: dict[int, int] = {}
    for i, name in enumerate(graph.nodes):
        layer = graph[name].layer
        if layer is not None and name == f"attn_residual-{layer}":
            mixer_end[layer] = i
    out = []
    for i, name in enumerate(graph.nodes):
        layer = graph[name].layer
        if layer is None or cfg is None:
            out.append("other")
        elif i <= mixer_end.get(layer, len(graph.nodes)):
            out.append("gdn" if cfg.is_recurrent(layer) else "attn")
        else:
            out.append("moe" if cfg.is_moe else "ffn")
    return tuple(out)


class SiteMap:
    """Site of every node of one graph under one branch report (built once, then O(1))."""

    def __init__(self, graph: Graph, report: BranchReport) -> None:
        self.graph = graph
        parts = node_parts(graph)
        self.parts = parts
        region_site: list[str | None] = [None] * len(graph.nodes)
        for region in report.regions:
            lo, hi = graph.index[region.fork], graph.index[region.end]
            for i in range(lo + 1, hi + 1):
                region_site[i] = parts[lo]
        self.region_site = tuple(region_site)

    def node_site(self, name: str) -> str:
        """The region's site for a node inside a fork region, else the node's own part."""
        i = self.graph.index[name]
        return self.region_site[i] or self.parts[i]

    def hazard_site(self, hazard: Hazard) -> str:
        """The site of the region that lets the hazard's two nodes overlap; "host" when one
        side is the host."""
        if hazard.with_host:
            return "host"
        index = self.graph.index
        for name in (hazard.first_node, hazard.second_node):
            site = self.region_site[index[name]]
            if site is not None:
                return site
        return self.parts[index[hazard.first_node]]

    def count(self, hazards: Iterable[Hazard]) -> dict[str, int]:
        """Hazards per site, every site listed (zeros included), in SITES order."""
        out = dict.fromkeys(SITES, 0)
        for h in hazards:
            out[self.hazard_site(h)] += 1
        return out


def hazard_sites(graph: Graph, report: BranchReport, hazards: Iterable[Hazard]) -> dict[str, int]:
    """Hazards per site (`SiteMap.count` for one use)."""
    return SiteMap(graph, report).count(hazards)


def format_sites(counts: Mapping[str, int]) -> str:
    """'gdn 4, moe 2' (non-zero sites only; '-' when none)."""
    text = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    return text or "-"
