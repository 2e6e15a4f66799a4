"""Which races the seed's concurrency would really hit in llama.cpp.

The hazard checker run on the engine's own offsets (the reserve plan replayed into the decode
graph, `concurrency.memory.engine_flow`) under the multi-stream schedule, next to what a plan of the
decode graph alone predicts — per layer kind, model and batch size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import stream_schedule
from concurrency.memory.check import Hazard, check_plan
from concurrency.memory.engine_flow import engine_flow_plan
from concurrency.memory.plan import MemoryPlan
from concurrency.memory.policies import plan_memory

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

    def pairs(self, which: str = "engine", layer: int | None = None) -> set[tuple[str, str]]:
        """(first node, second node) of each hazard, optionally of one layer's nodes only."""
        hazards = self.engine if which == "engine" else self.graph_only
        return {
            (h.first_node, h.second_node)
            for h in hazards
            if layer is None or self.graph[h.first_node].layer == layer
        }

    def count(self, which: str, kind: str) -> int:
        """Hazards whose nodes lie in layers of `kind` ("gdn" or "attn")."""
        hazards = self.engine if which == "engine" else self.graph_only
        cfg = self.graph.config
        n = 0
        for h in hazards:
            layer = self.graph[h.first_node].layer
            if layer is None or cfg is None:
                continue
            n += (cfg.is_recurrent(layer)) == (kind == "gdn")
        return n

    def touches(self, which: str, prefix: str) -> bool:
        """Whether some hazard involves a tensor whose name starts with `prefix`."""
        hazards = self.engine if which == "engine" else self.graph_only
        return any(t.startswith(prefix) for h in hazards for t in (h.first_tensor, h.second_tensor))

    def shared_block(self, a: str, b: str) -> bool:
        """Whether the engine's plan puts tensors `a` and `b` at the same offset."""
        return self.engine_plan.address(self.graph, a) == self.engine_plan.address(self.graph, b)

    def row(self) -> dict[str, object]:
        return {
            "model": self.model,
            "batch": self.batch,
            "engine: GDN hazards": self.count("engine", "gdn"),
            "engine: attention hazards": self.count("engine", "attn"),
            "decode plan alone: GDN": self.count("graph", "gdn"),
            "decode plan alone: attention": self.count("graph", "attn"),
            "engine races on attn_norm": self.touches("engine", "attn_norm-"),
            "decode plan races on attn_norm": self.touches("graph", "attn_norm-"),
        }


def _setup(graph: Graph):  # type: ignore[no-untyped-def]
    report = detect_branches(graph)
    return graph, stream_schedule(graph, report), report


def engine_hazards(
    model: str, batch: int, *, layers: int | None = 4, n_ctx: int = 512
) -> EngineHazards:
    """The decode graph of the first `layers` layers (a whole llama.cpp graph), its hazards
    with the engine's offsets and with a plan of the decode graph alone."""
    graph = build_graph(model, "stack", "decode", batch, None, layers, n_ctx=n_ctx)
    graph, schedule, report = _setup(graph)
    engine = engine_flow_plan(graph, schedule, report, "sequential", CPU_ALIGNMENT).plan
    alone = plan_memory(graph, schedule, report, "sequential", CPU_ALIGNMENT)
    return EngineHazards(
        model,
        batch,
        check_plan(engine, schedule).hazards,
        check_plan(alone, schedule).hazards,
        graph,
        engine,
    )


def engine_hazard_table(
    models: Iterable[str], batches: Sequence[int], layers: int | None = 4
) -> list[EngineHazards]:
    return [engine_hazards(m, b, layers=layers) for m in models for b in batches]
