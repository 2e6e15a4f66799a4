"""The critical path of a timeline's own kernel durations (`measured_critical_path_us`)."""

from __future__ import annotations

from dataclasses import replace

from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.schedule import serial_schedule, stream_schedule
from concurrency.timing.metrics import makespan_us, measured_critical_path_us
from concurrency.timing.simulate import simulate


def test_bounded_by_the_makespan_and_by_the_sum_of_kernel_times() -> None:
    g = build_graph("tiny", "gdn", "decode", 1)
    sched = stream_schedule(g, detect_branches(g))
    multi = simulate(g, sched, "h200", launch="graph")
    assert 0 < measured_critical_path_us(g, sched, multi) <= makespan_us(multi)
    serial = serial_schedule(g)
    one = simulate(g, serial, "h200", launch="graph")
    # stream order is not an edge: independent branches are off the chain even on one stream
    total = sum(s.end_us - s.start_us for s in one.spans)
    assert measured_critical_path_us(g, serial, one) < min(total, makespan_us(one))


def test_a_longer_kernel_on_the_chain_lengthens_it() -> None:
    g = build_graph("tiny", "gdn", "decode", 1)
    sched = stream_schedule(g, detect_branches(g))
    tl = simulate(g, sched, "h200", launch="graph")
    base = measured_critical_path_us(g, sched, tl)
    spans = tuple(replace(s, end_us=s.end_us + 100.0) if s.node == "gdn-0" else s for s in tl.spans)
    assert measured_critical_path_us(g, sched, replace(tl, spans=spans)) > base + 99.0
