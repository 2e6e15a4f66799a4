"""How the running engine really places a graph: reserve worst cases, then replay or re-plan.

llama.cpp plans its compute buffer when a context is created, on worst-case graphs (prompt
processing at n_ubatch tokens, token generation, prompt processing again — "to avoid
ggml-alloc reallocations during inference"), and ggml-alloc stores the last plan per node
index. Each later graph is checked only by `ggml_gallocr_needs_realloc`: the same node and
leaf counts, and every node's and source's size within the stored maximum. If so, the stored
offsets are replayed by node index; otherwise the graph is planned afresh (and the buffer only
ever grows). So a decode step's memory sharing is decided by the n_ubatch-token plan
(seed-anatomy §1.4, confirmed on a running engine in §3.6).

Each policy declares how its plans live in the engine (`ENGINE_RULES`):

* `replay` — ggml's own rule over the node list ggml-alloc sees for that policy: `sequential`
  and `no_reuse` as they are, `interleave` on ggml-cuda's interleaved order (the reorder
  happens on each live graph, the stored offsets are replayed by index: the real bug),
  `alloc_dep` with #27301's dependency nodes (a live graph whose regions differ from the
  reserve graph's has another node count, so it is re-planned);
* `same_schedule` — LACE's stream-aware `happens_before`: a stored plan is valid only for the
  schedule it was planned for, so it is replayed only when the live schedule equals the stored
  graph's node for node (streams and waits), and re-planned otherwise;
* `flagged` — #21897's `no_alloc_free`: any node carrying its flag forces a re-plan on every
  evaluation (seed-anatomy §2.7); a live graph with no flagged node follows ggml's rule;
* `live` — a runtime allocator (PyTorch's caching allocator): no reserve at all, it plans the
  live graph every evaluation.

`EngineFlow` is the context built once per model, layer kind, layers, batch, n_ctx, n_ubatch,
detector and stream count: its reserve graphs, their branch reports and schedules, and each
policy's reserve outcome (planned once: the pp reserve graph planned twice in a row gives the
same plan, so it is not planned twice). Every result says which plan its figures come from.

One evaluation right after context creation is modelled. In steady state a re-planned graph
replays its own earlier plan, which is the same plan, so the figures hold for later steps too.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from concurrency.errors import ConfigError, LaceError, UnknownNameError
from concurrency.graph.branches import BranchReport, detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.config import ModelConfig, get_config
from concurrency.graph.ir import Graph, Tensor
from concurrency.graph.schedule import DEFAULT_MAX_STREAMS, Schedule, stream_schedule
from concurrency.memory.bound import lower_bound
from concurrency.memory.ggml.tallocr import align_up
from concurrency.memory.plan import MemoryPlan
from concurrency.memory.policies import POLICIES, plan_memory
from concurrency.memory.policies.alloc_dep import dependencies
from concurrency.memory.policies.interleave import interleaved_nodes
from concurrency.memory.policies.no_alloc_free import flagged

#: llama_context_default_params(): n_ctx 512, n_batch 2048, n_ubatch 512 (the probes' values).
DEFAULT_N_CTX = 512
DEFAULT_N_UBATCH = 512
DEFAULT_N_BATCH = 2048
FLOWS = ("engine", "graph")
KV_PAD = 256  # llama_context pads n_ctx (and each sequence's share of it) to 256 cells
GGML_MAX_SRC = 10  # sources per node: #27301 adds one dependency node per ten kept tensors

REPLAY, SAME_SCHEDULE, FLAGGED, LIVE = "replay", "same_schedule", "flagged", "live"

Order = Callable[[Graph, BranchReport], Sequence[str]]
Dependencies = Callable[[Graph, BranchReport], Mapping[str, tuple[str, ...]]]


def _graph_order(graph: Graph, report: BranchReport) -> Sequence[str]:
    return graph.nodes


@dataclass(frozen=True)
class EngineRule:
    """How a policy's plans live in the running engine.

    replay: `replay`, `same_schedule`, `flagged` or `live` (module doc). order: the node order
    ggml-alloc sees (graph_optimize runs on every live graph before the allocator);
    dependencies: nodes ggml's scheduler inserts after a node (until-node → kept tensors).
    """

    replay: str
    summary: str
    order: Order = _graph_order
    dependencies: Dependencies | None = None


ENGINE_RULES: Mapping[str, EngineRule] = {
    "sequential": EngineRule(REPLAY, "ggml's needs_realloc: same node and leaf counts, sizes fit"),
    "interleave": EngineRule(
        REPLAY,
        "ggml's needs_realloc on the interleaved live graph (same node count: stale offsets "
        "replayed by index)",
        order=interleaved_nodes,
    ),
    "no_alloc_free": EngineRule(
        FLAGGED, "#21897: a flagged node forces a re-plan every evaluation, else ggml's rule"
    ),
    "alloc_dep": EngineRule(
        REPLAY,
        "ggml's needs_realloc with #27301's dependency nodes counted (other regions: re-plan)",
        dependencies=dependencies,
    ),
    "happens_before": EngineRule(
        SAME_SCHEDULE, "a stored plan is replayed only under the schedule it was planned for"
    ),
    "no_reuse": EngineRule(REPLAY, "ggml's needs_realloc (replay is always safe)"),
    "torch_caching": EngineRule(
        LIVE, "a runtime allocator: plans the live graph every evaluation, no reserve"
    ),
    "torch_record_stream": EngineRule(
        LIVE, "a runtime allocator: plans the live graph every evaluation, no reserve"
    ),
}


def engine_rule(policy: str) -> EngineRule:
    """The rule of `policy` (every policy in POLICIES has one)."""
    try:
        return ENGINE_RULES[policy]
    except KeyError:
        raise UnknownNameError("policy", policy, list(POLICIES)) from None


# ---------------------------------------------------------------------------------------------
# What ggml-alloc stores and checks
# ---------------------------------------------------------------------------------------------

Slot = tuple[int | None, int]  # (offset, size_max): ggml's tensor_alloc without buffer id
AllocNode = tuple[str | None, tuple[str, ...]]  # (node, sources); None: a dependency node


def allocator_nodes(
    graph: Graph, report: BranchReport, rule: EngineRule, order: Sequence[str] | None = None
) -> list[AllocNode]:
    """The node list ggml-alloc sees for a policy: the (reordered) nodes, each followed by
    the dependency nodes the scheduler inserts after it (a view node per ten kept tensors).
    `order`: the node order when already known (a plan's `order`), else the rule's."""
    keep = rule.dependencies(graph, report) if rule.dependencies else {}
    tensors = graph.tensors
    nodes = rule.order(graph, report) if order is None else order
    if not keep:
        return [(name, tensors[name].srcs) for name in nodes]
    out: list[AllocNode] = []
    for name in nodes:
        out.append((name, tensors[name].srcs))
        kept = keep.get(name, ())
        for k in range(0, len(kept), GGML_MAX_SRC):
            out.append((None, tuple(kept[k : k + GGML_MAX_SRC])))
    return out


@dataclass(frozen=True)
class Stored:
    """What ggml-alloc keeps after planning a graph: per node index its address and maximal
    size, the same for every source slot, and per leaf index; plus the graph and schedule it
    was planned for (the `same_schedule` rule compares them)."""

    label: str
    nodes: tuple[Slot, ...]
    srcs: tuple[tuple[Slot, ...], ...]
    leafs: tuple[Slot, ...]
    plan: MemoryPlan

    @classmethod
    def record(cls, plan: MemoryPlan, report: BranchReport, rule: EngineRule, label: str) -> Stored:
        """ggml_gallocr_reserve_n's bookkeeping after `plan` (views, external tensors and
        dependency nodes have no slot of their own)."""
        graph = plan.graph
        tensors = graph.tensors
        none: Slot = (None, 0)
        slots: dict[str | None, Slot] = {
            name: (off, tensors[name].nbytes)
            for name, off in plan.offsets.items()
            if tensors[name].view_src is None and not tensors[name].external
        }
        seq = allocator_nodes(graph, report, rule, plan.order)
        return cls(
            label,
            tuple(slots.get(n, none) for n, _ in seq),
            tuple(tuple(slots.get(s, none) for s in srcs) for _, srcs in seq),
            tuple(slots.get(n, none) for n in graph.leafs),
            plan,
        )

    def realloc_reason(self, graph: Graph, seq: Sequence[AllocNode]) -> str | None:
        """`ggml_gallocr_needs_realloc`: why `graph` (as ggml-alloc sees it: `seq`) cannot
        reuse these offsets, or None."""
        if len(self.nodes) != len(seq):
            return f"{len(seq)} nodes, the stored {self.label} plan has {len(self.nodes)}"
        if len(self.leafs) != len(graph.leafs):
            return f"{len(graph.leafs)} leafs, the stored {self.label} plan has {len(self.leafs)}"
        tensors = graph.tensors
        for i, (name, srcs) in enumerate(seq):
            if name is not None:
                why = _too_big(tensors, name, self.nodes[i], self.label)
                if why:
                    return why
            for s, stored in zip(srcs, self.srcs[i], strict=False):
                why = _too_big(tensors, s, stored, self.label)
                if why:
                    return why
        return None

    def replay(
        self,
        graph: Graph,
        schedule: Schedule,
        seq: Sequence[AllocNode],
        policy: str,
        buffer_bytes: int,
    ) -> MemoryPlan:
        """The offsets `ggml_gallocr_alloc_graph` gives `graph` without re-planning: each
        tensor takes the first stored slot that reaches it (leafs, then nodes and sources)."""
        offsets: dict[str, int] = {}
        for name, (off, _) in zip(graph.leafs, self.leafs, strict=True):
            if off is not None:
                offsets.setdefault(name, off)
        for (name, srcs), (off, _), src_slots in zip(seq, self.nodes, self.srcs, strict=True):
            if name is not None and off is not None:
                offsets.setdefault(name, off)
            for s, (soff, _) in zip(srcs, src_slots, strict=False):
                if soff is not None:
                    offsets.setdefault(s, soff)
        alignment = self.plan.alignment
        sizes = {n: align_up(graph[n].nbytes, alignment) for n in offsets}
        return MemoryPlan(
            policy,
            alignment,
            offsets,
            sizes,
            buffer_bytes,
            tuple(n for n, _ in seq if n is not None),
            notes=(f"offsets replayed from the {self.label} reserve plan",),
            graph=graph,
            schedule=schedule,
        )


def _too_big(tensors: Mapping[str, Tensor], name: str, stored: Slot, label: str) -> str | None:
    t = tensors[name]
    if t.view_src is not None or t.external:
        return None
    if stored[0] is None:
        return f"{name!r} is planned now but has no slot in the stored {label} plan"
    if t.nbytes > stored[1]:
        return f"{name!r} needs {t.nbytes} bytes, the stored {label} plan has room for {stored[1]}"
    return None


def _schedule_difference(stored: Schedule, live: Schedule, graph: Graph) -> str | None:
    """Where the live schedule first differs from the stored one, node for node, or None."""
    if len(stored.nodes) != len(live.nodes):
        return f"{len(live.nodes)} nodes, the stored plan's schedule has {len(stored.nodes)}"
    for i, (a, b) in enumerate(zip(stored.stream, live.stream, strict=True)):
        if a != b:
            return (
                f"node {i} ({graph.nodes[i]}) runs on stream {b}, on stream {a} in the stored plan"
            )
    for i, (a, b) in enumerate(zip(stored.waits, live.waits, strict=True)):
        if a != b:
            return (
                f"node {i} ({graph.nodes[i]}) waits for {list(b)}, for {list(a)} in the stored plan"
            )
    return None


# ---------------------------------------------------------------------------------------------
# The context: reserve graphs, built once
# ---------------------------------------------------------------------------------------------


def context_cells(n_ctx: int, n_seqs: int) -> int:
    """`cparams.n_ctx` after llama_context's rounding: padded to 256 cells and, with one KV
    stream per sequence (kv_unified false), n_seqs times the per-sequence share padded to 256."""
    cells = math.ceil(n_ctx / KV_PAD) * KV_PAD
    if n_seqs > 1:
        cells = math.ceil((cells // n_seqs) / KV_PAD) * KV_PAD * n_seqs
    return cells


class ReserveGraph:
    """One worst-case graph llama_context reserves, with its branches, schedule and bound
    (each computed when first needed)."""

    def __init__(self, label: str, graph: Graph, detector: str, max_streams: int) -> None:
        self.label = label
        self.graph = graph
        self.detector = detector
        self.max_streams = max_streams
        self._bounds: dict[int, int] = {}

    @cached_property
    def report(self) -> BranchReport:
        return detect_branches(self.graph, self.detector)

    @cached_property
    def schedule(self) -> Schedule:
        return stream_schedule(self.graph, self.report, self.max_streams)

    def arena_ceiling(self, alignment: int) -> int:
        """The sum of every planned tensor's aligned size: no ggml-style plan of this graph
        needs more, since each allocation grows the arena by at most its own size."""
        return sum(align_up(self.graph[n].nbytes, alignment) for n in self.graph.planned)

    def lower_bound_bytes(self, alignment: int) -> int:
        """`lower_bound` of this reserve graph with sizes rounded to `alignment` (cached)."""
        if alignment not in self._bounds:
            self._bounds[alignment] = lower_bound(self.graph, self.schedule, alignment).bytes
        return self._bounds[alignment]


@dataclass(frozen=True)
class Reserved:
    """A policy's reserve sequence: the plan stored at the end and the buffer it left."""

    stored: Stored
    buffer_bytes: int
    planned: tuple[str, ...]  # labels of the reserve graphs actually planned


@dataclass(frozen=True)
class EngineFlowResult:
    """The plan a live graph gets in the engine, and where its figures come from.

    `plan` holds the offsets the live graph runs with (its `arena_bytes` is the compute
    buffer); `planned` is the plan those offsets come from: a reserve graph's (replayed) or the
    live graph's own (re-planned). Compare `planned.arena_bytes` with the lower bound of
    `planned.graph`, never with another graph's.
    """

    policy: str
    plan: MemoryPlan
    planned: MemoryPlan
    replayed: bool
    source: str  # "replays the pp512 reserve plan", "re-planned: …", …
    planned_graph: str  # "pp512 reserve" or "live graph"
    buffer_bytes: int
    reserves: tuple[str, ...]  # reserve graphs, in order ("pp512", "tg1", "pp512"); () for live
    rule: str


class EngineFlow:
    """The engine's context for one model, layer kind, layer count and batch: the reserve
    graphs (pp at n_ubatch tokens, tg, pp again) built once, and each policy's reserve outcome
    planned once; `plan` places any live graph of that context under any policy."""

    def __init__(
        self,
        config: ModelConfig | str,
        layer: str,
        layers: int | None,
        batch: int,
        *,
        n_ctx: int = DEFAULT_N_CTX,
        n_ubatch: int = DEFAULT_N_UBATCH,
        n_batch: int = DEFAULT_N_BATCH,
        detector: str = "general",
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        for what, v in (("n_ctx", n_ctx), ("n_ubatch", n_ubatch), ("n_batch", n_batch)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{what} must be a positive integer, got {v!r}")
        if n_ctx % KV_PAD:
            padded = math.ceil(n_ctx / KV_PAD) * KV_PAD
            raise ConfigError(
                f"llama.cpp pads the context to a multiple of {KV_PAD} cells ({n_ctx} → "
                f"{padded}); use --n-ctx {padded} so the graphs match the engine's"
            )
        self.config = get_config(config)
        self.layer = layer
        if layer == "stack":
            self.layers: int | None = self.config.n_layer if layers is None else layers
        else:
            self.layers = None
        self.batch = batch
        self.n_ctx = n_ctx
        self.n_ubatch = n_ubatch
        self.n_batch = n_batch
        self.detector = detector
        self.max_streams = max_streams
        cells = context_cells(n_ctx, batch)
        # llama_context: n_batch = min(n_ctx, n_batch) (causal), n_ubatch = min(n_batch, n_ubatch)
        self.ubatch_tokens = min(cells, n_batch, n_ubatch)
        # the pp reserve: n_tokens = min(n_ctx, n_ubatch), rounded up to a multiple of the
        # sequences by graph_reserve, which keeps n_outputs = n_tokens as passed (unrounded)
        self.n_outputs = self.ubatch_tokens
        per_seq = math.ceil(self.ubatch_tokens / batch)
        self.pp_tokens = per_seq * batch
        pp = build_graph(
            self.config,
            layer,
            "prefill",
            batch,
            per_seq,
            self.layers,
            n_ctx=n_ctx,
            reserve=True,
            n_outputs=self.n_outputs,
        )
        tg = build_graph(
            self.config, layer, "decode", batch, None, self.layers, n_ctx=n_ctx, reserve=True
        )
        self.pp = ReserveGraph(f"pp{self.pp_tokens}", pp, detector, max_streams)
        self.tg = ReserveGraph(f"tg{batch}", tg, detector, max_streams)
        self._reserved: dict[tuple[str, int], Reserved] = {}

    @classmethod
    def for_graph(
        cls,
        graph: Graph,
        *,
        detector: str = "general",
        max_streams: int = DEFAULT_MAX_STREAMS,
        n_ubatch: int = DEFAULT_N_UBATCH,
        n_batch: int = DEFAULT_N_BATCH,
    ) -> EngineFlow:
        """The context `graph` runs in (its model, layer kind, layers, batch and n_ctx)."""
        m = graph.meta
        return cls(
            graph.config or m.model,
            m.layer,
            m.n_layers if m.layer == "stack" else None,
            m.batch,
            n_ctx=m.n_ctx,
            n_ubatch=n_ubatch,
            n_batch=n_batch,
            detector=detector,
            max_streams=max_streams,
        )

    @property
    def reserves(self) -> tuple[ReserveGraph, ...]:
        """llama_context's reserve sequence: pp, tg, pp (the same pp graph twice)."""
        return (self.pp, self.tg, self.pp)

    def settings(self) -> dict[str, object]:
        """What decides the flow, for tables and JSON."""
        return {
            "n_ctx": self.n_ctx,
            "n_ubatch": self.n_ubatch,
            "detector": self.detector,
            "max_streams": self.max_streams,
            "reserves": [r.label for r in self.reserves],
        }

    def describe(self) -> str:
        """One line: the context and its reserve sequence."""
        labels = ", ".join(r.label for r in self.reserves)
        return f"engine flow: n_ctx {self.n_ctx}, n_ubatch {self.n_ubatch}; reserves {labels}"

    def reserve_bound(self, graph: Graph, alignment: int) -> int:
        """The lower bound of one of this context's reserve graphs (computed once)."""
        for r in (self.pp, self.tg):
            if r.graph is graph:
                return r.lower_bound_bytes(alignment)
        raise LaceError("not a reserve graph of this engine context")

    # ------------------------------------------------------------------------------------
    def reserved(self, policy: str, alignment: int) -> Reserved:
        """Run the reserve sequence for `policy` (once per policy and alignment).

        pp, tg, pp: the buffer grows to the largest plan, and the pp plan is what stays
        stored. The second pp is the first one again (planning is deterministic), and the tg
        graph is planned only when it could outgrow the pp plan: no plan of it needs more
        than the sum of its planned tensors' sizes.
        """
        key = (policy, alignment)
        if key in self._reserved:
            return self._reserved[key]
        rule = engine_rule(policy)
        pp = self.pp
        pp_plan = plan_memory(pp.graph, pp.schedule, pp.report, policy, alignment)
        buffer = pp_plan.arena_bytes
        planned = [pp.label]
        tg = self.tg
        if tg.arena_ceiling(alignment) > buffer:
            tg_plan = plan_memory(tg.graph, tg.schedule, tg.report, policy, alignment)
            buffer = max(buffer, tg_plan.arena_bytes)
            planned.append(tg.label)
        stored = Stored.record(pp_plan, pp.report, rule, pp.label)
        out = Reserved(stored, buffer, tuple(planned))
        self._reserved[key] = out
        return out

    def plan(
        self,
        graph: Graph,
        schedule: Schedule,
        report: BranchReport,
        policy: str,
        alignment: int,
    ) -> EngineFlowResult:
        """Place the live `graph` (run under `schedule`, regions from `report`) the way the
        engine would under `policy`: replay the stored reserve plan or plan it afresh."""
        self._check_live(graph, report)
        rule = engine_rule(policy)
        if rule.replay == LIVE:
            fresh = plan_memory(graph, schedule, report, policy, alignment)
            return EngineFlowResult(
                policy,
                fresh,
                fresh,
                False,
                "plans the live graph every evaluation (no reserve)",
                "live graph",
                fresh.arena_bytes,
                (),
                rule.replay,
            )
        reserved = self.reserved(policy, alignment)
        stored = reserved.stored
        labels = tuple(r.label for r in self.reserves)
        why: str | None = None
        if rule.replay == FLAGGED:
            n_flagged = len(flagged(graph, report))
            if n_flagged:
                why = (
                    f"{n_flagged} tensors carry #21897's NO_ALLOC_FREE flag, which forces a "
                    "re-plan every evaluation"
                )
        seq: list[AllocNode] = []
        if why is None:
            seq = allocator_nodes(graph, report, rule)
            why = stored.realloc_reason(graph, seq)
        if why is None and rule.replay == SAME_SCHEDULE:
            diff = _schedule_difference(stored.plan.schedule, schedule, graph)
            if diff:
                why = f"the live schedule differs from the {stored.label} plan's: {diff}"
        if why is None:
            plan = stored.replay(graph, schedule, seq, policy, reserved.buffer_bytes)
            return EngineFlowResult(
                policy,
                plan,
                stored.plan,
                True,
                f"replays the {stored.label} reserve plan",
                f"{stored.label} reserve",
                reserved.buffer_bytes,
                labels,
                rule.replay,
            )
        fresh = plan_memory(graph, schedule, report, policy, alignment)
        buffer = max(reserved.buffer_bytes, fresh.arena_bytes)
        live = dataclasses.replace(fresh, arena_bytes=buffer, notes=(f"re-planned: {why}",))
        return EngineFlowResult(
            policy,
            live,
            fresh,
            False,
            f"re-planned: {why}",
            "live graph",
            buffer,
            labels,
            rule.replay,
        )

    def _check_live(self, graph: Graph, report: BranchReport) -> None:
        """Refuse a live graph this context does not run (another model, batch or n_ctx)."""
        m = graph.meta
        mine = (self.config.name, self.layer, self.batch, self.n_ctx)
        theirs = (m.model, m.layer, m.batch, m.n_ctx)
        layers_differ = self.layer == "stack" and m.n_layers != self.layers
        if mine != theirs or layers_differ or (graph.config not in (None, self.config)):
            raise LaceError(
                f"this engine context runs {self.config.name} {self.layer} B={self.batch} "
                f"n_ctx={self.n_ctx}, not {m.model} {m.layer} B={m.batch} n_ctx={m.n_ctx}; "
                "build the context for the graph (EngineFlow.for_graph)"
            )
        if report.detector != self.detector:
            raise LaceError(
                f"this engine context detects regions with {self.detector!r}, the live graph's "
                f"report used {report.detector!r}; use one detector for both"
            )
        if m.n_tokens > self.ubatch_tokens:
            raise ConfigError(
                f"the engine splits a batch of {m.n_tokens} tokens into ubatches of at most "
                f"{self.ubatch_tokens}; raise --n-ubatch (and --n-ctx) or use fewer tokens"
            )


def engine_flow_plan(
    graph: Graph,
    schedule: Schedule,
    report: BranchReport,
    policy: str,
    alignment: int,
    *,
    max_streams: int = DEFAULT_MAX_STREAMS,
    n_ubatch: int = DEFAULT_N_UBATCH,
    n_batch: int = DEFAULT_N_BATCH,
) -> EngineFlowResult:
    """Plan `graph` the way the engine would, with a context built for this one call (build
    an `EngineFlow` once to plan several policies or graphs of the same context)."""
    flow = EngineFlow.for_graph(
        graph,
        detector=report.detector,
        max_streams=max_streams,
        n_ubatch=n_ubatch,
        n_batch=n_batch,
    )
    return flow.plan(graph, schedule, report, policy, alignment)
