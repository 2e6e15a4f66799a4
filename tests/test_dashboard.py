"""The explorer and its dashboard: choices flow into views; charts are linked by node."""

from __future__ import annotations

import json

import pytest

from concurrency.errors import UnknownNameError
from concurrency.render.dashboard import Dashboard, linked_chart, metrics_frame
from concurrency.render.explorer import Choice, explore


def test_explore_gives_plan_hazards_and_timeline() -> None:
    view = explore(Choice(model="qwen3.5-27b", batch=1, policy="sequential"))
    assert len(view.hazards) == 52 and view.plan.arena_bytes >= view.lower_bound_bytes
    assert view.timeline.meta.streams == 5 and view.serial.meta.streams == 1
    row = view.metrics()
    assert row["speedup"] > 1 and row["hazards"] == 52


def test_widgets_redraw_the_view() -> None:
    d = Dashboard(Choice(model="tiny"))
    d.batch.value = 4
    assert d.view.choice.batch == 4 and d.view.graph.meta.batch == 4
    d.policy.value = "happens_before"
    assert d.view.hazards == ()
    d.streams.value = 1
    assert d.view.schedule.n_streams == 1
    assert metrics_frame(d.view).loc[0, "policy"] == "happens_before"


def test_linked_chart_shares_one_selection() -> None:
    spec = linked_chart(explore(Choice(model="tiny"))).to_dict()
    memory_layers, timeline = spec["vconcat"]
    memory = memory_layers["layer"][0]
    assert memory["mark"]["type"] == "rect" and timeline["mark"]["type"] == "bar"
    (param,) = spec["params"]
    assert param["select"]["fields"] == ["node"]
    assert param["name"] in json.dumps(memory["encoding"]["opacity"])


def test_bad_gpu_is_named() -> None:
    with pytest.raises(UnknownNameError, match="GPU"):
        explore(Choice(gpu="tpu"))
