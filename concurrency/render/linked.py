"""The explorer's linked view: the memory map, the live-bytes track and the timeline (and any
measured timelines) of one `ExplorerView`, stacked on one time axis.

Linking lives in the spec (Vega-Lite parameters), so it works in JupyterLab and in static
reports alike: clicking or hovering a kernel selects the tensor it writes, clicking or
hovering a tensor outlines the kernels that write and read it and every tensor placed on its
bytes; the wheel zooms time and dragging pans it in every row at once; the red rule is the time
cursor of the live-bytes track. `compare_chart` puts two views side by side with one tensor
selection, so the same tensor lights up under two policies or two batch sizes.
"""

from __future__ import annotations

from concurrency.format import format_bytes
from concurrency.render.explorer import ExplorerView
from concurrency.render.memory_map import memory_map_chart, placements
from concurrency.render.timeline_chart import live_bytes_chart, live_rows, timeline_chart
from concurrency.render.vega import DataChart, compose

#: Selections the dashboard keeps across redraws and reads back in Python.
KEEP = ("pick",)


def view_title(view: ExplorerView) -> tuple[str, str]:
    """The linked view's title (what was chosen) and first subtitle line (what it gives)."""
    c, m = view.choice, view.metrics()
    shape = f"B={c.batch}" + (f"×T={view.graph.meta.tokens}" if c.mode == "prefill" else "")
    title = f"{c.model} · {c.layer} {c.mode} {shape} · {c.policy}"
    result = (
        f"arena {format_bytes(view.plan.arena_bytes)} (bound "
        f"{format_bytes(view.lower_bound_bytes)}) · {len(view.hazards)} hazard(s) · "
        f"{view.streams_used} stream(s) on {view.timeline.meta.device}: "
        f"{m['makespan_us']:.1f} µs, {m.get('speedup', 1):.2f}× one stream"
    )
    return title, result


def linked_chart(
    view: ExplorerView,
    *,
    width: int = 640,
    map_height: int = 250,
    key: str = "",
    to_scale: bool = False,
) -> DataChart:
    """Memory map over the live-bytes track over the timeline(s), one time axis, linked by
    tensor. `key` names this view's data, zoom and cursor (two views side by side need two)."""
    cursor = f"cursor{key}"
    lanes = [f"stream {k}" for k in range(view.schedule.n_streams)]
    rects = placements(view.graph, view.schedule, view.plan, view.hazards, view.timeline)
    title, result = view_title(view)
    live = live_rows(rects)
    rows = [
        memory_map_chart(
            view.graph,
            view.schedule,
            view.plan,
            view.hazards,
            timeline=view.timeline,
            width=width,
            height=map_height,
            title=title,
            subtitle=[result],
            extra_lanes=lanes,
            to_scale=to_scale,
            cursor=cursor,
            key=key,
        ),
        live_bytes_chart(
            rects,
            width=width,
            height=50,
            cursor=cursor,
            peak_bytes=max((int(r["live_bytes"]) for r in live), default=0),
            key=key,
        ),
        timeline_chart(
            view.timeline,
            graph=view.graph,
            schedule=view.schedule,
            plan=view.plan,
            width=width,
            title=f"simulated on {view.timeline.meta.device} (event waits as arrows)",
            height_per_lane=22,
            cursor=cursor,
            lanes=[f"stream {k}" for k in sorted({s.stream for s in view.timeline.spans})],
            key=key,
        ),
    ]
    for k, measured in enumerate(view.measured):
        rows.append(
            timeline_chart(
                measured,
                graph=view.graph,
                plan=view.plan,
                width=width,
                title=f"measured on {measured.meta.device} ({measured.meta.launch} launches)",
                key=f"{key}m{k}",
            )
        )
    return compose("vconcat", *rows, spacing=6, resolve={"scale": {"x": "shared"}})


def compare_chart(
    left: ExplorerView, right: ExplorerView, *, width: int = 420, to_scale: bool = False
) -> DataChart:
    """Two views side by side (two policies, two batch sizes), one tensor selection."""
    return compose(
        "hconcat",
        linked_chart(left, width=width, key="a", to_scale=to_scale, map_height=220),
        linked_chart(right, width=width, key="b", to_scale=to_scale, map_height=220),
        spacing=16,
    )
