"""Allocator policies: the same ggml mechanics, differing only in when a tensor's bytes may be
recycled. One module each; `POLICIES` maps names to planners and `plan_memory` runs one.

| policy | origin | recycled … | safe with streams |
|---|---|---|---|
| sequential | ggml-alloc today | after the last reader in node order | no |
| interleave | PR #16991 | same, planned on the round-robin interleaved order | no (sources) |
| no_alloc_free | PR #21897 | never, for region nodes, their sources and view sources | yes |
| alloc_dep | PR #27301 | not before the region's last join has been computed | yes |
| happens_before | LACE | once every access of the old tensor happens before the new writer | yes |
| no_reuse | baseline | never (and no in-place reuse) | yes |
"""

from __future__ import annotations

from collections.abc import Callable

from concurrency.errors import ConfigError, UnknownNameError
from concurrency.graph.branches import BranchReport
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.plan import MemoryPlan
from concurrency.memory.policies import (
    alloc_dep,
    happens_before,
    interleave,
    no_alloc_free,
    no_reuse,
    sequential,
)

#: CUDA's buffer alignment (ggml_backend_cuda_buffer_type_get_alignment); ggml's CPU uses 32.
DEFAULT_ALIGNMENT = 128

Planner = Callable[[Graph, Schedule, BranchReport, int], MemoryPlan]

POLICIES: dict[str, Planner] = {
    "sequential": sequential.plan,
    "interleave": interleave.plan,
    "no_alloc_free": no_alloc_free.plan,
    "alloc_dep": alloc_dep.plan,
    "happens_before": happens_before.plan,
    "no_reuse": no_reuse.plan,
}

#: Policies whose plans are race-free under the schedule they were planned for. (`alloc_dep`,
#: `no_alloc_free` and `no_reuse` stay safe under any schedule of the same fork regions;
#: `happens_before` relies on that one schedule's order and must be re-checked under another.)
SAFE_POLICIES = ("no_alloc_free", "alloc_dep", "happens_before", "no_reuse")


def plan_memory(
    graph: Graph,
    schedule: Schedule,
    report: BranchReport,
    policy: str,
    alignment: int = DEFAULT_ALIGNMENT,
) -> MemoryPlan:
    """Plan `graph`'s compute buffer under the named policy, for `schedule` (a schedule of
    this graph; the plan records both)."""
    try:
        planner = POLICIES[policy]
    except KeyError:
        raise UnknownNameError("policy", policy, list(POLICIES)) from None
    if alignment <= 0 or alignment & (alignment - 1):
        raise UnknownNameError("alignment", alignment, ["a power of two such as 32 or 128"])
    if tuple(schedule.nodes) != tuple(graph.nodes):
        raise ConfigError(
            "the schedule was made for a different graph; build it from the graph you plan "
            "(stream_schedule(graph, detect_branches(graph)))"
        )
    return planner(graph, schedule, report, alignment)
