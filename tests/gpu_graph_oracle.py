"""An oracle for measured timelines, written apart from `concurrency.execute.gpu.measure`.

`measure.graph_records` maps a replay's CUPTI kernel records to plan nodes by sorting graph node
ids and splitting them with an eager run's per-node kernel counts. This module asks the CUDA
graph itself instead: while the plan is captured, each node's launches are bracketed and the
capture graph's node set is read before and after (cudaStreamGetCaptureInfo, cudaGraphGetNodes),
so the nodes a plan node created are known exactly, with the ids CUPTI reports
(cupti.get_graph_node_id). It also reads the captured graph's edges (cudaGraphGetEdges), so a
test can check that every stream order and event wait the plan asks for is a dependency of the
graph, and of the default kind (a programmatic edge lets a kernel start before its producer
ends). Needs cuda-bindings (nvmath-python's dependency) and cupti-python.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: CUPTI's graph node id is (graph id << 32) | the node's id within its graph; a graph's instance
#: keeps its nodes' ids within the graph, so this part names a node in the graph and its replays.
LOCAL_ID_MASK = (1 << 32) - 1


def _check(result: tuple) -> tuple:
    err = result[0]
    if int(err) != 0:
        raise RuntimeError(f"CUDA runtime call failed: {err!r}")
    return result[1:]


def _graph_node_handles(graph: Any) -> set[int]:
    from cuda.bindings import runtime as rt

    (_, count) = _check(rt.cudaGraphGetNodes(graph, 0))
    nodes, count = _check(rt.cudaGraphGetNodes(graph, count))
    return {int(h) for h in nodes[:count]}


def _capturing_graph(stream_ptr: int) -> Any:
    from cuda.bindings import runtime as rt

    info = _check(rt.cudaStreamGetCaptureInfo(stream_ptr))
    return info[2]  # (status, id, graph, dependencies, ...)


@dataclass(frozen=True)
class CapturedGraph:
    """A plan captured with the CUPTI ids of the graph nodes each plan node created."""

    graph_exec: Any
    node_ids: Mapping[int, tuple[int, ...]]  # plan node index → CUPTI graph node ids
    edges: frozenset[tuple[int, int]]  # (from id, to id), default dependencies
    other_edges: frozenset[tuple[int, int, int]]  # (from, to, type) of any other kind

    def reaches(self, sources: Iterable[int], targets: Iterable[int]) -> bool:
        """Whether some graph path leads from every node of `sources` to every of `targets`."""
        return reaches(self.edges, sources, targets)


def reaches(
    edges: Iterable[tuple[int, int]], sources: Iterable[int], targets: Iterable[int]
) -> bool:
    """Whether, along `edges` (from, to), a path leads from every source to every target."""
    succ: dict[int, set[int]] = defaultdict(set)
    for a, b in edges:
        succ[a].add(b)
    wanted = set(targets)
    for source in sources:
        seen, todo = set(), [source]
        while todo:
            for nxt in succ[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        if not wanted <= seen:
            return False
    return True


def capture_with_node_ids(run: Any) -> CapturedGraph:
    """Capture `run`'s plan (as `run.capture()` does) and read back which graph nodes each plan
    node created, and the graph's edges."""
    from cuda.bindings import runtime as rt
    from cupti import cupti

    before: dict[int, set[int]] = {}
    node_ids: dict[int, tuple[int, ...]] = {}

    def bracket(index: int, entering: bool) -> None:
        stream = run.streams[run.lp.nodes[index].stream]
        nodes = _graph_node_handles(_capturing_graph(stream.ptr))
        if entering:
            before[index] = nodes
        else:
            created = nodes - before.pop(index)
            node_ids[index] = tuple(sorted(cupti.get_graph_node_id(h) for h in created))

    graph_exec = run.capture(on_node=bracket)
    graph = graph_exec.graph  # CuPy keeps the captured cudaGraph_t beside its instance
    (_, _, _, count) = _check(rt.cudaGraphGetEdges(graph, 0))
    sources, targets, data, count = _check(rt.cudaGraphGetEdges(graph, count))
    edges, other = set(), set()
    for a, b, d in zip(sources[:count], targets[:count], data[:count], strict=True):
        pair = (cupti.get_graph_node_id(int(a)), cupti.get_graph_node_id(int(b)))
        kind = int(d.type)
        if kind == 0:
            edges.add(pair)
        else:
            other.add((*pair, kind))
    return CapturedGraph(graph_exec, node_ids, frozenset(edges), frozenset(other))
