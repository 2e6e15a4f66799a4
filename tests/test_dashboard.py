"""The explorer and its dashboard: choices flow into views; charts are linked by node."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest

from concurrency.errors import UnknownNameError
from concurrency.render.dashboard import Dashboard, metrics_frame, tensor_details
from concurrency.render.explorer import Choice, explore
from concurrency.render.linked import compare_chart, linked_chart
from concurrency.render.memory_map import outside_writes
from concurrency.render.vega import as_spec, static_html


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
    d.streams.value = 8
    assert d.streams.value == d.view.streams_used == 5  # the slider shows the streams used
    assert "5 stream(s) used" in d.status.value and "tiny" in d.status.value
    d.compare.value = "policy"
    assert "hconcat" in d.chart.spec and d.other_view is not None
    d.compare.value = "none"
    d.mode.value = "prefill"
    assert d.view.graph.meta.mode == "prefill" and not d.tokens.disabled


def test_linked_chart_shares_one_selection() -> None:
    view = explore(Choice(model="tiny"))
    spec = linked_chart(view).to_dict()
    memory, live, timeline = spec["vconcat"]
    assert memory["layer"][0]["mark"]["type"] == "rect"
    assert timeline["layer"][0]["mark"]["type"] == "bar"
    assert live["layer"][0]["mark"]["type"] == "area"
    params = {p["name"]: p for p in spec["params"]}
    # one tensor selection set from the memory map and from the timeline: linked both ways
    assert params["pick"]["select"]["fields"] == ["tensor"]
    assert set(params["pick"]["views"]) == {"memory", "kernels"}
    assert "pick" in json.dumps(memory["layer"][0]["encoding"]["opacity"])
    # kernels carry the tensor they write; the overlay lists every kernel touching a tensor
    kernels = {r["node"]: r for r in spec["datasets"]["kernels"]}
    touches = spec["datasets"]["touches"]
    norm = next(r for r in spec["datasets"]["tensors"] if r["tensor"] == "attn_norm-0")
    assert kernels["attn_norm-0"]["tensor"] == "attn_norm-0"
    readers = {r["node"] for r in touches if r["tensor"] == "attn_norm-0" and r["role"] == "reads"}
    assert readers and readers == {r.strip() for r in norm["readers"].split(",")}
    # an arrow per event wait, from the awaited kernel's end to the waiting kernel's start
    waits = spec["datasets"]["waits"]
    assert waits and all(w["x"] <= w["x2"] for w in waits)
    assert {"zoom", "cursor"} <= set(params)
    # every hazard is drawn (a band and a marker) and listed in the data
    assert len(spec["datasets"]["hazards"]) == len(view.hazards) > 0


def test_memory_map_keeps_every_tensor_visible() -> None:
    """The piecewise byte axis gives every band between tensor boundaries at least 5 px; the
    linear one (to scale) leaves most tensors under 2 px on this layer."""
    view = explore(Choice(model="qwen3.5-27b"))
    tall = linked_chart(view, map_height=200).to_dict()["vconcat"][0]["layer"][0]
    flat = linked_chart(view, map_height=200, to_scale=True).to_dict()["vconcat"][0]["layer"][0]
    rows = linked_chart(view).to_dict()["datasets"]["tensors"]

    def heights(layer: dict) -> list[float]:
        scale = layer["encoding"]["y"]["scale"]
        domain, rng = scale["domain"], scale["range"]

        def px(b: float) -> float:
            for (d0, d1), (r0, r1) in zip(pairwise(domain), pairwise(rng), strict=True):
                if d0 <= b <= d1:
                    return r0 + (r1 - r0) * (b - d0) / (d1 - d0)
            raise AssertionError(b)

        return [abs(px(r["y0"]) - px(r["y1"])) for r in rows]

    assert min(heights(tall)) >= 4.99
    assert sum(h < 2 for h in heights(flat)) > len(rows) / 2


def test_compare_chart_links_two_policies() -> None:
    racy = explore(Choice(model="tiny", policy="sequential"))
    safe = explore(Choice(model="tiny", policy="happens_before"))
    spec = compare_chart(racy, safe).to_dict()
    assert len(spec["hconcat"]) == 2
    params = {p["name"]: p for p in spec["params"]}
    assert set(params["pick"]["views"]) == {"amemory", "akernels", "bmemory", "bkernels"}
    assert {"zooma", "zoomb", "cursora", "cursorb"} <= set(params)
    assert len(spec["datasets"]["ahazards"]) > 0 and spec["datasets"]["bhazards"] == []


def test_details_and_outside_writes() -> None:
    view = explore(Choice(model="tiny", layer="attn"))
    outside = outside_writes(view.graph)
    assert set(outside["writes into"]) == {"cache_k_l0", "cache_v_l0"}
    text = tensor_details(view, "attn_norm-0")
    assert "lifetime" in text and "read by" in text and "shares its bytes" in text
    assert "Click a tensor" in tensor_details(view, None)


def test_static_fragment_holds_the_spec() -> None:
    html = static_html(linked_chart(explore(Choice(model="tiny"))))
    assert html.startswith('<div class="lace-vega">') and "</script></div>" in html
    assert html.count("</script>") == 1  # no string in the data closes the script early


def test_as_spec_hoists_nested_datasets() -> None:
    import altair as alt

    inner = alt.Chart(alt.NamedData("d")).mark_point().properties(datasets={"d": [{"x": 1}]})
    spec = as_spec(alt.vconcat(inner, inner))
    assert spec["datasets"] == {"d": [{"x": 1}]}
    assert "datasets" not in json.dumps(spec["vconcat"])


def test_bad_gpu_is_named() -> None:
    with pytest.raises(UnknownNameError, match="GPU"):
        explore(Choice(gpu="tpu"))


def test_measured_timelines_from_data_appear_beside_the_simulated(tmp_path) -> None:
    """A data/ folder whose manifest lists a measured timeline of the same graph adds a
    "measured" timeline row to the linked view; other graphs' recordings are left out."""
    from dataclasses import replace

    from concurrency.data import FIELDS, SCHEMA

    sim = explore(Choice(model="tiny")).timeline
    spans = tuple(replace(s, source="measured") for s in sim.spans)
    measured = replace(sim, spans=spans, meta=replace(sim.meta, source="measured", device="H200"))
    measured.save(tmp_path / "tiny.json")
    entry = {f: "" for f in FIELDS} | {
        "file": "tiny.json",
        "kind": "timeline",
        "config": {},
        "model": "tiny",
        "layer": "gdn",
        "layers": 0,
        "mode": "decode",
        "batch": 1,
        "tokens": 1,
        "streams": 5,
        "source": "measured",
    }
    other = entry | {"batch": 4}
    (tmp_path / "manifest.json").write_text(
        json.dumps({"schema": SCHEMA, "entries": [entry, other]})
    )
    view = explore(Choice(model="tiny"), data=tmp_path)
    assert len(view.measured) == 1 and view.measured[0].meta.device == "H200"
    rows = linked_chart(view).to_dict()["vconcat"]
    assert len(rows) == 4 and "measured on H200" in rows[3]["title"]["text"]
    assert explore(Choice(model="tiny", batch=2), data=tmp_path).measured == ()
    assert explore(Choice(model="tiny"), data=tmp_path / "none").measured == ()
