"""How the running engine really places a graph: reserve worst cases, then replay offsets.

llama.cpp plans its compute buffer when a context is created, on worst-case graphs (prompt
processing at n_ubatch tokens, token generation, prompt processing again — "to avoid
ggml-alloc reallocations during inference"), and ggml-alloc stores the last plan per node
index. Each later graph is checked only by `ggml_gallocr_needs_realloc`: the same node and
leaf counts, and every node's and source's size within the stored maximum. If so, the stored
offsets are replayed by node index; otherwise the graph is planned afresh (and the buffer only
ever grows). So a decode step's memory sharing is decided by the n_ubatch-token plan
(seed-anatomy §1.4, confirmed on a running engine in §3.6).

Policies and the flow: `sequential`, `interleave`, `alloc_dep`, `happens_before` and
`no_reuse` follow it (their reserve plans are replayed); `no_alloc_free` does not: #21897
forces a fresh plan on every evaluation that carries its flag, in the same (grown) buffer.
Nor do `torch_caching` and `torch_record_stream`: eager PyTorch has no stored plan, every
evaluation places its tensors afresh (the buffer shown is the largest reserved memory of the
reserve graphs and the graph itself, each run on its own; the cache carried from one run to
the next is not modelled).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from concurrency.graph.branches import BranchReport, detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule, stream_schedule
from concurrency.memory.plan import MemoryPlan
from concurrency.memory.policies import plan_memory

DEFAULT_N_UBATCH = 512
DEFAULT_N_BATCH = 2048  # llama_context_default_params; n_outputs_max defaults to it
FLOWS = ("engine", "graph")
REPLANNING_POLICIES = ("no_alloc_free", "torch_caching", "torch_record_stream")

Slot = tuple[int | None, int]  # (offset, size_max): ggml's tensor_alloc without buffer id


@dataclass(frozen=True)
class Stored:
    """What ggml-alloc keeps after planning a graph: per node index its address and maximal
    size, the same for every source slot, and per leaf index."""

    label: str
    nodes: tuple[Slot, ...]
    srcs: tuple[tuple[Slot, ...], ...]
    leafs: tuple[Slot, ...]

    @classmethod
    def record(cls, graph: Graph, plan: MemoryPlan, label: str) -> Stored:
        def slot(name: str) -> Slot:
            t = graph[name]
            if t.view_src is not None or t.external or name not in plan.offsets:
                return (None, 0)
            return (plan.offsets[name], t.nbytes)

        return cls(
            label,
            tuple(slot(n) for n in graph.nodes),
            tuple(tuple(slot(s) for s in graph[n].srcs) for n in graph.nodes),
            tuple(slot(n) for n in graph.leafs),
        )

    def realloc_reason(self, graph: Graph) -> str | None:
        """`ggml_gallocr_needs_realloc`: why `graph` cannot reuse these offsets, or None."""
        if len(self.nodes) != len(graph.nodes):
            return f"{len(graph.nodes)} nodes, the stored plan has {len(self.nodes)}"
        if len(self.leafs) != len(graph.leafs):
            return f"{len(graph.leafs)} leafs, the stored plan has {len(self.leafs)}"
        for i, name in enumerate(graph.nodes):
            why = _too_big(graph, name, self.nodes[i])
            if why:
                return why
            for s, stored in zip(graph[name].srcs, self.srcs[i], strict=False):
                why = _too_big(graph, s, stored)
                if why:
                    return why
        return None

    def replay(
        self, graph: Graph, schedule: Schedule, policy: str, alignment: int, arena_bytes: int
    ) -> MemoryPlan:
        """The offsets `ggml_gallocr_alloc_graph` gives `graph` without re-planning: each
        tensor takes the first stored slot that reaches it (leafs, then nodes and sources)."""
        offsets: dict[str, int] = {}
        for name, (off, _) in zip(graph.leafs, self.leafs, strict=True):
            if off is not None:
                offsets.setdefault(name, off)
        for i, name in enumerate(graph.nodes):
            off = self.nodes[i][0]
            if off is not None:
                offsets.setdefault(name, off)
            for s, (soff, _) in zip(graph[name].srcs, self.srcs[i], strict=False):
                if soff is not None:
                    offsets.setdefault(s, soff)
        sizes = {n: math.ceil(graph[n].nbytes / alignment) * alignment for n in offsets}
        return MemoryPlan(
            policy,
            alignment,
            offsets,
            sizes,
            arena_bytes,
            tuple(graph.nodes),
            notes=(f"offsets replayed from the {self.label} reserve plan",),
            graph=graph,
            schedule=schedule,
        )


def _too_big(graph: Graph, name: str, stored: Slot) -> str | None:
    t = graph[name]
    if t.view_src is not None or t.external:
        return None
    if stored[0] is None:
        return f"{name!r} is planned now but was not in the stored plan"
    if t.nbytes > stored[1]:
        return f"{name!r} needs {t.nbytes} bytes, the stored plan has room for {stored[1]}"
    return None


@dataclass(frozen=True)
class EngineFlowResult:
    """The plan a live graph gets in the engine, and how it came about."""

    plan: MemoryPlan
    replayed: bool
    reason: str  # why it was re-planned, or which reserve plan it replays
    buffer_bytes: int  # the compute buffer after the reserves (and any growth)
    reserves: tuple[str, ...]  # labels of the reserve graphs, in order


def reserve_graphs(graph: Graph, n_ubatch: int, n_batch: int) -> list[tuple[str, Graph]]:
    """llama_context's reserve sequence for the model and sequence count of `graph`:
    pp (n_ubatch tokens split over the sequences, all outputs), tg (one token each), pp."""
    m, cfg = graph.meta, graph.config
    n_seqs = m.batch
    n_tokens = min(m.n_ctx, n_ubatch)
    per_seq = math.ceil(n_tokens / n_seqs)
    n_out = min(per_seq * n_seqs, n_batch)
    layers = m.n_layers if m.layer == "stack" else None

    def pp() -> Graph:
        return build_graph(
            cfg or m.model,
            m.layer,
            "prefill",
            n_seqs,
            per_seq,
            layers,
            n_ctx=m.n_ctx,
            reserve=True,
            n_outputs=n_out,
        )

    tg = build_graph(
        cfg or m.model, m.layer, "decode", n_seqs, None, layers, n_ctx=m.n_ctx, reserve=True
    )
    return [(f"pp{per_seq * n_seqs}", pp()), (f"tg{n_seqs}", tg), (f"pp{per_seq * n_seqs}", pp())]


def engine_flow_plan(
    graph: Graph,
    schedule: Schedule,
    report: BranchReport,
    policy: str,
    alignment: int,
    *,
    max_streams: int = 8,
    n_ubatch: int = DEFAULT_N_UBATCH,
    n_batch: int = DEFAULT_N_BATCH,
) -> EngineFlowResult:
    """Plan `graph` the way the engine would: reserve, then replay or re-plan."""
    buffer = 0
    stored: Stored | None = None
    labels = []
    for label, g in reserve_graphs(graph, n_ubatch, n_batch):
        rep = detect_branches(g, report.detector)
        plan = plan_memory(g, stream_schedule(g, rep, max_streams), rep, policy, alignment)
        buffer = max(buffer, plan.arena_bytes)
        stored = Stored.record(g, plan, label)
        labels.append(label)
    assert stored is not None
    why = (
        "policy re-plans every evaluation"
        if policy in REPLANNING_POLICIES
        else (stored.realloc_reason(graph))
    )
    if why is None:
        plan = stored.replay(graph, schedule, policy, alignment, buffer)
        return EngineFlowResult(
            plan, True, f"replays the {stored.label} reserve plan", buffer, tuple(labels)
        )
    plan = plan_memory(graph, schedule, report, policy, alignment)
    buffer = max(buffer, plan.arena_bytes)
    fresh = dataclasses.replace(plan, arena_bytes=buffer, notes=(f"re-planned: {why}",))
    return EngineFlowResult(fresh, False, why, buffer, tuple(labels))
