"""What the region-based policies share: the nodes strictly inside a fork region."""

from __future__ import annotations

from concurrency.graph.branches import ForkRegion
from concurrency.graph.ir import Graph


def interior(graph: Graph, region: ForkRegion) -> list[str]:
    """Nodes after the fork up to and including the region's last join.

    For ggml-cuda's regions that is exactly the branch nodes plus the join. LACE's general
    regions can also hold main-stream nodes (state gathers, work between two joins); those run
    concurrently with branches too, so the policies treat them like branch nodes.
    """
    lo, hi = graph.index[region.fork], graph.index[region.end]
    return list(graph.nodes[lo + 1 : hi + 1])
