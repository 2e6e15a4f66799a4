"""A port of ggml-cuda's run-time check of a concurrent region,
`ggml_cuda_concurrent_event::is_valid()` (ggml/src/ggml-cuda/common.cuh, as vendored in
llama-cpp-python 0.3.36).

ggml-cuda runs a region on several streams only when this check passes; it compares the
write ranges of the branches' own tensors and nothing else. It is kept apart from LACE's
checker (`concurrency.memory.check`) so a notebook can put the two side by side and show
what ggml-cuda misses (sources read across branches, such as the fork output).
"""

from __future__ import annotations

from bisect import bisect_left

from concurrency.graph.branches import ForkRegion
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.plan import MemoryPlan


def is_valid_ggml(
    graph: Graph, schedule: Schedule, plan: MemoryPlan, region: ForkRegion
) -> tuple[bool, str]:
    """ggml-cuda's `ggml_cuda_concurrent_event::is_valid()` for one region: (accepted, why).

    The stream mapping is the region's branch nodes with their streams in `schedule`. Like
    ggml, every tensor counts as writing the whole of its base (view_src) tensor; ranges that
    overlap the join node's buffer are skipped; the region is rejected if a write range
    overlaps one on another stream (found with ggml's lower_bound probe), or if a branch node
    reads a node mapped to another stream. Sources outside the mapping (the fork output, graph
    inputs, state gathers) are never examined: that is the blind spot `check_plan` covers.
    Tensors outside the arena (caches, weights) are skipped, where ggml compares their device
    pointers; they never share bytes with the arena.
    """
    mapping = {n: schedule.stream_of(n) for b in region.branches for n in b.nodes}
    join = plan.byte_range(graph, graph.base(region.end))
    ranges: dict[str, tuple[int, int]] = {}
    per_stream: dict[int, list[tuple[int, int, str]]] = {}
    for name, stream in mapping.items():
        rng = plan.byte_range(graph, graph.base(name))
        if rng is None or (join is not None and _ggml_overlaps(rng, join)):
            continue
        ranges[name] = rng
        per_stream.setdefault(stream, []).append((rng[0], rng[1], name))
    for entries in per_stream.values():
        entries.sort()
    for name in sorted(mapping, key=graph.index.__getitem__):
        stream = mapping[name]
        rng = ranges.get(name)
        if rng is not None:
            for other_stream, entries in sorted(per_stream.items()):
                if other_stream == stream:
                    continue
                k = bisect_left(entries, rng)  # std::lower_bound on (start, end)
                if k < len(entries) and entries[k][0] < rng[1]:
                    start, end, other = entries[k]
                    return False, (
                        f"writes overlap: {_who(graph, name, stream)} and "
                        f"{_who(graph, other, other_stream)} both write bytes "
                        f"{start}–{min(end, rng[1]) - 1}; ggml-cuda runs the graph on one stream"
                    )
        for src in graph[name].srcs:
            if src in mapping and mapping[src] != stream:
                return False, (
                    f"`{name}` (stream {stream}) reads `{src}` from stream {mapping[src]}; "
                    "ggml-cuda runs the graph on one stream"
                )
    return True, (
        "accepted: no two streams write overlapping bytes outside the join's buffer and no "
        "branch reads another stream's node (sources from outside the region are not checked)"
    )


def _who(graph: Graph, name: str, stream: int) -> str:
    """`name` (stream k), naming the base tensor whose bytes ggml counts for a view."""
    base = graph.base(name)
    return (
        f"`{name}` (stream {stream})"
        if base == name
        else f"`{name}` (stream {stream}, in `{base}`)"
    )


def _ggml_overlaps(rng: tuple[int, int], join: tuple[int, int]) -> bool:
    """ggml's test for a range touching the join's buffer (starts compared half-open)."""
    (s, e), (js, je) = rng, join
    return s <= js < e or js <= s < je
