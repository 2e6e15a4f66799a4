"""The cases the GPU recordings run, as plain values (no CuPy): a graph, its schedules and the
memory plans it runs with.

A `GpuCase` names one graph (preset, layer kind, stack depth, batch) and how it runs (weight
type, matmul path, n_ctx, detector). Every case uses a 256-token vocabulary
(`SMALL_VOCAB`), which keeps the output head of a stack out of the figures (the layers are the
subject), as llama.cpp's bench recipes do. `CaseContext` builds the graph, its fork regions and
its schedules once and places it under any policy:

* one stream: the serial schedule, the policy's plan for it (every plan is safe there);
* multi: the detector's stream schedule, the policy's plan for it.

Offsets come from the engine flow for 4-layer stacks (`memory.engine_flow`: the offsets
llama.cpp runs a whole-model graph with, replayed from the n_ubatch-token reserve graph or
re-planned by each policy's rule) and from the graph's own plan for single layers (`lace plan`'s
defaults). Each placement carries the checker's verdict (`check_plan`) for its schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from concurrency.errors import ConfigError
from concurrency.execute.gpu.launch import GEMV_MAX_COLUMNS
from concurrency.execute.gpu.lowering import GDN_REC_LANES
from concurrency.graph.branches import BranchReport, detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.config import ModelConfig, get_config
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule, serial_schedule, stream_schedule
from concurrency.memory.check import PlanCheck, check_plan
from concurrency.memory.plan import MemoryPlan
from concurrency.memory.policies import DEFAULT_ALIGNMENT, plan_memory

#: The vocabulary of every recorded case: the output head of a stack stays small.
SMALL_VOCAB = 256
DEFAULT_N_CTX = 512
ONE, MULTI = "one", "multi"
SCHEDULES = (ONE, MULTI)


@dataclass(frozen=True)
class GpuCase:
    """One graph of a recording and how it runs on the GPU."""

    model: str
    layer: str
    batch: int
    layers: int | None = None
    weights: str = "bf16"
    matmul: str = "auto"
    gdn: str = "auto"
    n_ctx: int = DEFAULT_N_CTX
    detector: str = "general"

    def __post_init__(self) -> None:
        if self.layer == "stack" and self.layers is None:
            raise ConfigError("a stack case needs its number of layers (e.g. layers=4)")
        if self.layer != "stack" and self.layers is not None:
            object.__setattr__(self, "layers", None)

    @property
    def flow(self) -> str:
        """Where offsets come from: the engine's flow for stacks, the graph's plan else."""
        return "engine" if self.layer == "stack" else "graph"

    @property
    def label(self) -> str:
        """'qwen3.5-27b gdn B=1', 'qwen3.5-27b stack×4 B=16'."""
        layer = f"stack×{self.layers}" if self.layer == "stack" else self.layer
        return f"{self.model} {layer} B={self.batch}"

    @property
    def slug(self) -> str:
        """A file-name part: 'qwen3.5-27b-stack4-b16'."""
        layer = f"stack{self.layers}" if self.layer == "stack" else self.layer
        return f"{self.model}-{layer}-b{self.batch}"

    def config(self) -> ModelConfig:
        return get_config(self.model).replace(n_vocab=SMALL_VOCAB)

    def config_doc(self) -> dict[str, Any]:
        """The `config` field of a manifest entry and a table row: what, beyond the graph's
        name, decides the figures."""
        return {
            "preset": self.model,
            "overrides": {"n_vocab": SMALL_VOCAB},
            "weights": self.weights,
            "matmul": self.matmul,
            "gdn": self.gdn,
            "n_ctx": self.n_ctx,
            "flow": self.flow,
            # how projections and replays ran, which "matmul" and the data alone do not say:
            # recordings before these keys used a GEMV up to 8 columns and did not set the
            # graph inputs again before each timed replay (data/README.md)
            "gemv_max_columns": GEMV_MAX_COLUMNS,
            "replay_inputs": "set before each replay",
            # recordings before this key ran the recurrent kernel with 8 lanes per column
            "gdn_lanes": GDN_REC_LANES,
        }

    @classmethod
    def from_config_doc(
        cls,
        doc: dict[str, Any],
        *,
        layer: str,
        batch: int,
        layers: int | None,
        detector: str = "general",
    ) -> GpuCase:
        """The case a recorded row or entry describes (its `config` plus its graph fields)."""
        overrides = doc.get("overrides", {})
        if overrides != {"n_vocab": SMALL_VOCAB}:
            raise ConfigError(
                f"recorded config overrides {overrides} are not this LACE's "
                f"{{'n_vocab': {SMALL_VOCAB}}}; record again"
            )
        try:
            return cls(
                model=str(doc["preset"]),
                layer=layer,
                batch=int(batch),
                layers=int(layers) if layer == "stack" and layers else None,
                weights=str(doc["weights"]),
                matmul=str(doc["matmul"]),
                gdn=str(doc.get("gdn", "auto")),
                n_ctx=int(doc["n_ctx"]),
                detector=detector,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"a recorded config lacks or garbles {exc}; record it again"
            ) from None

    def graph(self) -> Graph:
        return build_graph(
            self.config(), self.layer, "decode", self.batch, None, self.layers, n_ctx=self.n_ctx
        )


@dataclass(frozen=True)
class Placed:
    """A plan and the schedule it runs under, where its offsets come from, and the checker's
    verdict for that schedule."""

    policy: str
    schedule_kind: str  # ONE or MULTI
    schedule: Schedule = field(repr=False)
    plan: MemoryPlan = field(repr=False)
    source: str
    check: PlanCheck = field(repr=False, compare=False)

    @property
    def races(self) -> int:
        return len(self.check.races)

    @property
    def uses_after_reuse(self) -> int:
        return len(self.check.uses_after_reuse)


class CaseContext:
    """A case's graph, fork regions and schedules (each built once) and its placements."""

    def __init__(self, case: GpuCase, alignment: int = DEFAULT_ALIGNMENT) -> None:
        self.case = case
        self.alignment = alignment
        self.graph = case.graph()

    @cached_property
    def report(self) -> BranchReport:
        return detect_branches(self.graph, self.case.detector)

    def schedule(self, kind: str) -> Schedule:
        if kind == ONE:
            return self._serial
        if kind == MULTI:
            return self._multi
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, not {kind!r}")

    @cached_property
    def _serial(self) -> Schedule:
        return serial_schedule(self.graph)

    @cached_property
    def _multi(self) -> Schedule:
        return stream_schedule(self.graph, self.report)

    @cached_property
    def _flows(self) -> dict[str, Any]:
        from concurrency.memory.engine_flow import EngineFlow

        return {
            ONE: EngineFlow.for_graph(self.graph, detector=self.case.detector, max_streams=1),
            MULTI: EngineFlow.for_graph(self.graph, detector=self.case.detector),
        }

    def place(self, policy: str, kind: str) -> Placed:
        """`policy`'s plan for the `kind` schedule, from the case's flow, checked."""
        schedule = self.schedule(kind)
        if self.case.flow == "engine":
            placed = self._flows[kind].plan(
                self.graph, schedule, self.report, policy, self.alignment
            )
            plan, source = placed.plan, f"engine flow: {placed.source}"
        else:
            plan = plan_memory(self.graph, schedule, self.report, policy, self.alignment)
            source = "graph flow: planned on this graph"
        return Placed(policy, kind, schedule, plan, source, check_plan(plan, schedule))
