"""Measured timelines from CUPTI: one span per launching node, on the schedule's streams, in an
order that honours every event the schedule waits on, eager and graph-replayed; the value saves
and loads like a simulated one. Two checks against the CUDA graph itself (gpu_graph_oracle) show
that the records belong to their nodes and that the graph orders what the schedule orders, so
an end stamped past its successor's start (up to `CUPTI_ORDER_SLACK_US`) is CUPTI's stamps, not
two kernels of one stream at once."""

from __future__ import annotations

import itertools

import pytest
from gpu_cases import layer_graph, planned, report

from concurrency.execute.gpu import build_launch_plan, reference_inputs
from concurrency.timing.metrics import CUPTI_ORDER_SLACK_US
from concurrency.timing.timeline import Timeline

pytestmark = pytest.mark.gpu

CASES = [("gdn", "decode", 2, None), ("stack", "prefill", 1, 8)]


def _placed_run(layer: str, mode: str, batch: int, tokens: int | None):  # type: ignore[no-untyped-def]
    from concurrency.execute.gpu.runner import DeviceRun

    graph = layer_graph("tiny", layer, mode, batch, tokens)
    schedule, plan = planned(graph, "happens_before")
    run = DeviceRun(build_launch_plan(graph, schedule, plan))
    run.upload(reference_inputs(graph, seed=6))
    return run


@pytest.mark.parametrize("launch", ["eager", "graph"])
@pytest.mark.parametrize("layer,mode,batch,tokens", CASES)
def test_measured_timeline_respects_the_schedule(
    launch, layer, mode, batch, tokens, tmp_path, record_property
) -> None:
    from concurrency.execute.gpu.measure import measure_timeline

    run = _placed_run(layer, mode, batch, tokens)
    lp = run.lp
    timeline = measure_timeline(run, launch)
    run.free()

    launched = {n.node for n in lp.nodes if n.launches}
    assert set(timeline.by_node) == launched
    assert timeline.meta.source == "measured" and timeline.meta.launch == launch
    late = []
    for node in lp.nodes:
        span = timeline.span(node.node)
        if span is None:
            continue
        assert span.stream == node.stream and span.source == "measured"
        for j in node.waits:
            before = timeline.span(lp.nodes[j].node)
            slack = CUPTI_ORDER_SLACK_US
            if before is not None and (
                before.start_us > span.start_us or before.end_us > span.start_us + slack
            ):
                late.append((lp.nodes[j].node, node.node, before.end_us - span.start_us))
    assert not late, f"kernels started before the event they wait on: {late[:5]}"
    by_stream: dict[int, list] = {}
    for span in timeline.spans:
        by_stream.setdefault(span.stream, []).append(span)
    for spans in by_stream.values():
        for a, b in itertools.pairwise(spans):
            assert a.start_us <= b.start_us, (a, b)
            assert a.end_us <= b.start_us + CUPTI_ORDER_SLACK_US, (a, b)
    path = timeline.save(tmp_path / "measured.json")
    assert Timeline.load(path) == timeline
    makespan = max(s.end_us for s in timeline.spans)
    record_property("makespan_us", f"{makespan:.1f}")
    report(record_property, 0.0, 0.0)


@pytest.mark.parametrize("layer,mode,batch,tokens", CASES)
def test_replay_records_belong_to_the_graph_nodes_their_node_created(
    layer, mode, batch, tokens, record_property
) -> None:
    """measure.graph_records (sorted node ids split by eager kernel counts) against the graph
    itself: the kernel nodes each plan node created while it was captured (gpu_graph_oracle).
    CUPTI gives a graph node id as graph id << 32 | the node's id in its graph; an instance
    keeps its nodes' ids, so the low 32 bits (LOCAL_ID_MASK) are compared."""
    from gpu_graph_oracle import LOCAL_ID_MASK as low
    from gpu_graph_oracle import capture_with_node_ids

    from concurrency.execute.gpu.measure import eager_records, graph_records

    run = _placed_run(layer, mode, batch, tokens)
    counts = {i: len(r) for i, r in eager_records(run).items()}
    captured = capture_with_node_ids(run)
    by_node = graph_records(run, counts, captured.graph_exec)
    run.free()
    replayed = {r.graph_node_id for records in by_node.values() for r in records}
    assert len({i >> 32 for i in replayed}) == 1  # one instance
    kernel_locals = {i & low for i in replayed}
    wrong = []
    for index, records in by_node.items():
        mapped = sorted(r.graph_node_id & low for r in records)
        created = sorted(i & low for i in captured.node_ids[index] if i & low in kernel_locals)
        if mapped != created:
            wrong.append((run.lp.nodes[index].node, mapped, created))
    assert not wrong, wrong[:5]
    assert sum(len(r) for r in by_node.values()) == len(replayed)
    record_property("kernels", len(replayed))
    report(record_property, 0.0, 0.0)


@pytest.mark.parametrize("layer,mode,batch,tokens", CASES)
def test_the_captured_graph_orders_what_the_schedule_orders(
    layer, mode, batch, tokens, record_property
) -> None:
    """Every event wait of the schedule and every pair of consecutive launching nodes of one
    stream is a path of default dependencies in the captured CUDA graph, and the graph has no
    edge of another kind (a programmatic edge would let a kernel start before its producer
    ends); so two dependent kernels cannot overlap on the GPU, whatever CUPTI's clock says."""
    from gpu_graph_oracle import capture_with_node_ids

    run = _placed_run(layer, mode, batch, tokens)
    run.run_eager()  # nvmath allocates its workspace on a first, uncaptured execution
    captured = capture_with_node_ids(run)
    lp = run.lp
    run.free()
    ids = captured.node_ids
    pairs = []
    last_on_stream: dict[int, int] = {}
    for node in lp.nodes:
        if not node.launches:
            continue
        if node.stream in last_on_stream:
            pairs.append((last_on_stream[node.stream], node.index))
        last_on_stream[node.stream] = node.index
        pairs += [(j, node.index) for j in node.waits if ids.get(j)]
    unordered = [
        (lp.nodes[a].node, lp.nodes[b].node)
        for a, b in pairs
        if not captured.reaches(ids[a], ids[b])
    ]
    assert not unordered, unordered[:5]
    assert not captured.other_edges, sorted(captured.other_edges)[:5]
    record_property("ordered_pairs", len(pairs))
    report(record_property, 0.0, 0.0)
