"""The dashboard: memory reuse beside kernel overlap, redrawn as the user toggles policy,
batch size, streams, model and GPU.

`linked_chart` puts the memory map (offset × plan position) above the simulated timeline
(time × stream); clicking a kernel highlights it and the tensor it writes in the memory map
(an Altair point selection on the node name, so it also works in static HTML reports).
`Dashboard` wires ipywidgets to `concurrency.render.explorer.explore`.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import altair as alt
import ipywidgets as widgets
import pandas as pd

from concurrency.format import format_bytes
from concurrency.graph.config import PRESETS
from concurrency.memory.policies import POLICIES
from concurrency.render.explorer import Choice, ExplorerView, explore
from concurrency.render.memory_map import memory_map_chart
from concurrency.render.timeline_chart import timeline_chart
from concurrency.timing.gpus import GPUS, get_gpu

BATCHES = (1, 2, 4, 8, 16, 32, 64)


def linked_chart(view: ExplorerView, *, width: int = 720) -> alt.VConcatChart:
    """Memory map over the timeline, linked by node name."""
    pick = alt.selection_point(fields=["node"], empty=True)
    m = view.metrics()
    c = view.choice
    lanes = [f"stream {k}" for k in range(view.schedule.n_streams)]
    memory = memory_map_chart(
        view.graph,
        view.schedule,
        view.plan,
        view.hazards,
        width=width,
        height=260,
        title=(
            f"memory: {c.policy}, {format_bytes(view.plan.arena_bytes)} "
            f"(bound {format_bytes(view.lower_bound_bytes)}), {len(view.hazards)} hazard(s)"
        ),
        highlight=pick,
        extra_lanes=lanes,
    )
    timeline = timeline_chart(
        view.timeline,
        width=width,
        select=pick,
        title=(
            f"time on {view.timeline.meta.device}: {m['makespan_us']:.1f} µs on "
            f"{view.schedule.n_streams} stream(s), {m.get('speedup', 1):.2f}× one stream"
        ),
    )
    with warnings.catch_warnings():
        # both views use the one node selection on purpose: Altair's note that it merged
        # "identical" parameters is exactly the linking we want
        warnings.filterwarnings("ignore", message="Automatically deduplicated selection")
        return alt.vconcat(memory, timeline)


def metrics_frame(view: ExplorerView) -> pd.DataFrame:
    keys = [
        "policy",
        "arena_bytes",
        "lower_bound_bytes",
        "hazards",
        "streams",
        "makespan_us",
        "concurrency_us",
        "overlap_ratio",
        "speedup",
    ]
    row = view.metrics()
    return pd.DataFrame([{k: row.get(k) for k in keys}])


class Dashboard:
    """The widgets, the current view, and the outputs they redraw in place."""

    def __init__(self, choice: Choice | None = None) -> None:
        self.choice = choice or Choice()
        c = self.choice
        self.model = widgets.Dropdown(options=sorted(PRESETS), value=c.model, description="model")
        self.layer = widgets.ToggleButtons(
            options=["gdn", "attn"], value=c.layer, description="layer"
        )
        self.batch = widgets.SelectionSlider(
            options=BATCHES, value=c.batch, description="batch", continuous_update=False
        )
        self.policy = widgets.Dropdown(options=list(POLICIES), value=c.policy, description="policy")
        self.streams = widgets.IntSlider(
            value=c.max_streams, min=1, max=8, description="streams", continuous_update=False
        )
        self.gpu = widgets.Dropdown(
            options=sorted(GPUS), value=get_gpu(c.gpu).name, description="GPU"
        )
        self.chart_out = widgets.Output()
        self.table_out = widgets.Output()
        self.status = widgets.HTML()
        self.view = explore(self.choice)
        for w in self.controls:
            w.observe(self._changed, names="value")

    @property
    def controls(self) -> list[widgets.ValueWidget]:
        return [self.model, self.layer, self.batch, self.policy, self.streams, self.gpu]

    def _changed(self, _change: object = None) -> None:
        self.update(
            replace(
                self.choice,
                model=self.model.value,
                layer=self.layer.value,
                batch=self.batch.value,
                policy=self.policy.value,
                max_streams=self.streams.value,
                gpu=self.gpu.value,
            )
        )

    def update(self, choice: Choice) -> None:
        """Recompute the view for `choice` and redraw the outputs."""
        self.choice = choice
        self.view = explore(choice)
        self.status.value = (
            f"<b>{choice.model}</b> {choice.layer} B={choice.batch}: "
            f"{len(self.view.hazards)} hazard(s) under {choice.policy}"
        )
        self.render()

    def render(self) -> None:
        """Replace the outputs' content. Setting `outputs` directly (rather than capturing
        `display` inside `with output:`) keeps the update a plain widget-state change, which
        headless runs (nbclient, reports) handle without waiting on the frontend."""
        for out, value in (
            (self.chart_out, linked_chart(self.view)),
            (self.table_out, metrics_frame(self.view)),
        ):
            out.outputs = ()
            out.append_display_data(value)

    def widget(self) -> widgets.VBox:
        """The whole dashboard, drawn once; later changes redraw only the outputs."""
        self.render()
        return widgets.VBox(
            [
                widgets.HBox([self.model, self.layer, self.gpu]),
                widgets.HBox([self.batch, self.streams, self.policy]),
                self.status,
                self.table_out,
                self.chart_out,
            ]
        )


def dashboard(**choice: object) -> widgets.VBox:
    """Build the dashboard for a starting choice (keyword arguments of `Choice`)."""
    return Dashboard(Choice(**choice)).widget()  # type: ignore[arg-type]
