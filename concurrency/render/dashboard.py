"""The dashboard: memory reuse beside kernel overlap, redrawn in place as the user changes the
model, the layer (or the whole model), decode or prefill, batch, tokens, allocator policy,
streams and GPU; optionally two policies or two batch sizes side by side.

The chart is one `VegaChart` widget whose spec is replaced on each change: the browser draws
the new chart beside the old one and swaps them, so nothing blanks, and the clicked tensor
stays selected. Below it, tabs list the hazards (both tensors, nodes, bytes, kind), the
selected tensor (lifetime, readers, every tensor sharing its bytes, its hazards), the kernels
that write outside the arena, and the metrics. Work that takes long (whole-model stacks)
shows a progress bar first. In a static report (nbconvert) the dashboard shows as its chart
and tables for the starting choice: widgets need a kernel.
"""

from __future__ import annotations

import html
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pandas as pd

from concurrency.format import format_bytes
from concurrency.graph.config import PRESETS
from concurrency.memory.policies import POLICIES
from concurrency.render.explorer import Choice, ExplorerView, explore
from concurrency.render.linked import KEEP, compare_chart, linked_chart
from concurrency.render.memory_map import node_times, outside_writes, placements
from concurrency.render.tables import hazard_frame
from concurrency.render.vega import DataChart, VegaChart, static_html
from concurrency.timing.gpus import GPUS, get_gpu

BATCHES = (1, 2, 4, 8, 16, 32, 64)
TOKENS = (16, 64, 128, 256, 512)
MAX_STREAMS = 8
#: Width of the chart's plotting area: the dashboard fits JupyterLab on a 1280×800 screen.
CHART_WIDTH = 600
COMPARE_WIDTH = 330
MAP_HEIGHT = 200


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


def status_line(view: ExplorerView, elapsed_s: float | None = None) -> str:
    """Model, graph, policy, streams used and GPU, and what the plan gives, as one HTML line."""
    c = view.choice
    shape = f"B={c.batch}" + (f", T={view.graph.meta.tokens}" if c.mode == "prefill" else "")
    hz = len(view.hazards)
    verdict = (
        f'<span style="color:#d62728"><b>{hz} hazard(s)</b></span>'
        if hz
        else '<span style="color:#2ca02c"><b>no hazards</b></span>'
    )
    took = f" · drawn in {elapsed_s * 1000:.0f} ms" if elapsed_s is not None else ""
    return (
        f"<b>{html.escape(c.model)}</b> · {c.layer} {c.mode} {shape} · policy "
        f"<b>{html.escape(c.policy)}</b> · {view.streams_used} stream(s) used "
        f"(limit {c.max_streams}) · {html.escape(view.timeline.meta.device)} · "
        f"arena {format_bytes(view.plan.arena_bytes)} · {verdict}{took}"
    )


def tensor_details(view: ExplorerView, tensor: str | None) -> str:
    """HTML: the selected tensor's bytes, lifetime, writer, readers, the tensors sharing its
    bytes and its hazards; a hint when nothing is selected."""
    if not tensor:
        return "<i>Click a tensor in the memory map or a kernel in the timeline.</i>"
    rects = {
        p.tensor: p
        for p in placements(view.graph, view.schedule, view.plan, view.hazards, view.timeline)
    }
    p = rects.get(tensor)
    if p is None:
        return f"<i>{html.escape(tensor)} has no bytes in this plan.</i>"
    times = node_times(view.graph, view.timeline)
    sharers = sorted(
        (o for o in rects.values() if o.tensor != tensor and o.y0 < p.y1 and p.y0 < o.y1),
        key=lambda o: o.x0,
    )
    share_rows = "".join(
        f"<li>{html.escape(o.tensor)} ({format_bytes(o.nbytes)}, "
        f"{o.x0:.1f}–{o.x1:.1f} µs{', overlaps in time' if o.x0 < p.x1 and p.x0 < o.x1 else ''})"
        "</li>"
        for o in sharers
    )
    readers = ", ".join(f"{html.escape(r)} ({times[r][0]:.1f} µs)" for r in p.readers if r in times)
    hz = hazard_frame(view.hazards, tensor=tensor)
    return (
        f"<b>{html.escape(tensor)}</b> · {html.escape(p.op)} {html.escape(p.shape)} · "
        f"{format_bytes(p.nbytes)} at {format_bytes(p.y0)}–{format_bytes(p.y1)} · "
        f"{p.stream}<br>lifetime {p.x0:.1f}–{p.x1:.1f} µs · written by "
        f"{html.escape(p.writer)} · read by {readers or 'nobody'}"
        f"<br>shares its bytes with {len(sharers)} tensor(s):<ul>{share_rows}</ul>"
        f"{len(hz)} hazard(s) touch it." + (hz.to_html(index=False) if len(hz) else "")
    )


def _table(frame: pd.DataFrame, empty: str) -> str:
    if frame.empty:
        return f"<i>{empty}</i>"
    return (
        '<div style="max-height:170px;overflow:auto;font-size:12px">'
        + frame.to_html(index=False, border=0)
        + "</div>"
    )


class Dashboard:
    """The widgets, the current view(s), and the chart and tables they redraw in place."""

    def __init__(self, choice: Choice | None = None, data: Path | None = None) -> None:
        self.choice = choice or Choice()
        self.data = data
        c = self.choice
        layout = widgets.Layout(width="auto")
        style = {"description_width": "initial"}
        self.model = widgets.Dropdown(
            options=sorted(PRESETS),
            value=c.model,
            description="model",
            style=style,
            layout=widgets.Layout(width="230px"),
        )
        self.layer = widgets.ToggleButtons(
            options=[("GDN", "gdn"), ("attn", "attn"), ("model", "stack")],
            value=c.layer,
            tooltips=["one Gated DeltaNet layer", "one attention layer", "the whole model"],
            style={"button_width": "64px"},
        )
        self.mode = widgets.ToggleButtons(
            options=["decode", "prefill"], value=c.mode, style={"button_width": "74px"}
        )
        self.tokens = widgets.SelectionSlider(
            options=TOKENS,
            value=c.tokens if c.tokens in TOKENS else TOKENS[0],
            description="tokens",
            continuous_update=False,
            disabled=c.mode != "prefill",
            style=style,
            layout=widgets.Layout(width="210px"),
        )
        self.gpu = widgets.Dropdown(
            options=sorted(GPUS),
            value=get_gpu(c.gpu).name,
            description="GPU",
            style=style,
            layout=widgets.Layout(width="170px"),
        )
        self.batch = widgets.SelectionSlider(
            options=BATCHES,
            value=c.batch,
            description="batch",
            continuous_update=False,
            style=style,
            layout=widgets.Layout(width="230px"),
        )
        self.policy = widgets.Dropdown(
            options=list(POLICIES), value=c.policy, description="policy", style=style
        )
        self.streams = widgets.IntSlider(
            value=c.max_streams,
            min=1,
            max=MAX_STREAMS,
            description="streams",
            continuous_update=False,
            style=style,
            layout=widgets.Layout(width="210px"),
        )
        self.compare = widgets.Dropdown(
            options=[("nothing", "none"), ("policy", "policy"), ("batch", "batch")],
            value="none",
            description="beside it",
            style=style,
            layout=widgets.Layout(width="170px"),
        )
        self.other = widgets.Dropdown(
            options=list(POLICIES),
            value="happens_before",
            disabled=True,
            layout=widgets.Layout(width="150px"),
        )
        self.to_scale = widgets.ToggleButtons(
            options=[("all tensors", False), ("to scale", True)],
            value=False,
            tooltips=["every tensor at least 5 px tall", "byte axis to scale"],
            style={"button_width": "92px"},
        )
        self.progress = widgets.IntProgress(
            min=0, max=4, layout=widgets.Layout(width="160px", visibility="hidden")
        )
        self.status = widgets.HTML(layout=layout)
        self.hazards_out = widgets.HTML()
        self.details_out = widgets.HTML()
        self.outside_out = widgets.HTML()
        self.metrics_out = widgets.HTML()
        self.tabs = widgets.Tab(
            children=[self.hazards_out, self.details_out, self.outside_out, self.metrics_out]
        )
        for i, name in enumerate(("hazards", "selected tensor", "outside the arena", "metrics")):
            self.tabs.set_title(i, name)
        self._quiet = False
        self.last_redraw_s = 0.0
        self.view = explore(self.choice, data)
        self.other_view: ExplorerView | None = None
        self.chart = VegaChart(self._chart(), keep=list(KEEP), report=list(KEEP))
        self.chart.observe(self._picked, names="selection")
        self._sync_streams()
        self._tables()
        self.status.value = status_line(self.view)
        for w in self.controls:
            w.observe(self._changed, names="value")

    @property
    def controls(self) -> list[widgets.ValueWidget]:
        return [
            self.model,
            self.layer,
            self.mode,
            self.tokens,
            self.gpu,
            self.batch,
            self.policy,
            self.streams,
            self.compare,
            self.other,
            self.to_scale,
        ]

    # --- reacting to the widgets -------------------------------------------------------------

    def _changed(self, change: dict[str, Any] | None = None) -> None:
        if self._quiet:
            return
        if change is not None and change.get("owner") is self.compare:
            self._set_other_options()
        self.tokens.disabled = self.mode.value != "prefill"
        self.update(
            replace(
                self.choice,
                model=self.model.value,
                layer=self.layer.value,
                mode=self.mode.value,
                tokens=self.tokens.value if self.mode.value == "prefill" else None,
                batch=self.batch.value,
                policy=self.policy.value,
                max_streams=self.streams.value,
                gpu=self.gpu.value,
            )
        )

    def _set_other_options(self) -> None:
        self._quiet = True
        try:
            kind = self.compare.value
            self.other.disabled = kind == "none"
            if kind == "batch":
                self.other.options = list(BATCHES)
                self.other.value = 8 if self.batch.value != 8 else 1
            else:
                self.other.options = list(POLICIES)
                self.other.value = "happens_before"
        finally:
            self._quiet = False

    def _picked(self, change: dict[str, Any]) -> None:
        self.details_out.value = tensor_details(self.view, self.picked)
        if self.picked:
            self.tabs.selected_index = 1

    @property
    def picked(self) -> str | None:
        """The tensor clicked in the chart (None when nothing is selected)."""
        value = (self.chart.selection or {}).get("pick") or {}
        names = value.get("tensor") if isinstance(value, dict) else None
        return names[0] if names else None

    # --- redrawing --------------------------------------------------------------------------

    def update(self, choice: Choice) -> None:
        """Recompute the view(s) for `choice` and redraw the chart and the tables in place."""
        started = time.perf_counter()
        slow = choice.layer == "stack"
        if slow:
            self._progress(1, f"building the {choice.model} stack ({choice.mode})…")
        self.choice = choice
        self.view = explore(choice, self.data)
        if slow:
            self._progress(2, "planning done; simulating the comparison…")
        self.other_view = self._other(choice)
        if slow:
            self._progress(3, "drawing…")
        self.chart.spec = self._chart().to_dict()
        self._sync_streams()
        self._tables()
        self.last_redraw_s = time.perf_counter() - started
        self.status.value = status_line(self.view, self.last_redraw_s)
        self.progress.layout.visibility = "hidden"

    def _progress(self, step: int, message: str) -> None:
        self.progress.layout.visibility = "visible"
        self.progress.value = step
        self.status.value = f"<i>{html.escape(message)}</i>"

    def _other(self, choice: Choice) -> ExplorerView | None:
        kind = self.compare.value
        if kind == "policy":
            return explore(replace(choice, policy=self.other.value), self.data)
        if kind == "batch":
            return explore(replace(choice, batch=self.other.value), self.data)
        return None

    def _chart(self) -> DataChart:
        if self.other_view is not None:
            return compare_chart(
                self.view, self.other_view, width=COMPARE_WIDTH, to_scale=self.to_scale.value
            )
        return linked_chart(
            self.view, width=CHART_WIDTH, to_scale=self.to_scale.value, map_height=MAP_HEIGHT
        )

    def _sync_streams(self) -> None:
        """The streams slider reads the streams the schedule actually uses (a GDN layer has
        five however many are allowed)."""
        used = self.view.streams_used
        self._quiet = True
        try:
            if self.streams.value > used:
                self.streams.value = used
            self.streams.description = f"streams ({used} used)"
        finally:
            self._quiet = False

    def _tables(self) -> None:
        hz = hazard_frame(self.view.hazards)
        self.tabs.set_title(0, f"hazards ({len(hz)})")
        self.hazards_out.value = _table(hz, "No hazards: every reuse is ordered by the schedule.")
        outside = outside_writes(self.view.graph)
        self.tabs.set_title(2, f"outside the arena ({len(outside)})")
        self.outside_out.value = (
            "<p>These kernels write into the KV cache or the recurrent/conv state, which live "
            "in their own buffers, so they have a bar in the timeline but no rectangle in the "
            "memory map.</p>" + _table(outside, "Every kernel writes into the arena.")
        )
        self.metrics_out.value = metrics_frame(self.view).to_html(index=False, border=0)
        self.details_out.value = tensor_details(self.view, self.picked)

    # --- showing ----------------------------------------------------------------------------

    def widget(self) -> widgets.VBox:
        """The whole dashboard; later changes redraw only the chart and the tables."""
        return widgets.VBox(
            [
                widgets.HBox([self.model, self.layer, self.mode, self.tokens]),
                widgets.HBox([self.batch, self.streams, self.policy, self.gpu]),
                widgets.HBox([self.compare, self.other, self.to_scale, self.progress]),
                self.status,
                self.chart,
                self.tabs,
            ],
            layout=widgets.Layout(max_width="1000px"),
        )

    def static_html(self) -> str:
        """The dashboard for a page without a kernel: status, linked chart, hazards."""
        return (
            f"<p>{status_line(self.view)}</p>"
            + static_html(self._chart())
            + "<p><b>Hazards</b></p>"
            + _table(hazard_frame(self.view.hazards), "No hazards.")
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        box = self.widget()
        shown = box._repr_mimebundle_() or {}
        bundle = dict(shown[0] if isinstance(shown, tuple) else shown)
        bundle["text/html"] = self.static_html()
        bundle["text/plain"] = f"<LACE dashboard: {self.choice}>"
        return bundle


def dashboard(data: Path | None = None, **choice: Any) -> Dashboard:
    """The dashboard for a starting choice (keyword arguments of `Choice`); `data` is a
    folder of recordings (the repository's data/) whose measured timelines are shown beside
    the simulated ones."""
    return Dashboard(Choice(**choice), data)
