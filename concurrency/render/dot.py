"""The branch structure of a layer graph as a graphviz.Digraph.

Branches are clusters, one colour each; the fork is a doubled octagon, joins are doubled
boxes; labels carry op, shape and bytes. Dashed edges are orderings on caches (a KV-cache
write before the attention that reads it), not data edges.
"""

from __future__ import annotations

import graphviz

from concurrency.errors import LaceError, MissingToolError
from concurrency.format import format_bytes, format_shape
from concurrency.graph.branches import BranchReport, detect_branches, is_noop
from concurrency.graph.ir import Graph

#: One colour per branch (ColorBrewer Set2, readable on white and in print).
BRANCH_COLOURS = (
    "#66c2a5",
    "#fc8d62",
    "#8da0cb",
    "#e78ac3",
    "#a6d854",
    "#ffd92f",
    "#e5c494",
    "#b3b3b3",
)
FORK_COLOUR = "#1b9e77"
JOIN_COLOUR = "#d95f02"


def graph_dot(
    graph: Graph,
    report: BranchReport | None = None,
    *,
    hide_views: bool = True,
    detector: str = "general",
    focus: str | None = None,
) -> graphviz.Digraph:
    """Draw `graph` with the regions of `report` (default: run `detector`).

    hide_views: leave out pure view nodes (reshape, view, permute, transpose), connecting
    their producers to their consumers directly.
    focus: the name of a fork: draw only its region (fork to last join).
    """
    report = report if report is not None else detect_branches(graph, detector)
    regions = list(report.regions)
    names = list(graph.nodes)
    if focus is not None:
        region = report.region_at(focus)
        if region is None:
            forks = ", ".join(r.fork for r in regions) or "none"
            raise LaceError(f"no region forks at {focus!r}; forks found: {forks}")
        lo, hi = graph.index[region.fork], graph.index[region.end]
        names = names[lo : hi + 1]
        regions = [region]
    shown = [n for n in names if not (hide_views and is_noop(graph, n))]
    shown_set = set(shown)
    dot = graphviz.Digraph(
        name=f"{graph.meta.model}_{graph.meta.layer}",
        graph_attr={
            "rankdir": "TB",
            "fontname": "Helvetica",
            "fontsize": "11",
            "label": _title(graph, report),
            "labelloc": "t",
        },
        node_attr={
            "shape": "box",
            "style": "rounded,filled",
            "fillcolor": "white",
            "fontname": "Helvetica",
            "fontsize": "10",
        },
        edge_attr={"color": "#555555", "arrowsize": "0.6"},
    )
    branch_of: dict[str, tuple[int, int]] = {}
    for r_i, region in enumerate(regions):
        for b_i, branch in enumerate(region.branches):
            for n in branch.nodes:
                branch_of[n] = (r_i, b_i)
    forks = {r.fork for r in regions}
    joins = {j for r in regions for j in r.joins}

    for r_i, region in enumerate(regions):
        for b_i, branch in enumerate(region.branches):
            colour = BRANCH_COLOURS[b_i % len(BRANCH_COLOURS)]
            with dot.subgraph(name=f"cluster_r{r_i}_b{b_i}") as sub:
                sub.attr(
                    label=f"branch {b_i + 1} of {region.fork}",
                    color=colour,
                    style="rounded",
                    fontsize="10",
                )
                for n in branch.nodes:
                    if n in shown_set:
                        sub.node(_id(n), _label(graph, n), fillcolor=colour)
    for n in shown:
        if n in branch_of:
            continue
        attrs: dict[str, str] = {}
        if n in forks:
            attrs = {"shape": "doubleoctagon", "fillcolor": FORK_COLOUR, "fontcolor": "white"}
        elif n in joins:
            attrs = {"peripheries": "2", "fillcolor": JOIN_COLOUR, "fontcolor": "white"}
        dot.node(
            _id(n),
            _label(graph, n, role="fork" if n in forks else ("join" if n in joins else None)),
            **attrs,
        )

    deps = graph.dependencies
    for n in shown:
        i = graph.index[n]
        data = {graph.index[s] for s in graph[n].srcs if s in graph.index}
        for j in sorted(_visible_deps(graph, deps, i, shown_set)):
            style = "solid" if j in data or _through_views(graph, deps, i, j) else "dashed"
            dot.edge(_id(graph.nodes[j]), _id(n), style=style)
    return dot


def _visible_deps(
    graph: Graph, deps: tuple[tuple[int, ...], ...], i: int, shown: set[str]
) -> set[int]:
    """Dependencies of node i, looking through nodes that are not drawn."""
    out: set[int] = set()
    stack = list(deps[i])
    seen: set[int] = set()
    while stack:
        j = stack.pop()
        if j in seen:
            continue
        seen.add(j)
        if graph.nodes[j] in shown:
            out.add(j)
        else:
            stack.extend(deps[j])
    return out


def _through_views(graph: Graph, deps: tuple[tuple[int, ...], ...], i: int, j: int) -> bool:
    """True when j reaches i through data edges of hidden views only."""
    stack = [graph.index[s] for s in graph[graph.nodes[i]].srcs if s in graph.index]
    while stack:
        k = stack.pop()
        if k == j:
            return True
        if is_noop(graph, graph.nodes[k]):
            stack.extend(graph.index[s] for s in graph[graph.nodes[k]].srcs if s in graph.index)
    return False


def _id(name: str) -> str:
    """Node id: the tensor name (graphviz quotes it as needed)."""
    return name


def _label(graph: Graph, name: str, role: str | None = None) -> str:
    t = graph[name]
    head = f"{name}" + (f"  [{role}]" if role else "")
    return f"{head}\n{t.label} {format_shape(t.shape)}\n{format_bytes(t.nbytes)}"


def _title(graph: Graph, report: BranchReport) -> str:
    m = graph.meta
    shape = f"B={m.batch}" + (f", T={m.tokens}" if m.mode == "prefill" else "")
    found = f"{len(report.regions)} fork region(s)"
    return f"{m.model} · {m.layer} · {m.mode} {shape} · {report.detector} detector: {found}"


def render_svg(dot: graphviz.Digraph) -> str:
    """SVG text of a drawing; names the fix when Graphviz's `dot` program is missing."""
    try:
        return dot.pipe(format="svg").decode()
    except graphviz.ExecutableNotFound:
        raise MissingToolError(
            "Graphviz's `dot` program is not installed; install it with "
            "`apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) or "
            "`conda install -c conda-forge graphviz`"
        ) from None
