"""Timelines as Altair charts: one lane per stream, one bar per kernel; and speedup sweeps.

Colours follow `memory_map.STREAM_COLOURS`, so "stream 1" is the same colour in the memory map
and here.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from concurrency.render.memory_map import stream_scale
from concurrency.timing.timeline import Timeline


def timeline_frame(timeline: Timeline) -> pd.DataFrame:
    """The timeline's table with a "lane" label per stream ("stream 0", …)."""
    frame = timeline.to_frame()
    frame["lane"] = [f"stream {k}" for k in frame["stream"]]
    return frame


def timeline_chart(
    timeline: Timeline,
    *,
    width: int = 720,
    height_per_lane: int = 28,
    title: str | None = None,
    select: alt.Parameter | None = None,
) -> alt.Chart:
    """One bar per kernel from start to end, one lane per stream, tooltips with the node.

    select: a point selection on "node" that clicking a bar sets (other charts can use it to
    highlight the same node); unselected bars fade.
    """
    frame = timeline_frame(timeline)
    lanes = sorted(set(frame["lane"]), key=lambda lane: int(lane.split()[1]))
    m = timeline.meta
    title = title or (
        f"{m.model} {m.layer} {m.mode} B={m.batch} on {m.device}: {m.streams} stream(s), {m.source}"
    )
    chart = (
        alt.Chart(frame, title=title)
        .mark_bar(height=max(4, height_per_lane - 8))
        .encode(
            x=alt.X("start_us:Q", title="time (µs)"),
            x2="end_us:Q",
            y=alt.Y("lane:N", sort=lanes, title=None),
            color=alt.Color("lane:N", scale=stream_scale(lanes), legend=None),
            tooltip=[
                "node",
                "kernel",
                "lane",
                alt.Tooltip("start_us:Q", format=".2f"),
                alt.Tooltip("end_us:Q", format=".2f"),
                alt.Tooltip("duration_us:Q", format=".2f"),
            ],
        )
        .properties(width=width, height=height_per_lane * max(1, len(lanes)))
    )
    if select is not None:
        chart = chart.encode(
            opacity=alt.condition(select, alt.value(1.0), alt.value(0.2))
        ).add_params(select)
    return chart


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
