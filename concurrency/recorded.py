"""Recordings read back: the measured timelines under `data/`, each with the case it comes from
rebuilt (graph, schedule, plan), so that a notebook can draw the memory map of the very plan
beside its timeline and set the simulator's prediction for the same case next to the
measurement (`concurrency.timing.metrics.compare`). Works on machines without a GPU: nothing
here runs a kernel.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from concurrency.data import TIMELINE, DataEntry, load_manifest
from concurrency.errors import UnknownNameError
from concurrency.execute.gpu.cases import MULTI, ONE, CaseContext, GpuCase, Placed
from concurrency.timing.gpus import GpuSpec
from concurrency.timing.timeline import Timeline

#: Bytes per weight the simulator charges for each executor weight type.
WEIGHT_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0}


@dataclass(frozen=True)
class RecordedTimeline:
    """A measured timeline and its manifest entry."""

    entry: DataEntry
    timeline: Timeline

    @property
    def kind(self) -> str:
        """ONE for a one-stream run, MULTI for the schedule's streams."""
        return ONE if self.entry.streams == 1 else MULTI

    @cached_property
    def case(self) -> GpuCase:
        e = self.entry
        return GpuCase.from_config_doc(
            dict(e.config), layer=e.layer, batch=e.batch, layers=e.layers, detector=e.detector
        )

    @cached_property
    def context(self) -> CaseContext:
        return CaseContext(self.case)

    @cached_property
    def placed(self) -> Placed:
        """The plan and schedule the timeline ran with, rebuilt (same offsets: planning is
        deterministic)."""
        return self.context.place(self.entry.policy, self.kind)

    @property
    def label(self) -> str:
        """'measured on NVIDIA H200, 2026-12-01'."""
        return f"measured on {self.entry.device}, {self.entry.date[:10]}"

    def title(self) -> str:
        c = self.case
        streams = "one stream" if self.kind == ONE else f"{self.entry.streams} streams"
        return f"{c.label}, {self.entry.policy}, {streams}: {self.label}"

    def simulated(self, gpu: str | GpuSpec | None = None) -> Timeline:
        """The simulator's timeline for the same graph and schedule (CUDA-graph launches) on
        `gpu` (a table name or a spec, e.g. a calibrated one; default: the spec named like the
        recording's device)."""
        from concurrency.timing.simulate import simulate

        spec = gpu or gpu_spec_for(self.entry.device) or "h200"
        return simulate(
            self.context.graph,
            self.placed.schedule,
            spec,
            launch="graph",
            weight_bytes_per_param=WEIGHT_BYTES.get(self.case.weights, 2.0),
        )


def gpu_spec_for(device: str) -> str | None:
    """LACE's GPU spec for a device name ('NVIDIA H200' → 'h200'), or None."""
    from concurrency.timing.gpus import get_gpu

    key = re.sub(r"^nvidia\s+", "", device.strip().lower())
    for candidate in (key.replace(" ", ""), key.replace(" ", "-"), key.split(" ")[0]):
        try:
            return get_gpu(candidate).name
        except UnknownNameError:
            continue
    return None


def recorded_timelines(folder: str | Path) -> list[RecordedTimeline]:
    """Every measured timeline the manifest of `folder` lists (none when it lists none)."""
    folder = Path(folder)
    return [
        RecordedTimeline(e, Timeline.load(folder / e.file))
        for e in load_manifest(folder)
        if e.kind == TIMELINE and e.source == "measured"
    ]


def pick(
    timelines: Sequence[RecordedTimeline],
    *,
    layer: str,
    kind: str = MULTI,
    model: str | None = None,
    policy: str | None = None,
) -> RecordedTimeline | None:
    """The recorded timeline of `layer` (and model, policy) on `kind` streams with the
    smallest batch, the latest recording first; None when there is none."""
    found = [
        t
        for t in timelines
        if t.entry.layer == layer
        and t.kind == kind
        and (model is None or t.entry.model == model)
        and (policy is None or t.entry.policy == policy)
    ]
    found.sort(key=lambda t: (t.entry.batch, t.entry.date), reverse=False)
    if not found:
        return None
    batch = found[0].entry.batch
    latest = [t for t in found if t.entry.batch == batch]
    return max(latest, key=lambda t: t.entry.date)


def comparison_rows(
    timelines: Sequence[RecordedTimeline], gpu: str | None = None
) -> list[dict[str, object]]:
    """Measured against simulated, one row per recorded timeline: both makespans, the
    makespan error ((simulated − measured) ÷ measured), the median |kernel error| and the
    kernels only one side has."""
    from concurrency.timing.metrics import compare

    rows = []
    for t in timelines:
        sim = t.simulated(gpu)
        cmp = compare(sim, t.timeline)
        rows.append(
            {
                "case": t.case.label,
                "policy": t.entry.policy,
                "streams": t.entry.streams,
                "measured_on": t.entry.device,
                "simulated_on": sim.meta.device,
                "measured_us": cmp.measured_makespan_us,
                "simulated_us": cmp.simulated_makespan_us,
                "makespan_error": cmp.makespan_error,
                "median_kernel_error": cmp.median_abs_error,
                "kernels": len(cmp.kernels),
                "only_simulated": len(cmp.only_simulated),
                "only_measured": len(cmp.only_measured),
            }
        )
    return rows


@dataclass(frozen=True)
class CaseView:
    """One case to draw: its graph, plan and schedule, and a timeline that is either measured
    (from a recording) or, where nothing is recorded, simulated — `source` says which."""

    context: CaseContext
    placed: Placed
    timeline: Timeline
    title: str
    source: str  # "measured" or "simulated"


def case_view(
    timelines: Sequence[RecordedTimeline],
    layer: str,
    *,
    model: str,
    gpu: str,
    layers: int | None = None,
    policy: str = "happens_before",
) -> CaseView:
    """The recorded multi-stream timeline of `layer` under `policy` with the smallest batch,
    or (nothing recorded) the simulator's timeline of `model`'s same case on `gpu`, labelled
    simulated."""
    from concurrency.timing.simulate import simulate

    found = pick(timelines, layer=layer, policy=policy)
    if found is not None:
        return CaseView(found.context, found.placed, found.timeline, found.title(), "measured")
    ctx = CaseContext(GpuCase(model, layer, 1, layers=layers))
    placed = ctx.place(policy, MULTI)
    timeline = simulate(ctx.graph, placed.schedule, gpu, launch="graph")
    title = f"{ctx.case.label}, {policy}: simulated on {gpu} (not recorded)"
    return CaseView(ctx, placed, timeline, title, "simulated")


def expected_verdicts(model: str, layer: str = "gdn", batch: int = 1) -> list[dict[str, object]]:
    """What the checker demands of each plan of the race experiment, for a case not yet run
    on a GPU: never differ (no hazard), differ in every run (a use after reuse), or depend on
    timing (races)."""
    from concurrency.execute.gpu.race_plans import race_subjects

    ctx = CaseContext(GpuCase(model, layer, batch))
    return [
        {
            "model": model,
            "layer": layer,
            "batch": batch,
            "plan": s.label,
            "streams": s.placed.schedule.n_streams,
            "races": len(s.check.races),
            "uses_after_reuse": len(s.check.uses_after_reuse),
            "expected": "never"
            if not s.check.hazards
            else "every run"
            if s.check.uses_after_reuse
            else "depends on timing",
        }
        for s in race_subjects(ctx)
    ]


def simulated_rows(model: str, gpu: str) -> list[dict[str, object]]:
    """The simulator's one-stream and multi-stream makespans of `model`'s GDN layer and 4-layer
    stack at B = 1 on `gpu` (what notebooks show where nothing is recorded)."""
    from concurrency.timing.metrics import makespan_us
    from concurrency.timing.simulate import simulate

    rows: list[dict[str, object]] = []
    for layer, layers in (("gdn", None), ("stack", 4)):
        ctx = CaseContext(GpuCase(model, layer, 1, layers=layers))
        for kind in (ONE, MULTI):
            schedule = ctx.schedule(kind)
            sim = simulate(ctx.graph, schedule, gpu, launch="graph")
            rows.append(
                {
                    "case": ctx.case.label,
                    "streams": schedule.n_streams,
                    "simulated_on": gpu,
                    "simulated_us": makespan_us(sim),
                    "source": "simulated",
                }
            )
    return rows
