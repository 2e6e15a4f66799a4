"""Memory maps and policy comparisons as Altair charts (Vega-Lite specs tests can inspect).

`memory_map_chart`: x is the node position in plan order, y the byte offset in the arena;
one rectangle per planned tensor from its writer to its last access, coloured by the stream
that writes it; tensors in a hazard are outlined in red; a rule marks the arena's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from concurrency.format import format_bytes, format_shape
from concurrency.graph.ir import VIEW_OPS, Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.check import Hazard
from concurrency.memory.compare import PolicyResult
from concurrency.memory.plan import MemoryPlan

HAZARD_RED = "#d62728"
#: Stream colours without red (red marks hazards): input, then streams 0, 1, 2, …
STREAM_COLOURS = (
    "#9e9e9e",
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
)


def stream_scale(labels: Sequence[str]) -> alt.Scale:
    """A fixed colour per stream label ("input", "stream 0", …) shared by every chart."""
    domain = ["input", *(f"stream {k}" for k in range(len(STREAM_COLOURS) - 1))]
    used = [d for d in domain if d in set(labels)]
    return alt.Scale(domain=used, range=[STREAM_COLOURS[domain.index(d)] for d in used])


def memory_map_frame(
    graph: Graph, schedule: Schedule, plan: MemoryPlan, hazards: Sequence[Hazard] = ()
) -> pd.DataFrame:
    """One row per placed tensor: its rectangle in (plan position × bytes) and its labels."""
    position = {n: i for i, n in enumerate(plan.order)}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for n in plan.order:
        t = graph[n]
        if t.op in VIEW_OPS:
            continue
        for name in (n, *t.srcs):
            base = graph.base(name)
            owner = _owner(plan, base)
            if owner is None:
                continue
            i = position[n]
            first[base] = min(first.get(base, i), i)
            last[base] = max(last.get(base, i), i)
    in_hazard = {h.first_tensor for h in hazards} | {h.second_tensor for h in hazards}
    in_hazard = {graph.base(n) for n in in_hazard}
    rows = []
    for name, offset in plan.offsets.items():
        t = graph[name]
        if name not in first or t.nbytes == 0:
            continue
        writer = graph.index.get(name)
        rows.append(
            {
                "tensor": name,
                "op": t.label,
                "shape": format_shape(t.shape),
                "size": format_bytes(t.nbytes),
                "stream": f"stream {schedule.stream[writer]}" if writer is not None else "input",
                "x0": first[name] if not t.is_input else 0,
                "x1": last[name] + 1,
                "y0": offset,
                "y1": offset + t.nbytes,
                "in_hazard": name in in_hazard,
                "inplace_of": plan.inplace_of.get(name, ""),
            }
        )
    return pd.DataFrame(rows)


def _owner(plan: MemoryPlan, name: str) -> str | None:
    return name if name in plan.offsets else None


def memory_map_chart(
    graph: Graph,
    schedule: Schedule,
    plan: MemoryPlan,
    hazards: Sequence[Hazard] = (),
    *,
    width: int = 640,
    height: int = 320,
    title: str | None = None,
    highlight: alt.Parameter | None = None,
    extra_lanes: Sequence[str] = (),
) -> alt.LayerChart:
    """The arena over the plan: rectangles per tensor, red outlines for hazards.

    highlight: a point selection on "node" (e.g. made by the timeline chart): the rectangles
    of the selected nodes' tensors stay opaque, the others fade.
    extra_lanes: stream labels to keep in the colour scale (so colours match another chart).
    """
    frame = memory_map_frame(graph, schedule, plan, hazards)
    frame["node"] = frame["tensor"]
    title = title or (
        f"{graph.meta.model} {graph.meta.layer} B={graph.meta.batch} · {plan.policy}: "
        f"{format_bytes(plan.arena_bytes)}, {len(hazards)} hazard(s)"
    )
    base = alt.Chart(frame, title=title).encode(
        x=alt.X("x0:Q", title="node position (plan order)"),
        x2="x1:Q",
        y=alt.Y("y0:Q", title="arena offset (bytes)"),
        y2="y1:Q",
        tooltip=["tensor", "op", "shape", "size", "stream", "y0", "inplace_of"],
    )
    rects = base.mark_rect(opacity=0.75).encode(
        color=alt.Color(
            "stream:N",
            scale=stream_scale([*frame["stream"], *extra_lanes]),
            legend=alt.Legend(title="written on"),
        ),
        stroke=alt.condition("datum.in_hazard", alt.value(HAZARD_RED), alt.value("white")),
        strokeWidth=alt.condition("datum.in_hazard", alt.value(2), alt.value(0.5)),
    )
    if highlight is not None:
        rects = rects.encode(opacity=alt.condition(highlight, alt.value(0.85), alt.value(0.15)))
    arena = (
        alt.Chart(pd.DataFrame({"arena": [plan.arena_bytes]}))
        .mark_rule(strokeDash=[4, 3], color="#555")
        .encode(y="arena:Q")
    )
    return alt.layer(rects, arena).properties(width=width, height=height)


def policy_frame(results: Sequence[PolicyResult]) -> pd.DataFrame:
    """The `compare_policies` table as a DataFrame (bytes also in MiB)."""
    frame = pd.DataFrame([r.row() for r in results])
    frame["arena_MiB"] = frame["arena_bytes"] / 2**20
    frame["lower_bound_MiB"] = frame["lower_bound_bytes"] / 2**20
    return frame


def policy_sweep_chart(frame: pd.DataFrame, *, width: int = 520, height: int = 280) -> alt.Chart:
    """Arena / lower bound per policy against batch size (a frame from `policy_sweep`)."""
    data = frame.assign(ratio=frame["arena_bytes"] / frame["lower_bound_bytes"])
    return (
        alt.Chart(data, title="memory price of each policy (arena ÷ lower bound)")
        .mark_line(point=True)
        .encode(
            x=alt.X("batch:Q", scale=alt.Scale(type="log", base=2), title="batch (sequences)"),
            y=alt.Y("ratio:Q", title="arena ÷ lower bound", scale=alt.Scale(zero=False)),
            color="policy:N",
            strokeDash=alt.condition("datum.hazards > 0", alt.value([4, 3]), alt.value([1, 0])),
            tooltip=["policy", "batch", "arena_bytes", "lower_bound_bytes", "hazards"],
        )
        .properties(width=width, height=height)
    )
