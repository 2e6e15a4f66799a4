"""Charts that draw with no network: Vega shipped with the kit, for JupyterLab and for pages.

Altair 6's default renderer loads Vega from a CDN, and JupyterLab 4's own Vega renderer does
not take Altair 6's specs, so offline every chart would fail. LACE draws through one
JavaScript module instead: vl-convert's bundle of Vega, Vega-Lite and Vega-Embed (the versions
Altair's specs are written for) around `vega.js`.

- `VegaChart` is an anywidget carrying that module: a live chart in JupyterLab that redraws in
  place without blanking, keeps its selections across redraws and reports them to Python.
- `static_html(spec)` is the same chart as a page fragment; `page_head()` is the one script
  (the bundle) a page needs to draw every fragment in it (the reports and slides use it).
- `enable()` registers and turns on the Altair renderer "lace", which answers both: the widget
  for JupyterLab and the fragment for nbconvert (reports prefer `text/html`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib.resources import files
from typing import Any

import altair as alt
import anywidget
import traitlets

RENDERER = "lace"


@cache
def javascript_module() -> str:
    """vega.js bundled with Vega, Vega-Lite and Vega-Embed (≈ 0.9 MB; made once per process,
    about a second, by vl-convert; nothing is downloaded)."""
    import vl_convert
    from altair.utils._importers import vl_version_for_vl_convert

    snippet = files("concurrency.render").joinpath("vega.js").read_text(encoding="utf-8")
    return vl_convert.javascript_bundle(snippet, vl_version=vl_version_for_vl_convert())


SCHEMA_URL = "https://vega.github.io/schema/vega-lite/v6.json"  # an identifier, never fetched


@dataclass(frozen=True)
class DataChart:
    """A Vega-Lite view written as JSON, with the named datasets it reads and its selection
    parameters (top-level, each listing the views that define it).

    LACE's linked views are built as plain Vega-Lite rather than Altair objects: Altair
    validates and deep-copies every layer and concatenation, which cost about 300 ms per
    dashboard redraw; the same JSON built directly costs a few ms. `to_dict()` gives the full
    spec (tests inspect it); `compose` stacks views and merges their data and parameters; in a
    notebook the chart draws through LACE's bundled Vega whatever Altair renderer is on.
    """

    spec: Mapping[str, Any]
    datasets: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)
    params: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self, validate: bool = False) -> dict[str, Any]:
        spec: dict[str, Any] = {"$schema": SCHEMA_URL, **self.spec}
        if self.params:
            spec["params"] = [dict(p) for p in self.params]
        spec["datasets"] = dict(self.datasets)
        spec.setdefault("config", {"view": {"stroke": None}})
        return spec

    def properties(self, **kwargs: Any) -> DataChart:
        return replace(self, spec={**self.spec, **kwargs})

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return mimebundle(self)


def compose(how: str, *charts: DataChart, **props: Any) -> DataChart:
    """Stack views (`how` is "vconcat", "hconcat" or "layer"), merging their datasets and their
    parameters (a parameter several views define lists all of them)."""
    datasets: dict[str, list[dict[str, Any]]] = {}
    params: dict[str, dict[str, Any]] = {}
    for c in charts:
        datasets.update(c.datasets)
        for p in c.params:
            if p["name"] in params:
                views = [*params[p["name"]].get("views", []), *p.get("views", [])]
                params[p["name"]]["views"] = list(dict.fromkeys(views))
            else:
                params[p["name"]] = {**p}
    spec = {how: [dict(c.spec) for c in charts], **props}
    return DataChart(spec, datasets, tuple(params.values()))


class VegaChart(anywidget.AnyWidget):
    """A Vega-Lite chart as a widget. Setting `spec` redraws it in place.

    keep: names of selection parameters whose state survives a redraw (a clicked tensor stays
    selected when the batch changes). report: names of selection parameters whose value is
    copied into `selection` ({name: value}) whenever the user changes it.
    """

    _esm = traitlets.Unicode().tag(sync=True)
    spec = traitlets.Dict().tag(sync=True)
    keep = traitlets.List(traitlets.Unicode()).tag(sync=True)
    report = traitlets.List(traitlets.Unicode()).tag(sync=True)
    selection = traitlets.Dict().tag(sync=True)

    def __init__(self, spec: ChartLike, **kwargs: Any) -> None:
        super().__init__(_esm=javascript_module(), spec=as_spec(spec), **kwargs)


ChartLike = dict[str, Any] | DataChart | alt.TopLevelMixin


def as_spec(chart: ChartLike) -> dict[str, Any]:
    """A chart's Vega-Lite spec, with every `datasets` of a nested view moved to the top (where
    Vega-Lite looks for them: LACE's charts carry their named data with them, so they can be
    shown alone or composed). Altair's schema validation is skipped: the charts are LACE's own,
    tested through `to_dict()`, and validation costs more than the rest of a redraw."""
    spec = dict(chart) if isinstance(chart, dict) else chart.to_dict(validate=False)
    found: dict[str, Any] = {}
    _hoist(spec, found, top=True)
    if found:
        spec["datasets"] = {**found, **spec.get("datasets", {})}
    return spec


def _hoist(node: Any, found: dict[str, Any], *, top: bool = False) -> None:
    """Move nested views' `datasets` into `found`, in place."""
    if isinstance(node, dict):
        if not top and "datasets" in node:
            found.update(node.pop("datasets"))
        for key in ("layer", "vconcat", "hconcat", "concat"):
            for child in node.get(key, ()):
                _hoist(child, found)
        if "spec" in node:
            _hoist(node["spec"], found)


def static_html(chart: ChartLike) -> str:
    """The chart as an HTML fragment: its spec in a JSON script that `page_head()`'s module
    draws. `</` is escaped so no string in the data can close the script early."""
    text = json.dumps(as_spec(chart), separators=(",", ":")).replace("</", "<\\/")
    return f'<div class="lace-vega"><script type="application/json">{text}</script></div>'


def page_head() -> str:
    """The scripts a page needs to draw its `.lace-vega` fragments: the bundle, inline."""
    module = javascript_module().replace("</script", "<\\/script")
    return (
        "<script>window.LACE_PAGE = true;</script>\n"
        f'<script type="module" id="lace-vega-bundle">{module}</script>\n'
    )


def mimebundle(chart: ChartLike, **widget_args: Any) -> dict[str, Any]:
    """What a notebook displays for a chart: the widget (JupyterLab picks it) and the page
    fragment (nbconvert picks it for reports), plus a line of text."""
    spec = as_spec(chart)
    widget = VegaChart(spec, **widget_args)
    shown = widget._repr_mimebundle_() or {}
    bundle = dict(shown[0] if isinstance(shown, tuple) else shown)
    bundle["text/html"] = static_html(spec)
    bundle["text/plain"] = f"<LACE chart: {_title(spec)}>"
    return bundle


def _title(spec: dict[str, Any]) -> str:
    title = spec.get("title")
    if isinstance(title, dict):
        title = title.get("text")
    if isinstance(title, list):
        title = " ".join(map(str, title))
    return str(title) if title else "Vega-Lite"


def _renderer(spec: dict[str, Any], **_metadata: Any) -> dict[str, Any]:
    return mimebundle(spec)


def enable() -> None:
    """Draw every Altair chart of this kernel through LACE's bundled Vega (no CDN).

    Notebooks call it once, in their first code cell. It changes Altair's renderer setting,
    which is per process: any chart displayed afterwards in the kernel uses it.
    """
    if RENDERER not in alt.renderers.names():
        alt.renderers.register(RENDERER, _renderer)
    alt.renderers.enable(RENDERER)
