"""Allocator policies: when a tensor's bytes may be recycled. The first six share ggml's
mechanics (the port in `concurrency.memory.ggml`) and differ only in that; the PyTorch pair
models another allocator, PyTorch's CUDA caching allocator, on the same graph and schedule, so
the same hazard class shows outside ggml. One module each; `POLICIES` maps names to planners
and `plan_memory` runs one.

| policy | origin | recycled … | safe with streams |
|---|---|---|---|
| sequential | ggml-alloc today | after the last reader in node order | no |
| interleave | PR #16991 | same, planned on the round-robin interleaved order | no (sources) |
| no_alloc_free | PR #21897 | never, for region nodes, their sources and view sources | yes |
| alloc_dep | PR #27301 | not before the region's last join has been computed | yes |
| happens_before | LACE | once every access of the old tensor happens before the new writer | yes |
| no_reuse | baseline | never (and no in-place reuse) | yes |
| torch_caching | PyTorch's caching allocator | after the last reference, on its own stream | no |
| torch_record_stream | same + record_stream | same, once recorded streams' events completed | yes |

`torch_caching` is PyTorch eager on side streams as vLLM and SGLang use it: a block returns
to the pool of the stream that allocated it, so uses on other streams race with its reuse;
`torch_record_stream` calls `Tensor.record_stream` for every such use, as they must.
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
    torch_caching,
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
    "torch_caching": torch_caching.plan,
    "torch_record_stream": torch_caching.plan_record_stream,
}

#: Policies whose plans are race-free under the schedule they were planned for. (`alloc_dep`,
#: `no_alloc_free` and `no_reuse` stay safe under any schedule of the same fork regions;
#: `happens_before` and `torch_record_stream` rely on that one schedule's order and streams
#: and must be re-checked under another.)
SAFE_POLICIES = ("no_alloc_free", "alloc_dep", "happens_before", "no_reuse", "torch_record_stream")


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
