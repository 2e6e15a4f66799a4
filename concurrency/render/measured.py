"""A measured (or simulated) timeline above the memory map of the very plan it ran with, on one
time axis and linked by tensor — the view notebook 06 shows for recordings from `data/`."""

from __future__ import annotations

from concurrency.recorded import CaseView
from concurrency.render.memory_map import memory_map_chart
from concurrency.render.timeline_chart import timeline_chart
from concurrency.render.vega import DataChart, compose


def case_chart(view: CaseView, *, width: int = 760) -> DataChart:
    """The timeline (a lane per stream, event-wait arrows) above the arena (a rectangle per
    tensor on the same time axis, hazards in red); clicking a tensor or a kernel selects it in
    both."""
    graph, placed = view.context.graph, view.placed
    top = timeline_chart(
        view.timeline,
        graph=graph,
        schedule=placed.schedule,
        plan=placed.plan,
        width=width,
        title=view.title,
    )
    bottom = memory_map_chart(
        graph,
        placed.schedule,
        placed.plan,
        placed.check.hazards,
        timeline=view.timeline,
        width=width,
        height=260,
        title=f"its memory plan ({placed.source})",
    )
    return compose("vconcat", top, bottom)
