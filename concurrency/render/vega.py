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

    def __init__(self, spec: dict[str, Any] | alt.TopLevelMixin, **kwargs: Any) -> None:
        super().__init__(_esm=javascript_module(), spec=as_spec(spec), **kwargs)


def as_spec(chart: dict[str, Any] | alt.TopLevelMixin) -> dict[str, Any]:
    """A chart's Vega-Lite spec (a dict passes through). Altair's schema validation is skipped:
    the charts are LACE's own, tested through `to_dict()`, and validation costs more than the
    rest of a redraw."""
    if isinstance(chart, dict):
        return chart
    return chart.to_dict(validate=False)


def static_html(chart: dict[str, Any] | alt.TopLevelMixin) -> str:
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


def mimebundle(chart: dict[str, Any] | alt.TopLevelMixin, **widget_args: Any) -> dict[str, Any]:
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
