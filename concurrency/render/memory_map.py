"""Memory maps as Altair charts, drawn the way PyTorch's memory_viz draws them: bytes up,
time (or plan position) across, one rectangle per tensor from its writer to its last reader.

- Every tensor stays visible: the byte axis is piecewise linear, each address band between two
  tensor boundaries gets at least `MIN_BAND_PX` pixels (the axis still reads true offsets, in
  KiB or MiB); `to_scale=True` gives the plain linear axis.
- Hazards are red bands over the bytes both accesses touch, with a marker of fixed size that
  is seen at any zoom (a triangle for a race, a diamond for a use after reuse).
- With a timeline, x is time in µs (so tensors that may be live at once overlap on screen, and
  the x axis is shared with the timeline under it); without one, x is the node's position in
  the plan's order (the order ggml-alloc assumed).
- Selecting a tensor (click; hover previews) outlines it and every tensor that shares its
  bytes; `selection_params()` makes the parameters the timeline shares.
- Tensors written outside the compute buffer (KV cache rows, recurrent and conv state) have no
  rectangle: `outside_writes` lists them and the chart's subtitle says how many.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import altair as alt
import pandas as pd

from concurrency.format import format_bytes, format_shape
from concurrency.graph.ir import VIEW_OPS, Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.check import Hazard
from concurrency.memory.compare import PolicyResult
from concurrency.memory.plan import MemoryPlan
from concurrency.render import vl
from concurrency.render.vega import DataChart
from concurrency.timing.timeline import Timeline

HAZARD_RED = "#d62728"
SELECT_INK = "#111111"
SHARE_INK = "#e6550d"
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


HAZARD_TOOLTIP = vl.tips("kind", "access", "tensor", "other", "first", "second", "size", "range")
#: Least height of an address band in the piecewise byte axis.
MIN_BAND_PX = 5
#: Above this many tensors the "shares bytes with" overlay is left out (it grows as n²).
MAX_SHARE_TENSORS = 400

#: Vega expression: a byte count as B, KiB or MiB (axis labels).
BYTES_LABEL = (
    "datum.value >= 1048576 ? format(datum.value / 1048576, '.2~f') + ' MiB' : "
    "datum.value >= 1024 ? format(datum.value / 1024, '.1~f') + ' KiB' : "
    "datum.value + ' B'"
)


def stream_scale(labels: Sequence[str]) -> dict[str, list[str]]:
    """A fixed colour per stream label ("input", "stream 0", …) shared by every chart."""
    domain = ["input", *(f"stream {k}" for k in range(len(STREAM_COLOURS) - 1))]
    used = [d for d in domain if d in set(labels)]
    return {"domain": used, "range": [STREAM_COLOURS[domain.index(d)] for d in used]}


def node_times(graph: Graph, timeline: Timeline) -> dict[str, tuple[float, float]]:
    """(start, end) in µs of every node; a node without a kernel (a view, an empty op) takes
    the end of the kernel before it in graph order, with no duration."""
    spans = timeline.by_node
    out: dict[str, tuple[float, float]] = {}
    t = 0.0
    for n in graph.nodes:
        span = spans.get(n)
        if span is not None:
            out[n] = (span.start_us, span.end_us)
            t = max(t, span.end_us)
        else:
            out[n] = (t, t)
    return out


@dataclass(frozen=True)
class Placement:
    """One planned tensor's rectangle and labels."""

    tensor: str
    op: str
    shape: str
    nbytes: int
    stream: str
    writer: str
    readers: tuple[str, ...]
    x0: float
    x1: float
    y0: int
    y1: int
    in_hazard: bool
    inplace_of: str

    def row(self) -> dict[str, object]:
        return {
            "tensor": self.tensor,
            "op": self.op,
            "shape": self.shape,
            "size": format_bytes(self.nbytes),
            "bytes": self.nbytes,
            "offset": format_bytes(self.y0),
            "stream": self.stream,
            "writer": self.writer,
            "readers": ", ".join(self.readers) or "none",
            "x0": self.x0,
            "x1": self.x1,
            "y0": self.y0,
            "y1": self.y1,
            "in_hazard": self.in_hazard,
            "inplace_of": self.inplace_of,
        }


def placements(
    graph: Graph,
    schedule: Schedule,
    plan: MemoryPlan,
    hazards: Sequence[Hazard] = (),
    timeline: Timeline | None = None,
) -> list[Placement]:
    """Every placed tensor with its extent: x from its writer to its last access (time with a
    timeline, plan position without), y its bytes in the arena."""
    position = {n: i for i, n in enumerate(plan.order)}
    times = node_times(graph, timeline) if timeline is not None else None
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    readers: dict[str, list[str]] = {}
    for n in plan.order:
        t = graph[n]
        if t.op in VIEW_OPS:
            continue
        if times is not None:
            lo, hi = times[n]
        else:
            lo, hi = position[n], position[n] + 1
        for name in (n, *t.srcs):
            base = graph.base(name)
            if base not in plan.offsets:
                continue
            first[base] = min(first.get(base, lo), lo)
            last[base] = max(last.get(base, hi), hi)
            if name != n and n not in readers.setdefault(base, []):
                readers[base].append(n)
    in_hazard = {graph.base(n) for h in hazards for n in (h.first_tensor, h.second_tensor)}
    out = []
    for name, offset in plan.offsets.items():
        t = graph[name]
        if name not in first or t.nbytes == 0:
            continue
        writer = graph.index.get(name)
        x0 = 0.0 if t.is_input else first[name]
        x1 = last[name]
        if x1 <= x0:  # a kernel of no duration still gets a sliver
            x1 = x0 + (0.05 if times is not None else 1)
        out.append(
            Placement(
                tensor=name,
                op=t.label,
                shape=format_shape(t.shape),
                nbytes=t.nbytes,
                stream=f"stream {schedule.stream[writer]}" if writer is not None else "input",
                writer=name if writer is not None else "(graph input)",
                readers=tuple(readers.get(name, ())),
                x0=x0,
                x1=x1,
                y0=offset,
                y1=offset + t.nbytes,
                in_hazard=name in in_hazard,
                inplace_of=plan.inplace_of.get(name, ""),
            )
        )
    return out


def memory_map_frame(
    graph: Graph,
    schedule: Schedule,
    plan: MemoryPlan,
    hazards: Sequence[Hazard] = (),
    timeline: Timeline | None = None,
) -> pd.DataFrame:
    """One row per placed tensor: its rectangle and its labels (see `placements`)."""
    return pd.DataFrame([p.row() for p in placements(graph, schedule, plan, hazards, timeline)])


def hazard_rows(
    graph: Graph,
    hazards: Sequence[Hazard],
    timeline: Timeline | None = None,
    plan: MemoryPlan | None = None,
) -> list[dict[str, object]]:
    """One row per hazard: the bytes it covers and the x extent of its two accesses. The host
    writes the inputs at the left edge (x 0) and reads the outputs at the right one (the end
    of the plan's order, or of the last kernel with a timeline)."""
    times = node_times(graph, timeline) if timeline is not None else None
    position = {n: i for i, n in enumerate(plan.order)} if plan is not None else graph.index
    if times is not None:
        end = max((hi for _, hi in times.values()), default=0.0)
    else:
        end = float(len(position))
    rows = []
    for k, h in enumerate(hazards):
        xs: list[float] = []
        for node, host_x in ((h.first_node, 0.0), (h.second_node, end)):
            if node not in graph.index:  # the host
                xs.append(host_x)
            elif times is not None:
                xs.extend(times[node])
            else:
                xs.extend((position[node], position[node] + 1))
        rows.append(
            {
                "hazard": k + 1,
                "kind": h.kind,
                "access": h.access or "",
                "tensor": graph.base(h.first_tensor),
                "other": graph.base(h.second_tensor),
                "first": _side(h.first_label, h.first_node, h.first_stream),
                "second": _side(h.second_label, h.second_node, h.second_stream),
                "size": format_bytes(h.end - h.start),
                "range": f"{format_bytes(h.start)} – {format_bytes(h.end)}",
                "x0": min(xs),
                "x1": max(xs),
                "y0": h.start,
                "y1": h.end,
                "explanation": h.explanation,
            }
        )
    return rows


def _side(label: str, node: str, stream: int) -> str:
    """A hazard's side in a tooltip: the node and its stream, or what the host does."""
    return f"{node} (stream {stream})" if label == node else label


def share_rows(rects: Sequence[Placement]) -> list[dict[str, object]]:
    """For each tensor, the rectangles of the other tensors placed on any of its bytes (at any
    time): what selecting a tensor outlines. Empty above `MAX_SHARE_TENSORS` tensors."""
    if len(rects) > MAX_SHARE_TENSORS:
        return []
    rows = []
    ordered = sorted(rects, key=lambda p: p.y0)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            if b.y0 >= a.y1:
                break
            for key, other in ((a, b), (b, a)):
                rows.append(
                    {
                        "tensor": key.tensor,
                        "other": other.tensor,
                        "x0": other.x0,
                        "x1": other.x1,
                        "y0": other.y0,
                        "y1": other.y1,
                    }
                )
    return rows


def outside_writes(graph: Graph) -> pd.DataFrame:
    """Kernels that write outside the compute buffer (into the KV cache, the conv or recurrent
    state): they have a bar in the timeline but no rectangle in the memory map."""
    rows = []
    for n in graph.nodes:
        t = graph[n]
        if t.op in VIEW_OPS or t.nbytes == 0:
            continue
        base = graph.base(n)
        if base != n and graph[base].external:
            rows.append(
                {
                    "node": n,
                    "op": t.label,
                    "writes into": base,
                    "size": format_bytes(t.nbytes),
                    "why no rectangle": "lives in its own buffer (cache or state), not the arena",
                }
            )
    return pd.DataFrame(rows, columns=["node", "op", "writes into", "size", "why no rectangle"])


def byte_scale(
    rects: Sequence[Placement], arena_bytes: int, height: int, *, to_scale: bool = False
) -> tuple[dict[str, object], list[int]]:
    """The byte axis: piecewise linear (every band between two tensor boundaries at least
    `MIN_BAND_PX` tall) unless `to_scale`; and the offsets worth a label (no two closer than
    12 px)."""
    stops = sorted({0, arena_bytes, *(p.y0 for p in rects), *(p.y1 for p in rects)})
    if to_scale or len(stops) < 3 or arena_bytes <= 0:
        px = [height * s / max(arena_bytes, 1) for s in stops]
        scale = {"domain": [0, max(arena_bytes, 1)], "range": [height, 0], "nice": False}
    else:
        bands = [b - a for a, b in itertools.pairwise(stops)]
        floor = min(MIN_BAND_PX, height / (2 * len(bands)))
        spare = height - floor * len(bands)
        heights = [floor + spare * b / arena_bytes for b in bands]
        px = [0.0]
        for h in heights:
            px.append(px[-1] + h)
        scale = {"domain": stops, "range": [height - p for p in px], "nice": False, "zero": False}
    labels: list[tuple[int, float]] = []
    for s, p in zip(stops, px, strict=False):
        if not labels or p - labels[-1][1] >= 12:
            labels.append((s, p))
    if labels[-1][0] != stops[-1]:  # the arena's end is always labelled
        if px[-1] - labels[-1][1] < 12:
            labels.pop()
        labels.append((stops[-1], px[-1]))
    return scale, [s for s, _ in labels]


def memory_map_chart(
    graph: Graph,
    schedule: Schedule,
    plan: MemoryPlan,
    hazards: Sequence[Hazard] = (),
    *,
    timeline: Timeline | None = None,
    width: int = 640,
    height: int = 300,
    title: str | None = None,
    subtitle: Sequence[str] = (),
    extra_lanes: Sequence[str] = (),
    to_scale: bool = False,
    cursor: str | None = None,
    key: str = "",
) -> DataChart:
    """The arena over time (or plan order): a rectangle per tensor, hazards in red.

    The chart defines the `pick` (click) and `hover` selections of tensors and a zoom of x
    (`zoom{key}`); other views that define the same names are linked to it.
    extra_lanes: stream labels to keep in the colour scale (so colours match another chart).
    cursor: the name of the live track's time cursor: a rule at its time (needs the track's
    `{key}live` data beside this chart).
    key: prefix of the chart's dataset and view names (two maps side by side need two keys).
    """
    rects = placements(graph, schedule, plan, hazards, timeline)
    bad = hazard_rows(graph, hazards, timeline, plan)
    shares = share_rows(rects)
    outside = outside_writes(graph)
    scale, labels = byte_scale(rects, plan.arena_bytes, height, to_scale=to_scale)
    m = graph.meta
    title = title or (
        f"{m.model} {m.layer} B={m.batch} · {plan.policy}: "
        f"{format_bytes(plan.arena_bytes)}, {len(hazards)} hazard(s)"
    )
    x = vl.q(
        "x0",
        title="time (µs)" if timeline is not None else "node position (plan order)",
        scale={"zero": False, "nice": False},
    )
    y = vl.q(
        "y0",
        title="arena offset",
        scale=scale,
        axis={"values": labels, "labelExpr": BYTES_LABEL, "grid": False},
    )
    extent = {"x": x, "x2": {"field": "x1"}, "y": y, "y2": {"field": "y1"}}
    lit = vl.chosen("pick", "hover")
    boxes_view = f"{key}memory"
    layers: list[dict[str, object]] = [
        {
            "name": boxes_view,
            "data": {"name": key + "tensors"},
            "mark": {"type": "rect"},
            "encoding": {
                **extent,
                "color": vl.n(
                    "stream",
                    scale=stream_scale([p.stream for p in rects] + list(extra_lanes)),
                    legend={"title": "written on", "orient": "right"},
                ),
                "opacity": vl.when(vl.chosen("pick", empty=True), 0.85, 0.25),
                "stroke": vl.when(lit, SELECT_INK, "white"),
                "strokeWidth": vl.when(lit, 2.5, 0.5),
                "tooltip": [
                    *vl.tips("tensor", "op", "shape", "size", "offset", "stream", "readers"),
                    vl.n("inplace_of", title="in place of"),
                ],
            },
        }
    ]
    if shares:
        layers.append(
            {
                "data": {"name": key + "shares"},
                "transform": [{"filter": vl.chosen("pick")}],
                "mark": {
                    "type": "rect",
                    "fill": None,
                    "stroke": SHARE_INK,
                    "strokeWidth": 2,
                    "strokeDash": [4, 2],
                },
                "encoding": {**extent, "tooltip": vl.tips("other")},
            }
        )
    if bad:
        layers.append(
            {
                "data": {"name": key + "hazards"},
                "mark": {
                    "type": "rect",
                    "fill": HAZARD_RED,
                    "fillOpacity": 0.3,
                    "stroke": HAZARD_RED,
                    "strokeWidth": 2,
                },
                "encoding": {**extent, "tooltip": HAZARD_TOOLTIP},
            }
        )
        layers.append(
            {
                "data": {"name": key + "hazards"},
                "transform": [{"calculate": "(datum.y0 + datum.y1) / 2", "as": "ym"}],
                "mark": {
                    "type": "point",
                    "filled": True,
                    "size": 140,
                    "color": HAZARD_RED,
                    "stroke": "white",
                    "strokeWidth": 1,
                },
                "encoding": {
                    "x": x,
                    "y": {**y, "field": "ym"},
                    "shape": vl.n(
                        "kind",
                        scale={
                            "domain": ["race", "use after reuse"],
                            "range": ["triangle-up", "diamond"],
                        },
                        legend={"title": "hazard", "orient": "right"},
                    ),
                    "tooltip": HAZARD_TOOLTIP,
                },
            }
        )
    layers.append(
        {
            "data": {"name": key + "arena"},
            "mark": {"type": "rule", "strokeDash": [4, 3], "color": "#555"},
            "encoding": {"y": {**y, "field": "arena"}},
        }
    )
    if cursor is not None:
        layers.append(
            {
                "data": {"name": key + "live"},
                "transform": [{"filter": vl.chosen(cursor)}],
                "mark": {"type": "rule", "color": HAZARD_RED, "strokeWidth": 1.5},
                "encoding": {"x": vl.q("t")},
            }
        )
    spec = {
        "layer": layers,
        "width": width,
        "height": height,
        "title": {
            "text": title,
            "subtitle": [*subtitle, *_subtitle(len(outside), to_scale)],
            "anchor": "start",
        },
    }
    datasets = {
        key + "tensors": [p.row() for p in rects],
        key + "shares": shares,
        key + "hazards": bad,
        key + "arena": [{"arena": plan.arena_bytes}],
    }
    params = (
        vl.pick_param([boxes_view]),
        vl.hover_param([boxes_view]),
        vl.zoom_param(f"zoom{key}", [boxes_view]),
    )
    return DataChart(spec, datasets, params)


def _subtitle(outside: int, to_scale: bool) -> list[str]:
    lines = [
        "bytes to scale"
        if to_scale
        else f"every tensor at least {MIN_BAND_PX} px tall (offsets true, spacing not to scale)"
    ]
    if outside:
        lines.append(
            f"{outside} kernel(s) write into caches or state outside the arena: no rectangle"
        )
    return lines


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
