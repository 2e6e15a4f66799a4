"""Which races the seed's concurrency would really hit in llama.cpp.

The hazard checker run on the engine's own offsets (the reserve plan replayed into the decode
graph, `concurrency.memory.engine_flow`) under the multi-stream schedule, next to what a plan of
the decode graph alone predicts — per site (GDN layer, attention layer, FFN or MoE fork), model
and batch size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from concurrency.errors import UnknownNameError
from concurrency.graph.branches import BranchReport, detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import stream_schedule
from concurrency.memory.check import Hazard, check_plan
from concurrency.memory.engine_flow import DEFAULT_N_CTX, DEFAULT_N_UBATCH, EngineFlow
from concurrency.memory.plan import MemoryPlan
from concurrency.memory.policies import plan_memory
from concurrency.memory.sites import SITE_LABELS, SITES, SiteMap

CPU_ALIGNMENT = 32  # the engine the probe runs: ggml's CPU buffer type


@dataclass(frozen=True)
class EngineHazards:
    """Hazards of one decode graph under the seed's schedule, engine plan vs graph plan."""

    model: str
    batch: int
    engine: tuple[Hazard, ...]
    graph_only: tuple[Hazard, ...]
    graph: Graph
    engine_plan: MemoryPlan
    report: BranchReport
    source: str  # which plan the engine's offsets come from

    def _hazards(self, which: str) -> tuple[Hazard, ...]:
        return self.engine if which == "engine" else self.graph_only

    def pairs(self, which: str = "engine", layer: int | None = None) -> set[tuple[str, str]]:
        """(first node, second node) of each hazard, optionally of one layer's only: a
        hazard's layer is its first node's, or its other node's when the first side is the
        host (`HOST` names the host's side; a hazard between two host events has no layer)."""
        return {
            (h.first_node, h.second_node)
            for h in self._hazards(which)
            if layer is None or self._layer(h) == layer
        }

    def _layer(self, hazard: Hazard) -> int | None:
        nodes = hazard.graph_nodes
        return self.graph[nodes[0]].layer if nodes else None

    def sites(self, which: str) -> dict[str, int]:
        """Hazards per site: GDN layer, attention layer, dense FFN fork, MoE FFN fork, other,
        and "host" for hazards with the host on one side (`concurrency.memory.sites`)."""
        return SiteMap(self.graph, self.report).count(self._hazards(which))

    def count(self, which: str, site: str) -> int:
        """Hazards at one site ("gdn", "attn", "ffn", "moe", "other" or "host")."""
        if site not in SITES:
            raise UnknownNameError("hazard site", site, SITES)
        return self.sites(which)[site]

    def touches(self, which: str, prefix: str) -> bool:
        """Whether some hazard involves a tensor whose name starts with `prefix`."""
        return any(
            t.startswith(prefix)
            for h in self._hazards(which)
            for t in (h.first_tensor, h.second_tensor)
        )

    def shared_block(self, a: str, b: str) -> bool:
        """Whether the engine's plan puts tensors `a` and `b` at the same offset."""
        return self.engine_plan.address(self.graph, a) == self.engine_plan.address(self.graph, b)

    def row(self) -> dict[str, object]:
        engine, alone = self.sites("engine"), self.sites("graph")
        return {
            "model": self.model,
            "batch": self.batch,
            "engine offsets": self.source,
            "engine hazards": len(self.engine),
            **{f"engine: {SITE_LABELS[k]}": v for k, v in engine.items()},
            "decode plan alone": len(self.graph_only),
            **{f"alone: {SITE_LABELS[k]}": v for k, v in alone.items()},
            "engine races on attn_norm": self.touches("engine", "attn_norm-"),
            "decode plan races on attn_norm": self.touches("graph", "attn_norm-"),
        }


def engine_hazards(
    model: str,
    batch: int,
    *,
    layers: int | None = 4,
    n_ctx: int = DEFAULT_N_CTX,
    n_ubatch: int = DEFAULT_N_UBATCH,
) -> EngineHazards:
    """The decode graph of the first `layers` layers (a whole llama.cpp graph), its hazards
    with the engine's offsets (`sequential`, CPU alignment, reserve at n_ubatch tokens) and
    with a plan of the decode graph alone."""
    graph = build_graph(model, "stack", "decode", batch, None, layers, n_ctx=n_ctx)
    report = detect_branches(graph)
    schedule = stream_schedule(graph, report)
    flow = EngineFlow.for_graph(graph, n_ubatch=n_ubatch)
    placed = flow.plan(graph, schedule, report, "sequential", CPU_ALIGNMENT)
    alone = plan_memory(graph, schedule, report, "sequential", CPU_ALIGNMENT)
    return EngineHazards(
        model,
        batch,
        check_plan(placed.plan, schedule).hazards,
        check_plan(alone, schedule).hazards,
        graph,
        placed.plan,
        report,
        placed.source,
    )


def engine_hazard_table(
    models: Iterable[str],
    batches: Sequence[int],
    layers: int | None = 4,
    *,
    n_ctx: int = DEFAULT_N_CTX,
    n_ubatch: int = DEFAULT_N_UBATCH,
) -> list[EngineHazards]:
    return [
        engine_hazards(m, b, layers=layers, n_ctx=n_ctx, n_ubatch=n_ubatch)
        for m in models
        for b in batches
    ]
