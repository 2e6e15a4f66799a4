"""One choice of model, layer, batch, policy, streams and GPU → everything the explorer shows:
the graph, its schedule, the memory plan and its hazards, the simulated timeline, metrics.

Pure (no drawing): the dashboard and tests call `explore`; the charts are built from its result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule, stream_schedule
from concurrency.memory.check import Hazard
from concurrency.memory.compare import compare_policies
from concurrency.memory.plan import MemoryPlan
from concurrency.timing.gpus import get_gpu
from concurrency.timing.metrics import summary
from concurrency.timing.simulate import simulate
from concurrency.timing.timeline import Timeline


@dataclass(frozen=True)
class Choice:
    """What the user picked."""

    model: str = "qwen3.5-27b"
    layer: str = "gdn"
    mode: str = "decode"
    batch: int = 1
    tokens: int | None = None
    policy: str = "sequential"
    max_streams: int = 8
    gpu: str = "h100"
    flow: str | None = None  # None: the engine's flow for stacks, the graph's otherwise
    layers: int | None = None  # decoder layers of a "stack" (None: the whole model)


@dataclass(frozen=True)
class ExplorerView:
    """Everything derived from one choice."""

    choice: Choice
    graph: Graph
    schedule: Schedule
    plan: MemoryPlan
    hazards: tuple[Hazard, ...]
    lower_bound_bytes: int
    timeline: Timeline
    serial: Timeline
    measured: tuple[Timeline, ...] = ()

    @property
    def streams_used(self) -> int:
        """Streams that run at least one kernel (the schedule may allow more)."""
        return len({s.stream for s in self.timeline.spans}) or 1

    def metrics(self) -> dict[str, object]:
        """One table row: memory (arena, bound, hazards) and time (makespan, overlap, speedup)."""
        row = summary(self.timeline, serial=self.serial)
        row |= {
            "policy": self.plan.policy,
            "arena_bytes": self.plan.arena_bytes,
            "lower_bound_bytes": self.lower_bound_bytes,
            "hazards": len(self.hazards),
        }
        return row


def explore(choice: Choice, data: Path | None = None) -> ExplorerView:
    """Build, schedule, plan, check and simulate the chosen graph; with `data` (a folder with a
    manifest, like the repository's data/), also load the measured timelines of the same
    graph (model, layer, mode, batch) recorded there."""
    get_gpu(choice.gpu)  # a bad GPU name fails here, before any work
    graph = build_graph(
        choice.model, choice.layer, choice.mode, choice.batch, choice.tokens, choice.layers
    )
    report = detect_branches(graph)
    schedule = stream_schedule(graph, report, choice.max_streams)
    (result,) = compare_policies(
        graph, schedule, report, [choice.policy], flow=choice.flow, max_streams=choice.max_streams
    )
    timeline = simulate(graph, schedule, choice.gpu)
    serial = simulate(graph, stream_schedule(graph, report, 1), choice.gpu)
    return ExplorerView(
        choice,
        graph,
        schedule,
        result.plan,
        result.hazards,
        result.lower_bound_bytes,
        timeline,
        serial,
        measured_timelines(choice, data) if data is not None else (),
    )


def measured_timelines(choice: Choice, data: Path) -> tuple[Timeline, ...]:
    """Timelines recorded on a GPU (source "measured") under `data` for the chosen graph (for a
    stack: the same number of layers); none when the folder has no manifest."""
    from concurrency.data import TIMELINE, load_manifest

    if not (Path(data) / "manifest.json").is_file():
        return ()
    out = []
    for entry in load_manifest(Path(data), check_files=False):
        same = entry.kind == TIMELINE and (entry.model, entry.layer, entry.mode, entry.batch) == (
            choice.model,
            choice.layer,
            choice.mode,
            choice.batch,
        )
        if not same or (choice.layer == "stack" and entry.layers != (choice.layers or 0)):
            continue
        timeline = Timeline.load(Path(data) / entry.file)
        if timeline.meta.source == "measured":
            out.append(timeline)
    return tuple(out)
