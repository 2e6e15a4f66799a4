"""The committed CUPTI diagnostic (data/<recording>/diagnostics/cupti-order.json, made by
scripts/cupti_order.py on the H200): what data/README.md says about same-stream overlaps in
measured timelines, derived again from the raw replay records and the captured graph's edges."""

from __future__ import annotations

import itertools
import json
import statistics
from collections import defaultdict
from pathlib import Path

import pytest
from gpu_graph_oracle import reaches

DATA = Path(__file__).resolve().parents[1] / "data"
OVERLAP_NS = 10  # stamps are ns; anything above rounding is an overlap


@pytest.fixture(scope="module")
def doc() -> dict:
    (path,) = sorted(DATA.glob("*/diagnostics/cupti-order.json"))
    return json.loads(path.read_text())


def _spans(doc: dict) -> list[dict[int, tuple[int, int]]]:
    """Per replay: plan node index → (first start, last end) of its kernels, ns."""
    owner = {g: i for i, node in enumerate(doc["nodes"]) for g in node["graph_nodes"]}
    out = []
    for replay in doc["replays"]:
        spans: dict[int, tuple[int, int]] = {}
        for local, start, end in replay:
            i = owner[local]
            lo, hi = spans.get(i, (start, end))
            spans[i] = (min(lo, start), max(hi, end))
        out.append(spans)
    return out


def _stream_pairs(doc: dict) -> list[tuple[int, int]]:
    by_stream: dict[int, list[int]] = defaultdict(list)
    for i, node in enumerate(doc["nodes"]):
        by_stream[node["stream"]].append(i)
    return [(a, b) for nodes in by_stream.values() for a, b in itertools.pairwise(nodes)]


def _overlaps(doc: dict) -> list[tuple[int, int, int, int]]:
    """(replay, first node, second node, overlap ns) of consecutive same-stream nodes."""
    found = []
    for r, spans in enumerate(_spans(doc)):
        for a, b in _stream_pairs(doc):
            overlap = spans[a][1] - spans[b][0]
            if overlap > OVERLAP_NS:
                found.append((r, a, b, overlap))
    return found


def test_every_kernel_record_belongs_to_a_plan_node(doc: dict) -> None:
    owned = {g for node in doc["nodes"] for g in node["graph_nodes"]}
    assert doc["schema"] == "lace-cupti-order/1" and doc["device"] == "NVIDIA H200"
    assert len(doc["replays"]) == 20
    for replay in doc["replays"]:
        assert {local for local, _, _ in replay} <= owned
        assert all(end > start for _, start, end in replay)


def test_the_graph_orders_every_pair_that_overlaps(doc: dict) -> None:
    graph_nodes = [node["graph_nodes"] for node in doc["nodes"]]
    pairs = _stream_pairs(doc)
    assert all(reaches(doc["edges"], graph_nodes[a], graph_nodes[b]) for a, b in pairs)
    # the check can fail: the reverse direction is no path
    a, b = pairs[0]
    assert not reaches(doc["edges"], graph_nodes[b], graph_nodes[a])


def test_overlaps_are_stamps_out_of_order_as_data_readme_says(doc: dict) -> None:
    """12 overlaps in 10 of 20 replays, at most 0.8 µs; in each the first kernel's stamped span
    is longer than its median over the replays where that pair does not overlap."""
    found = _overlaps(doc)
    assert len(found) == 12
    assert len({r for r, *_ in found}) == 10
    assert round(max(o for *_, o in found) / 1000, 1) == 0.8
    spans = _spans(doc)
    longer = 0
    for r, a, b, _ in found:
        clean = [x for x in range(len(spans)) if (x, a, b) not in {f[:3] for f in found}]
        median = statistics.median(spans[x][a][1] - spans[x][a][0] for x in clean)
        longer += spans[r][a][1] - spans[r][a][0] > median
    assert longer == len(found)
