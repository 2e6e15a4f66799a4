"""Allocator policies: when a tensor's bytes may be recycled. The first six share ggml's
mechanics (the port in `concurrency.memory.ggml`) and differ only in that; the PyTorch pair
models another allocator, PyTorch's CUDA caching allocator, on the same graph and schedule, so
the same hazard class shows outside ggml. One module each; `POLICIES` maps names to planners
and `plan_memory` runs one.

| policy | origin | recycled … | streams | view outputs |
|---|---|---|---|---|
| sequential | ggml-alloc today | after the last reader in node order | no | no |
| interleave | PR #16991 | same, planned on the round-robin interleaved order | no (sources) | no |
| no_alloc_free | PR #21897 | never, for region nodes, their sources and view sources | yes | no |
| alloc_dep | PR #27301 | not before the region's last join has been computed | yes | no |
| happens_before | LACE | once all accesses of the old tensor happen before the writer | yes | yes |
| no_reuse | baseline | never (and no in-place reuse) | yes | yes |
| torch_caching | PyTorch's CUDA allocator | after the last reference, on its stream | no | yes |
| torch_record_stream | same + record_stream | same, once recorded events completed | yes | yes |

"streams": no hazard under the schedule it was planned for, on graphs without view outputs.
"view outputs": no hazard where a graph output is a view either. ggml-alloc flags only the view
as OUTPUT and frees its base once the base's readers and views are done
(`ggml_gallocr_free_node` tests the flag of the tensor it frees), so a later tensor can
overwrite such an output before the host reads it, on one stream as on many. `sequential` and
`interleave` are ggml's rule; `no_alloc_free` and `alloc_dep` model PRs that leave it as it is
(#21897 flags only region tensors, #27301 only adds dependency nodes) and stay faithful, so
they inherit it. LACE's own `happens_before` pins those bases (`outputs.output_view_bases`);
`no_reuse` frees nothing; in PyTorch the caller's view holds its base's storage, so the two
PyTorch policies never free them.

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

#: Policies whose plans have no hazard (no race, no use after reuse, the host's reads of the
#: outputs included) under the schedule they were planned for, on every graph the planner
#: accepts. (`no_reuse` stays safe under any schedule; `happens_before` and
#: `torch_record_stream` rely on that one schedule's order and streams and must be re-checked
#: under another.)
SAFE_POLICIES = ("happens_before", "no_reuse", "torch_record_stream")
#: The safe policies and the PR models that fix the stream hazards but keep ggml-alloc's rule
#: for view outputs (`FREES_VIEW_OUTPUT_BASES`): no race under their schedule, and no hazard at
#: all on a graph none of whose outputs is a view (every model graph LACE builds); where an
#: output is a view, the PR models can overwrite it before the host reads it, as ggml-alloc does
#: on one stream. (`alloc_dep` and `no_alloc_free` stay race-free under any schedule of the same
#: fork regions.)
STREAM_SAFE_POLICIES = (
    "no_alloc_free",
    "alloc_dep",
    "happens_before",
    "no_reuse",
    "torch_record_stream",
)
#: Policies that free the base of a graph output that is a view, as ggml-alloc does.
FREES_VIEW_OUTPUT_BASES = ("sequential", "interleave", "no_alloc_free", "alloc_dep")


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
