"""Calibration from a recording: the measured kernels, launch gaps and step times under `data/`
turned into the inputs of `concurrency.timing.calibrate`, the held-out evaluation, and the
calibrated GPU spec file `lace calibrate` writes (listed in the folder's manifest, kind
`gpu-spec`).

What is read: the one-stream CUPTI timelines (kernel samples and launch gaps; multi-stream
kernels stretch each other, so they do not say what a kernel costs alone) and the replay table
(the step time of every case: the `sequential` plan on one stream, and the `happens_before`
plan on the schedule's streams — the policy the multi-stream timelines were recorded with).
Works without a GPU: nothing here runs a kernel.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from concurrency.data import GPU_SPEC, REPLAYS, DataEntry, load_manifest, load_table
from concurrency.errors import LaceError
from concurrency.timing.calibrate import (
    MULTI,
    ONE,
    HeldOut,
    Split,
    StepCase,
    curve_rows,
    error_summary,
    fit_spec,
    heldout,
    kernel_samples,
    launch_gaps,
    standard_splits,
)
from concurrency.timing.gpus import CALIBRATED_SCHEMA, GpuSpec, get_gpu, load_gpu_spec

if TYPE_CHECKING:
    import pandas as pd

#: The plan whose replay time a multi-stream case is scored against (the timelines' policy).
MULTI_POLICY = "happens_before"
ONE_POLICY = "sequential"


@dataclass(frozen=True)
class CalibrationData:
    """A recording's kernel samples, launch gaps and step cases, and where they came from."""

    folder: Path
    device: str
    samples: pd.DataFrame = field(repr=False)
    gaps: pd.DataFrame = field(repr=False)
    cases: tuple[StepCase, ...] = field(repr=False)
    files: tuple[str, ...]
    #: whether every replay time was taken with the graph inputs set again before each replay
    #: (recordings before that read inputs a later tensor had overwritten; data/README.md)
    replays_set_inputs: bool = True

    @property
    def configs(self) -> frozenset[tuple[str, int]]:
        return frozenset(c.config for c in self.cases)

    @cached_property
    def splits(self) -> tuple[Split, ...]:
        return standard_splits(self.configs)


def load_calibration_data(folder: str | Path) -> CalibrationData:
    """The calibration inputs of the measured recordings the manifest of `folder` lists."""
    import pandas as pd

    from concurrency.execute.gpu.cases import CaseContext, GpuCase
    from concurrency.recorded import WEIGHT_BYTES, recorded_timelines

    folder = Path(folder)
    samples: list[dict[str, object]] = []
    gaps: list[dict[str, object]] = []
    files: list[str] = []
    devices: set[str] = set()
    for t in recorded_timelines(folder):
        if t.entry.streams != 1:
            continue
        e = t.entry
        wb = WEIGHT_BYTES.get(t.case.weights, 2.0)
        samples += kernel_samples(
            t.timeline,
            t.context.graph,
            model=e.model,
            layer=e.layer,
            batch=e.batch,
            weight_bytes_per_param=wb,
        )
        gaps += [{"model": e.model, "batch": e.batch, "gap_us": g} for g in launch_gaps(t.timeline)]
        files.append(e.file)
        devices.add(e.device)
    table = load_table(folder, REPLAYS)
    table = table[(table["status"] == "ok") & (table["source"] == "measured")]
    cases: list[StepCase] = []
    contexts: dict[tuple, Any] = {}
    set_inputs = True
    for row in table.itertuples(index=False):
        if (row.schedule, row.policy) not in ((ONE, ONE_POLICY), (MULTI, MULTI_POLICY)):
            continue
        set_inputs = set_inputs and "replay_inputs" in json.loads(row.config)
        layers = int(row.layers) if row.layer == "stack" else None
        key = (row.config, row.layer, int(row.batch), layers)
        if key not in contexts:
            case = GpuCase.from_config_doc(
                json.loads(row.config),
                layer=row.layer,
                batch=int(row.batch),
                layers=layers,
                detector=row.detector,
            )
            contexts[key] = CaseContext(case)
        ctx = contexts[key]
        cases.append(
            StepCase(
                model=row.model,
                layer=row.layer,
                layers=int(row.layers),
                batch=int(row.batch),
                schedule_kind=row.schedule,
                measured_us=float(row.median_us),
                graph=ctx.graph,
                schedule=ctx.schedule(row.schedule),
                weight_bytes_per_param=WEIGHT_BYTES.get(ctx.case.weights, 2.0),
            )
        )
        files.append(row.file)
        devices.add(row.device)
    if not cases:
        raise LaceError(
            f"{folder} holds no measured replay times; record on a GPU first (`lace record`)"
        )
    if len(devices) != 1:
        raise LaceError(
            f"{folder} mixes recordings of {sorted(devices)}; calibrate one GPU at a time"
        )
    return CalibrationData(
        folder,
        devices.pop(),
        pd.DataFrame(samples),
        pd.DataFrame(gaps, columns=["model", "batch", "gap_us"]),
        tuple(cases),
        tuple(sorted(set(files))),
        set_inputs,
    )


# ------------------------------------------------------------------------------ calibrating
@dataclass(frozen=True)
class Calibration:
    """A recording's calibrated spec (fitted on every configuration) and the held-out
    evaluation of the standard splits (each fitted on its own fit side only)."""

    data: CalibrationData
    base: GpuSpec
    spec: GpuSpec
    heldouts: tuple[HeldOut, ...]

    def rows(self) -> list[dict[str, object]]:
        """Every scored held-out case: split, case, measured, before and after."""
        return [r for h in self.heldouts for r in h.rows]

    def summary(self, by: Sequence[str] = ("split", "schedule")) -> pd.DataFrame:
        return error_summary(self.rows(), by)

    def document(self, command: str) -> dict[str, object]:
        """The file `lace calibrate` writes: the spec, and how and on what it was fitted."""
        return {
            "schema": CALIBRATED_SCHEMA,
            "spec": self.spec.to_dict(),
            "fit": {
                "base": self.base.name,
                "device": self.data.device,
                "command": command,
                "files": list(self.data.files),
                "fitted_on": sorted([m, b] for m, b in self.data.configs),
                "kernel_samples": len(self.data.samples),
                "launch_gaps": len(self.data.gaps),
                "step_cases": len(self.data.cases),
                "policies": {ONE: ONE_POLICY, MULTI: MULTI_POLICY},
                "terms": curve_rows(self.spec),
                "splits": [_split_doc(h) for h in self.heldouts],
                "heldout": self.rows(),
            },
        }


def _split_doc(h: HeldOut) -> dict[str, object]:
    model = h.spec.kernel_model
    assert model is not None
    return {
        "name": h.split.name,
        "description": h.split.description,
        "fit": sorted([m, b] for m, b in h.split.fit),
        "test": sorted([m, b] for m, b in h.split.test),
        "launch_gap_us": h.spec.launch_gap_graph_us,
        "concurrency_efficiency": model.concurrency_efficiency,
        "shared_fixed_fraction": model.shared_fixed_fraction,
    }


def calibrate(
    folder: str | Path,
    *,
    base: str | GpuSpec = "h200",
    splits: Sequence[str] | None = None,
    on_step: Any = None,
) -> Calibration:
    """Fit `base` on the recording in `folder` (every configuration), and evaluate the
    standard held-out splits (`splits` names a subset; default all). `on_step(text)` is told
    what runs (for progress lines)."""
    step = on_step or (lambda _text: None)
    step(f"reading the recording in {folder}")
    data = load_calibration_data(folder)
    base_spec = get_gpu(base)
    chosen = _pick_splits(data.splits, splits)
    step(f"fitting {base_spec.name} on {len(data.samples)} kernels and {len(data.cases)} steps")
    spec = fit_spec(
        base_spec,
        data.samples,
        data.gaps["gap_us"],
        data.cases,
        name=f"{base_spec.name}-calibrated",
    )
    heldouts = []
    for split in chosen:
        step(f"held-out split {split.name}: fit {len(split.fit)}, test {len(split.test)}")
        heldouts += heldout(base_spec, data.samples, data.gaps, data.cases, [split])
    return Calibration(data, base_spec, spec, tuple(heldouts))


def _pick_splits(available: Sequence[Split], names: Sequence[str] | None) -> list[Split]:
    if names is None:
        return list(available)
    by = {s.name: s for s in available}
    unknown = [n for n in names if n not in by]
    if unknown:
        raise LaceError(
            f"unknown held-out split {unknown}; this recording has: {', '.join(by) or 'none'}"
        )
    return [by[n] for n in names]


def default_spec_path(cal: Calibration) -> Path:
    """Where `lace calibrate` writes by default: beside the recording's replay table,
    `<base>-calibrated.json`."""
    replay_files = [f for f in cal.data.files if f.endswith("replays.parquet")]
    where = Path(replay_files[0]).parent if replay_files else Path(".")
    return cal.data.folder / where / f"{cal.base.name}-calibrated.json"


def write_calibration(cal: Calibration, out: str | Path, command: str) -> tuple[Path, DataEntry]:
    """Write the calibrated document to `out`; when `out` lies inside the data folder, list
    it in the folder's manifest (kind gpu-spec). Returns the path and the entry."""
    from concurrency import __version__
    from concurrency.data import write_manifest

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = cal.document(command)
    out.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    replay = _replay_entry(cal.data.folder)
    entry = DataEntry(
        file="",
        kind=GPU_SPEC,
        device=cal.data.device,
        driver=replay.driver if replay else "",
        cuda=replay.cuda if replay else "",
        cupy=replay.cupy if replay else "",
        nvmath=replay.nvmath if replay else "",
        config={"base": cal.base.name, "policies": {ONE: ONE_POLICY, MULTI: MULTI_POLICY}},
        model="",
        layer="",
        layers=0,
        mode="decode",
        batch=0,
        tokens=0,
        policy="",
        streams=0,
        detector="",
        date=replay.date if replay else "",
        command=command,
        lace_version=__version__,
        source="measured",
    )
    try:
        rel = out.resolve().relative_to(cal.data.folder.resolve())
    except ValueError:
        return out, entry
    entry = DataEntry(**{**entry.to_dict(), "file": rel.as_posix()})
    write_manifest(cal.data.folder, [entry])
    return out, entry


def _replay_entry(folder: Path) -> DataEntry | None:
    return next((e for e in load_manifest(folder, check_files=False) if e.kind == REPLAYS), None)


def calibrated_spec_file(folder: str | Path) -> Path | None:
    """The calibrated spec the manifest of `folder` lists (the last one), or None."""
    entries = [e for e in load_manifest(folder, check_files=False) if e.kind == GPU_SPEC]
    return Path(folder) / entries[-1].file if entries else None


def load_calibration_document(path: str | Path) -> tuple[GpuSpec, dict[str, Any]]:
    """A calibrated document's spec and its `fit` section."""
    path = Path(path)
    spec = load_gpu_spec(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    fit = doc.get("fit") if isinstance(doc, dict) else None
    if not isinstance(fit, dict):
        raise LaceError(f"{path} is a plain GPU spec, not one `lace calibrate` wrote (no 'fit')")
    return spec, fit
