"""GPU time of PyTorch work captured as one CUDA graph, measured with CUDA events.

`graph_times_us(calls, replays)` captures every callable of `calls` once, in order, into ONE
CUDA graph (each callable may fork work onto side streams and join it back), replays the
graph `replays` times back to back with an event between replays, and returns each replay's
GPU time divided by `len(calls)`. Several independent copies of a short kernel in one graph
keep the device busy while the host launches the next replay, so a 5 µs kernel is timed as a
kernel, not as the host's launch rate; copies that read their own inputs keep one copy's state
from sitting in L2 for the next. Never eager host timing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

WARMUP_CALLS = 2


def graph_times_us(
    calls: Sequence[Callable[[], Any]], replays: int, *, warmup: int = WARMUP_CALLS
) -> list[float]:
    """Per-call GPU time (µs) of `replays` replays of one CUDA graph holding `calls`."""
    import torch

    if not calls:
        raise ValueError("graph_times_us needs at least one call to capture")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (Triton compiles and autotunes here) off capture
        for _ in range(warmup):
            for call in calls:
                call()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    stream = torch.cuda.current_stream()
    marks = [torch.cuda.Event(enable_timing=True) for _ in range(replays + 1)]
    graph.replay()  # first replay uploads the graph
    marks[0].record(stream)
    for i in range(replays):
        graph.replay()
        marks[i + 1].record(stream)
    torch.cuda.synchronize()
    per_call = len(calls)
    times = [marks[i].elapsed_time(marks[i + 1]) * 1000.0 / per_call for i in range(replays)]
    del graph
    return times


def copies_for(kernel_us_guess: float, target_us: float = 150.0, most: int = 32) -> int:
    """How many independent copies to put in one graph so one replay lasts about `target_us`
    (at least 1, at most `most`)."""
    if kernel_us_guess <= 0:
        return most
    return max(1, min(most, round(target_us / kernel_us_guess)))
