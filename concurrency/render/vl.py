"""Small builders of Vega-Lite JSON for LACE's linked views (see `vega.DataChart` for why they
are not Altair objects): channels, tooltips, conditions and the selection parameters."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def q(name: str, **kw: Any) -> Json:
    """A quantitative field channel."""
    return {"field": name, "type": "quantitative", **kw}


def n(name: str, **kw: Any) -> Json:
    """A nominal field channel."""
    return {"field": name, "type": "nominal", **kw}


def tips(*fields: str) -> list[Json]:
    return [n(f) for f in fields]


def chosen(*params: str, empty: bool = False) -> Json:
    """A predicate: the rows any of the parameters selects (`empty`: what an empty selection
    gives)."""
    tests: list[Json] = [{"param": p, "empty": empty} for p in params]
    return tests[0] if len(tests) == 1 else {"or": tests}


def when(predicate: Json, then: Any, otherwise: Any) -> Json:
    """A conditional value channel."""
    test = predicate if "param" in predicate else {"test": predicate}
    return {"condition": {**test, "value": then}, "value": otherwise}


def pick_param(views: list[str]) -> Json:
    """The clicked tensor (double-click clears)."""
    return {
        "name": "pick",
        "select": {"type": "point", "fields": ["tensor"], "on": "click", "clear": "dblclick"},
        "views": views,
    }


def hover_param(views: list[str]) -> Json:
    """The tensor under the pointer."""
    return {
        "name": "hover",
        "select": {
            "type": "point",
            "fields": ["tensor"],
            "on": "pointerover",
            "clear": "pointerout",
        },
        "views": views,
    }


def zoom_param(name: str, views: list[str]) -> Json:
    """Wheel zooms the x scale, drag pans it, double-click resets."""
    return {
        "name": name,
        "select": {"type": "interval", "encodings": ["x"]},
        "bind": "scales",
        "views": views,
    }


def cursor_param(name: str, views: list[str]) -> Json:
    """The time cursor: the point of the live-bytes track nearest the pointer."""
    return {
        "name": name,
        "select": {
            "type": "point",
            "encodings": ["x"],
            "nearest": True,
            "on": "pointermove",
            "clear": "pointerout",
        },
        "views": views,
    }
