"""Timelines as Altair charts, drawn the way Nsight Systems and Perfetto draw them: a lane per
stream, a bar per kernel, an arrow per event wait; a live-bytes track; speedup sweeps.

Colours follow `memory_map.STREAM_COLOURS`, so "stream 1" is the same colour in the memory map
and here. With a graph (and a plan) the bars carry the tensor each kernel writes, so the
shared `pick`/`hover` selections of `memory_map.selection_params()` link both ways: a kernel
selects its tensor, a tensor outlines every kernel that writes or reads it.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from concurrency.format import format_bytes
from concurrency.graph.ir import VIEW_OPS, Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.plan import MemoryPlan
from concurrency.render import vl
from concurrency.render.memory_map import BYTES_LABEL, SELECT_INK, Placement, stream_scale
from concurrency.render.vega import DataChart
from concurrency.timing.timeline import Timeline

WAIT_INK = "#444444"
CURSOR_INK = "#d62728"


def timeline_frame(timeline: Timeline) -> pd.DataFrame:
    """The timeline's table with a "lane" label per stream ("stream 0", …)."""
    frame = timeline.to_frame()
    frame["lane"] = [f"stream {k}" for k in frame["stream"]]
    return frame


def _lanes(timeline: Timeline) -> list[str]:
    return [f"stream {k}" for k in sorted({s.stream for s in timeline.spans})]


def kernel_rows(
    timeline: Timeline, graph: Graph | None = None, plan: MemoryPlan | None = None
) -> list[dict[str, object]]:
    """One row per kernel; `tensor` is the planned tensor it writes (the key the memory map
    selects by), or its node for a kernel that writes outside the arena."""
    rows = []
    for s in timeline.spans:
        tensor, writes = s.node, ""
        if graph is not None and s.node in graph:
            base = graph.base(s.node)
            if plan is None or base in plan.offsets:
                tensor = base
            if base != s.node and graph[base].external:
                writes = f"{base} (outside the arena)"
        rows.append(
            {
                "node": s.node,
                "kernel": s.kernel,
                "lane": f"stream {s.stream}",
                "start_us": s.start_us,
                "end_us": s.end_us,
                "duration_us": s.end_us - s.start_us,
                "tensor": tensor,
                "writes": writes or tensor,
                "source": s.source,
            }
        )
    return rows


def touch_rows(
    timeline: Timeline, graph: Graph, plan: MemoryPlan | None = None
) -> list[dict[str, object]]:
    """One row per (kernel, planned tensor it writes or reads): what selecting a tensor
    outlines in the timeline."""
    spans = timeline.by_node
    rows = []
    for n in graph.nodes:
        span = spans.get(n)
        t = graph[n]
        if span is None or t.op in VIEW_OPS:
            continue
        seen = set()
        for name, role in ((n, "writes"), *((s, "reads") for s in t.srcs)):
            base = graph.base(name)
            if (plan is not None and base not in plan.offsets) or base in seen:
                continue
            seen.add(base)
            rows.append(
                {
                    "tensor": base,
                    "node": n,
                    "role": role,
                    "lane": f"stream {span.stream}",
                    "start_us": span.start_us,
                    "end_us": span.end_us,
                }
            )
    return rows


def wait_rows(timeline: Timeline, schedule: Schedule) -> list[dict[str, object]]:
    """One arrow per event wait: from the end of the awaited kernel (its stream's lane) to the
    start of the kernel that waits (its lane). Waits on nodes without a kernel are dropped."""
    spans = timeline.by_node
    rows = []
    for i, awaited in enumerate(schedule.waits):
        to = spans.get(schedule.nodes[i])
        if to is None:
            continue
        for j in awaited:
            frm = spans.get(schedule.nodes[j])
            if frm is None:
                continue
            rows.append(
                {
                    "from": frm.node,
                    "to": to.node,
                    "x": frm.end_us,
                    "x2": max(to.start_us, frm.end_us),
                    "lane": f"stream {frm.stream}",
                    "lane2": f"stream {to.stream}",
                }
            )
    return rows


def live_rows(rects: Sequence[Placement]) -> list[dict[str, object]]:
    """Live bytes over time from the memory map's rectangles (x in µs): a step at every start
    and end, with the count of live tensors."""
    events: dict[float, list[int]] = {}
    for p in rects:
        events.setdefault(p.x0, [0, 0])
        events.setdefault(p.x1, [0, 0])
        events[p.x0][0] += p.nbytes
        events[p.x0][1] += 1
        events[p.x1][0] -= p.nbytes
        events[p.x1][1] -= 1
    rows, live, count = [], 0, 0
    for t in sorted(events):
        live += events[t][0]
        count += events[t][1]
        rows.append({"t": t, "live_bytes": live, "live_tensors": count, "live": format_bytes(live)})
    return rows


def timeline_chart(
    timeline: Timeline,
    *,
    graph: Graph | None = None,
    schedule: Schedule | None = None,
    plan: MemoryPlan | None = None,
    width: int = 720,
    height_per_lane: int = 26,
    title: str | None = None,
    cursor: str | None = None,
    lanes: Sequence[str] | None = None,
    key: str = "",
) -> DataChart:
    """A lane per stream, a bar per kernel (tooltips: node, kernel, times, what it writes);
    with `schedule`, an arrow per event wait; with `graph`, outlines on the kernels that touch
    the selected tensor; with `cursor` (the live track's parameter name), a rule at its time.
    Defines the `pick`/`hover` tensor selections and the `zoom{key}` x zoom, like the memory map.
    """
    lanes = list(lanes) if lanes is not None else _lanes(timeline)
    m = timeline.meta
    title = title or (
        f"{m.model} {m.layer} {m.mode} B={m.batch} on {m.device}: {m.streams} stream(s), {m.source}"
    )
    x = vl.q("start_us", title="time (µs)", scale={"zero": False, "nice": False})
    y = vl.n("lane", sort=lanes, title=None, scale={"domain": lanes})
    bar_h = max(4, height_per_lane - 8)
    view = f"{key}kernels"
    layers: list[dict[str, object]] = [
        {
            "name": view,
            "data": {"name": key + "kernels"},
            "mark": {"type": "bar", "height": bar_h},
            "encoding": {
                "x": x,
                "x2": {"field": "end_us"},
                "y": y,
                "color": vl.n("lane", scale=stream_scale(lanes), legend=None),
                "opacity": vl.when(vl.chosen("pick", empty=True), 1.0, 0.3),
                "tooltip": [
                    *vl.tips("node", "kernel", "lane", "writes"),
                    vl.q("start_us", format=".2f"),
                    vl.q("end_us", format=".2f"),
                    vl.q("duration_us", format=".2f"),
                ],
            },
        }
    ]
    datasets: dict[str, list[dict[str, object]]] = {
        key + "kernels": kernel_rows(timeline, graph, plan)
    }
    if graph is not None:
        datasets[key + "touches"] = touch_rows(timeline, graph, plan)
        writes = "datum.role == 'writes'"
        layers.append(
            {
                "data": {"name": key + "touches"},
                "transform": [{"filter": vl.chosen("pick", "hover")}],
                "mark": {"type": "bar", "height": bar_h + 4, "fill": None, "stroke": SELECT_INK},
                "encoding": {
                    "x": x,
                    "x2": {"field": "end_us"},
                    "y": y,
                    "strokeWidth": {"condition": {"test": writes, "value": 3}, "value": 1.5},
                    "strokeDash": {
                        "condition": {"test": writes, "value": [1, 0]},
                        "value": [3, 2],
                    },
                    "tooltip": vl.tips("node", "role", "tensor"),
                },
            }
        )
    if schedule is not None:
        waits = wait_rows(timeline, schedule)
        datasets[key + "waits"] = waits
        if waits:
            layers.append(
                {
                    "data": {"name": key + "waits"},
                    "mark": {"type": "rule", "color": WAIT_INK, "strokeWidth": 1, "opacity": 0.7},
                    "encoding": {
                        "x": vl.q("x"),
                        "x2": {"field": "x2"},
                        "y": y,
                        "y2": {"field": "lane2"},
                        "tooltip": [vl.n("from", title="waits on"), vl.n("to")],
                    },
                }
            )
            layers.append(
                {
                    "data": {"name": key + "waits"},
                    "mark": {
                        "type": "point",
                        "shape": "triangle-right",
                        "filled": True,
                        "size": 40,
                        "color": WAIT_INK,
                    },
                    "encoding": {"x": vl.q("x2"), "y": {**y, "field": "lane2"}},
                }
            )
    if cursor is not None:
        layers.append(_cursor_rule(cursor, key))
    spec = {
        "layer": layers,
        "width": width,
        "height": height_per_lane * max(1, len(lanes)),
        "title": {"text": title, "anchor": "start"},
    }
    params = (
        vl.pick_param([view]),
        vl.hover_param([view]),
        vl.zoom_param(f"zoom{key}", [view]),
    )
    return DataChart(spec, datasets, params)


def _cursor_rule(cursor: str, key: str) -> dict[str, object]:
    return {
        "data": {"name": key + "live"},
        "transform": [{"filter": vl.chosen(cursor)}],
        "mark": {"type": "rule", "color": CURSOR_INK, "strokeWidth": 1.5},
        "encoding": {"x": vl.q("t")},
    }


def live_bytes_chart(
    rects: Sequence[Placement],
    *,
    width: int = 720,
    height: int = 70,
    cursor: str = "cursor",
    peak_bytes: int | None = None,
    key: str = "",
) -> DataChart:
    """Live bytes in the arena over time (a step line) and the time cursor (parameter
    `cursor`): hovering shows the time, the live bytes and how many tensors are live; the
    other charts draw its rule. Zooms with the other views (`zoom{key}`)."""
    x = vl.q("t", title=None, scale={"zero": False, "nice": False})
    y = vl.q("live_bytes", title="live", axis={"labelExpr": BYTES_LABEL, "tickCount": 3})
    data = {"name": key + "live"}
    area_view, points_view = f"{key}live", f"{key}livepoints"
    text = (
        "format(datum.t, '.1f') + ' µs: ' + datum.live + ' in ' + datum.live_tensors + ' tensors'"
    )
    layers = [
        {
            "name": area_view,
            "data": data,
            "mark": {
                "type": "area",
                "interpolate": "step-after",
                "color": "#6baed6",
                "opacity": 0.6,
                "line": True,
            },
            "encoding": {"x": x, "y": y},
        },
        {
            "name": points_view,
            "data": data,
            "mark": {"type": "point", "opacity": 0, "size": 200},
            "encoding": {
                "x": x,
                "y": y,
                "tooltip": [vl.q("t", format=".2f", title="µs"), *vl.tips("live", "live_tensors")],
            },
        },
        {
            "data": data,
            "transform": [{"filter": vl.chosen(cursor)}, {"calculate": text, "as": "text"}],
            "mark": {
                "type": "text",
                "align": "left",
                "dx": 6,
                "dy": -6,
                "fontWeight": "bold",
                "color": CURSOR_INK,
            },
            "encoding": {"x": x, "y": y, "text": vl.n("text")},
        },
        _cursor_rule(cursor, key),
    ]
    title = "live bytes" + (f" (peak {format_bytes(peak_bytes)})" if peak_bytes else "")
    spec = {
        "layer": layers,
        "width": width,
        "height": height,
        "title": {"text": title, "anchor": "start", "fontSize": 11},
    }
    params = (
        vl.cursor_param(cursor, [points_view]),
        vl.zoom_param(f"zoom{key}", [area_view]),
    )
    return DataChart(spec, {key + "live": live_rows(rects)}, params)


def speedup_chart(frame: pd.DataFrame, *, width: int = 520, height: int = 280) -> alt.Chart:
    """Speedup of several streams over one against batch size, a line per GPU (a frame of
    `StreamComparison.row()`s, e.g. from `speedup_sweep`)."""
    return (
        alt.Chart(frame, title="speedup of the multi-stream schedule over one stream")
        .mark_line(point=True)
        .encode(
            x=alt.X("batch:Q", scale=alt.Scale(type="log", base=2), title="batch (sequences)"),
            y=alt.Y(
                "speedup:Q",
                title="one-stream ÷ multi-stream makespan",
                scale=alt.Scale(zero=False),
            ),
            color=alt.Color("device:N", title="GPU"),
            tooltip=["device", "batch", "serial_us", "parallel_us", "critical_path_us", "speedup"],
        )
        .properties(width=width, height=height)
    )
