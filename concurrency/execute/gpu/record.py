"""`lace record`: a sweep on the GPU, written under `data/` for machines without one.

Two stages, each with its own time budget (work not started by then is listed, not lost
silently):

1. the race experiment (`race.race_case`) on `race_cases`: every plan of each case replayed N
   times, compared with the reference; one table, `race.parquet`;
2. the replay sweep on `sweep_groups`: for each graph (layer or 4-layer stack of each model,
   decode at each batch), the one-stream run (the serial schedule, `sequential`: ggml without
   streams) and the multi-stream run of every policy (the schedule's streams), all captured as
   CUDA graphs and timed side by side in alternating rounds (`bench.alternating_times`); one
   table, `replays.parquet`, with medians, the HBM floor, the achieved bandwidth and the
   checker's verdict per row; and for the timeline batches a measured CUPTI timeline of the
   one-stream run and of the multi-stream `happens_before` run (`timelines/*.parquet`).

Groups run in priority order (the timeline batches first), so a short budget still covers every
model and layer kind. Every file is listed in the folder's `manifest.json` (`concurrency.data`)
with the device, driver, CUDA, CuPy and nvmath versions, the config, policy, schedule, command,
date and LACE version. A recording is a few hundred kilobytes.
"""

from __future__ import annotations

import datetime
import gc
import json
import math
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from concurrency.data import RACE, REPLAYS, TIMELINE, DataEntry, write_manifest
from concurrency.errors import LaceError, MissingToolError
from concurrency.execute.gpu.cases import MULTI, ONE, CaseContext, GpuCase
from concurrency.execute.gpu.race import RaceRow, RaceSettings, race_case
from concurrency.memory.policies import POLICIES
from concurrency.timing.timeline import Timeline

DEFAULT_MODELS = ("qwen3.5-27b", "qwen3.5-0.8b")
DEFAULT_LAYER_KINDS = ("gdn", "attn", "stack")
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_TIMELINE_BATCHES = (1, 8, 64)
DEFAULT_RACE_BATCHES = (1, 4, 16)
ONE_STREAM_POLICY = "sequential"
TIMELINE_POLICY = "happens_before"
STAGES = ("race", "replays")
#: Seconds after which a stage starts no new work: with the kernels' compile and the last piece
#: of work started, the whole recording takes about 6 minutes on an H200.
DEFAULT_RACE_BUDGET_S = 120.0
DEFAULT_BUDGET_S = 230.0


@dataclass(frozen=True)
class RecordSettings:
    """What `lace record` runs (every default is the issue's sweep)."""

    models: tuple[str, ...] = DEFAULT_MODELS
    layer_kinds: tuple[str, ...] = DEFAULT_LAYER_KINDS
    stack_layers: int = 4
    batches: tuple[int, ...] = DEFAULT_BATCHES
    policies: tuple[str, ...] = tuple(POLICIES)
    timeline_batches: tuple[int, ...] = DEFAULT_TIMELINE_BATCHES
    weights: str = "bf16"
    matmul: str = "auto"
    n_ctx: int = 512
    detector: str = "general"
    rounds: int = 5
    per_round: int = 20
    budget_s: float = DEFAULT_BUDGET_S
    seed: int = 0
    stages: tuple[str, ...] = STAGES
    race_models: tuple[str, ...] = ("qwen3.5-27b",)
    race_layer_kinds: tuple[str, ...] = DEFAULT_LAYER_KINDS
    race_batches: tuple[int, ...] = DEFAULT_RACE_BATCHES
    race: RaceSettings = field(default_factory=RaceSettings)
    race_budget_s: float = DEFAULT_RACE_BUDGET_S

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise LaceError(f"unknown stages {unknown}; choose from {', '.join(STAGES)}")
        bad = [p for p in self.policies if p not in POLICIES]
        if bad:
            raise LaceError(f"unknown policies {bad}; choose from {', '.join(POLICIES)}")
        if self.rounds < 1 or self.per_round < 1:
            raise LaceError("rounds and per-round replays must be ≥ 1")

    def case(self, model: str, layer: str, batch: int) -> GpuCase:
        return GpuCase(
            model=model,
            layer=layer,
            batch=batch,
            layers=self.stack_layers if layer == "stack" else None,
            weights=self.weights,
            matmul=self.matmul,
            n_ctx=self.n_ctx,
            detector=self.detector,
        )

    def config_doc(self) -> dict[str, Any]:
        """The `config` of the table entries: what every case shares."""
        doc = self.case(self.models[0], "gdn", 1).config_doc()
        doc.pop("preset")
        doc.pop("flow")
        doc["flow"] = "engine for stacks, graph for single layers"
        doc["stack_layers"] = self.stack_layers
        return doc


# ---------------------------------------------------------------------------- the cases
@dataclass(frozen=True)
class SweepGroup:
    """One graph of the replay sweep: its runs (schedule kind, policy), timed side by side,
    and which of them get a measured timeline."""

    case: GpuCase
    runs: tuple[tuple[str, str], ...]
    timelines: tuple[tuple[str, str], ...]


def _batch_order(batches: Sequence[int], first: Sequence[int]) -> list[int]:
    """Batches in priority order: the GEMV ones (at most GEMV_MAX_COLUMNS sequences: no
    cuBLASLt plans to make, quick to set up) before the others, the timeline batches first in
    each part."""
    from concurrency.execute.gpu.launch import GEMV_MAX_COLUMNS

    def part(wanted: Sequence[int]) -> list[int]:
        return [b for b in first if b in wanted] + [b for b in wanted if b not in first]

    return part([b for b in batches if b <= GEMV_MAX_COLUMNS]) + part(
        [b for b in batches if b > GEMV_MAX_COLUMNS]
    )


def sweep_groups(settings: RecordSettings) -> list[SweepGroup]:
    """Every graph of the sweep in priority order (`_batch_order`: B = 1, 2, then 8, 64, 4,
    16, 32 by default), every model and layer kind at each batch."""
    runs = ((ONE, ONE_STREAM_POLICY), *((MULTI, p) for p in settings.policies))
    with_timelines = ((ONE, ONE_STREAM_POLICY), (MULTI, TIMELINE_POLICY))
    groups = []
    for batch in _batch_order(settings.batches, settings.timeline_batches):
        for model in settings.models:
            for layer in settings.layer_kinds:
                timelines = (
                    tuple(t for t in with_timelines if t in runs)
                    if batch in settings.timeline_batches
                    else ()
                )
                groups.append(SweepGroup(settings.case(model, layer, batch), runs, timelines))
    return groups


def race_cases(settings: RecordSettings) -> list[GpuCase]:
    """The race experiment's cases, by batch, then model, then layer kind."""
    return [
        settings.case(model, layer, batch)
        for batch in settings.race_batches
        for model in settings.race_models
        for layer in settings.race_layer_kinds
    ]


def plan_summary(settings: RecordSettings) -> dict[str, Any]:
    """What a run would do (`lace record --dry-run`): the cases, runs and timelines."""
    groups = sweep_groups(settings) if "replays" in settings.stages else []
    races = race_cases(settings) if "race" in settings.stages else []
    return {
        "race_cases": [c.label for c in races],
        "race_replays": settings.race.replays,
        "groups": [g.case.label for g in groups],
        "runs": sum(len(g.runs) for g in groups),
        "timelines": sum(len(g.timelines) for g in groups),
        "replays_per_run": settings.rounds * settings.per_round,
        "budget_s": {"race": settings.race_budget_s, "replays": settings.budget_s},
    }


# ---------------------------------------------------------------------------- the machine
def _version_text(code: int) -> str:
    """CUDA's integer versions (13000 → '13.0', 12080 → '12.8')."""
    return f"{code // 1000}.{code % 1000 // 10}"


def environment() -> dict[str, str]:
    """The device, driver, CUDA runtime, CuPy and nvmath-python versions of this machine."""
    from concurrency.execute.gpu import backend

    cp = backend.cupy()
    rt = cp.cuda.runtime
    driver = ""
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        driver = smi.stdout.strip().splitlines()[0] if smi.stdout.strip() else ""
    except (OSError, subprocess.SubprocessError):
        pass
    driver = driver or f"CUDA {_version_text(rt.driverGetVersion())} driver API"
    try:
        nvmath = metadata.version("nvmath-python")
    except metadata.PackageNotFoundError:
        nvmath = "not installed"
    return {
        "device": backend.device_name(),
        "driver": driver,
        "cuda": _version_text(rt.runtimeGetVersion()),
        "cupy": str(cp.__version__),
        "nvmath": nvmath,
    }


def recording_name(device: str, date: str, taken: Iterable[str] = ()) -> str:
    """'nvidia-h200-2026-12-01' (with -2, -3, … when taken; a remark in parentheses after the
    device name is left out)."""
    slug = re.sub(r"[^a-z0-9]+", "-", device.split("(")[0].lower()).strip("-") or "gpu"
    name = f"{slug}-{date}"
    taken = set(taken)
    k = 2
    out = name
    while out in taken:
        out = f"{name}-{k}"
        k += 1
    return out


# ---------------------------------------------------------------------------- stage 1: race
def run_race(
    settings: RecordSettings,
    say: Callable[[str], None],
    tick: Callable[[list[RaceRow]], None],
) -> list[RaceRow]:
    """The race experiment on every race case, inside its budget; `tick(rows so far)` after
    each case."""
    deadline = time.monotonic() + settings.race_budget_s
    weights: dict[str, Any] = {}
    rows: list[RaceRow] = []
    for case in race_cases(settings):
        if time.monotonic() > deadline:
            rows.append(_case_row(case, "not run (time budget)", ""))
            tick(rows)
            continue
        try:
            rows += race_case(
                case, settings.race, deadline=deadline, weights_cache=weights, report=say
            )
        except MissingToolError:
            raise
        except Exception as exc:  # the case's reference failed: one row says why
            rows.append(_case_row(case, "error", _one_line(exc)))
        finally:
            _release_memory()
        tick(rows)
    return rows


def _case_row(case: GpuCase, status: str, error: str) -> RaceRow:
    return RaceRow(case, "(all plans)", "", "", 0, 0, 0, status=status, error=error)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def _release_memory() -> None:
    gc.collect()
    try:
        import cupy as cp

        cp.get_default_memory_pool().free_all_blocks()
    except Exception:  # not CuPy (a test's stand-in), or nothing to free
        pass


# ---------------------------------------------------------------------------- stage 2: replays
@dataclass
class _Run:
    kind: str
    policy: str
    placed: Any = None
    run: Any = None
    graph_exec: Any = None
    floor_bytes: int = 0
    error: str = ""


def record_group(
    group: SweepGroup, settings: RecordSettings
) -> tuple[list[dict[str, Any]], list[tuple[str, str, Any]]]:
    """Time every run of one graph side by side; (table rows, [(kind, policy, Timeline)])."""
    from concurrency.execute.gpu.bench import (
        ReplayStats,
        alternating_times,
        hbm_floor_bytes,
        random_device_inputs,
    )
    from concurrency.execute.gpu.launch import build_launch_plan
    from concurrency.execute.gpu.runner import DeviceRun

    case = group.case
    ctx = CaseContext(case)
    runs = [_Run(kind, policy) for kind, policy in group.runs]
    try:
        for r in runs:
            try:
                r.placed = ctx.place(r.policy, r.kind)
                lp = build_launch_plan(
                    ctx.graph,
                    r.placed.schedule,
                    r.placed.plan,
                    weight_dtype=case.weights,
                    matmul=case.matmul,
                    gdn=case.gdn,
                )
                r.floor_bytes = hbm_floor_bytes(lp)
                r.run = DeviceRun(lp)
                random_device_inputs(r.run, settings.seed)
                if lp.matmuls():
                    r.run.run_eager()  # nvmath allocates its workspace here, not in capture
                r.graph_exec = r.run.capture()
            except MissingToolError:
                raise
            except Exception as exc:
                r.error = _one_line(exc)
        ready = [r for r in runs if not r.error]
        times = (
            alternating_times(
                [(r.run, r.graph_exec) for r in ready], settings.rounds, settings.per_round
            )
            if ready
            else []
        )
        stats = {id(r): ReplayStats.of(t, r.floor_bytes) for r, t in zip(ready, times, strict=True)}
        timelines = _timelines(group, runs)
        rows = [_replay_row(case, r, stats.get(id(r)), settings) for r in runs]
        return rows, timelines
    finally:
        for r in runs:
            if r.run is not None:
                r.run.free()
        _release_memory()


def _timelines(group: SweepGroup, runs: Sequence[_Run]) -> list[tuple[str, str, Any]]:
    """A measured CUPTI timeline of each of the group's timeline runs (one replay of a graph
    captured inside the recording); a failure leaves that timeline out with its reason."""
    from concurrency.execute.gpu.measure import measure_timeline

    out = []
    for kind, policy in group.timelines:
        r = next((r for r in runs if (r.kind, r.policy) == (kind, policy) and not r.error), None)
        if r is None:
            continue
        try:
            out.append((kind, policy, measure_timeline(r.run, "graph")))
        except Exception as exc:
            out.append((kind, policy, _one_line(exc)))
    return out


def _replay_row(
    case: GpuCase, r: _Run, stats: Any | None, settings: RecordSettings
) -> dict[str, Any]:
    placed = r.placed
    row: dict[str, Any] = {
        "model": case.model,
        "config": json.dumps(case.config_doc(), sort_keys=True),
        "layer": case.layer,
        "layers": case.layers or 0,
        "mode": "decode",
        "batch": case.batch,
        "tokens": 1,
        "n_ctx": case.n_ctx,
        "policy": r.policy,
        "flow": case.flow,
        "plan_source": placed.source if placed else "",
        "schedule": r.kind,
        "streams": placed.schedule.n_streams if placed else 0,
        "detector": case.detector,
        "weights": case.weights,
        "matmul": case.matmul,
        "races": placed.races if placed else 0,
        "uses_after_reuse": placed.uses_after_reuse if placed else 0,
        "arena_bytes": placed.plan.arena_bytes if placed else 0,
        "replays": 0,
        "rounds": settings.rounds,
        "median_us": math.nan,
        "p10_us": math.nan,
        "p90_us": math.nan,
        "floor_bytes": r.floor_bytes,
        "floor_us": math.nan,
        "bandwidth_gb_s": math.nan,
        "floor_ratio": math.nan,
        "timeline": "",
        "status": "error" if r.error else "ok",
        "error": r.error,
    }
    if stats is not None:
        row |= {
            "replays": stats.replays,
            "median_us": stats.median_us,
            "p10_us": stats.p10_us,
            "p90_us": stats.p90_us,
            "floor_us": stats.floor_us,
            "bandwidth_gb_s": stats.bandwidth_gb_s,
            "floor_ratio": stats.floor_ratio,
        }
    return row


def skipped_rows(group: SweepGroup, settings: RecordSettings) -> list[dict[str, Any]]:
    """The rows of a group the budget left out (status says so)."""
    rows = []
    for kind, policy in group.runs:
        row = _replay_row(group.case, _Run(kind, policy), None, settings)
        rows.append(row | {"status": "not run (time budget)"})
    return rows


# ---------------------------------------------------------------------------- writing
@dataclass
class Recording:
    """What a `lace record` run produced, and where it wrote it."""

    folder: Path
    name: str
    env: Mapping[str, str]
    date: str
    command: str
    race_rows: list[dict[str, Any]] = field(default_factory=list)
    replay_rows: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


#: Same-stream overlaps up to this are taken for timestamp rounding and not reported.
OVERLAP_SLACK_US = 0.01


def overlap_notes(label: str, timeline: Timeline) -> list[str]:
    """One note when consecutive kernels of a stream overlap in a measured timeline, naming the
    worst pair. The kernels themselves cannot overlap (the captured graph orders them, and the
    records belong to their nodes: tests/test_gpu_timeline.py); on the H200 CUPTI's stamps of
    dependent kernels sometimes disagree with their order by up to ~1.1 µs, so the note says how
    far the stamps are out of order, not that a stream ran two kernels at once."""
    from concurrency.timing.metrics import stream_overlaps

    found = stream_overlaps(timeline, OVERLAP_SLACK_US)
    if not found:
        return []
    w = found[0]
    return [
        f"{label}: {len(found)} same-stream kernel pair(s) overlap in CUPTI time (stamps out "
        f"of order), the most {w.overlap_us:.2f} µs ({w.first_node} → {w.second_node} on "
        f"stream {w.stream})"
    ]


def _entry(
    rec: Recording, settings: RecordSettings, file: str, kind: str, **graph: Any
) -> DataEntry:
    from concurrency import __version__

    fields = {
        "model": "",
        "layer": "",
        "layers": 0,
        "mode": "",
        "batch": 0,
        "tokens": 0,
        "policy": "",
        "streams": 0,
        "config": settings.config_doc(),
    } | graph
    return DataEntry(
        file=file,
        kind=kind,
        device=rec.env["device"],
        driver=rec.env["driver"],
        cuda=rec.env["cuda"],
        cupy=rec.env["cupy"],
        nvmath=rec.env["nvmath"],
        detector=settings.detector,
        date=rec.date,
        command=rec.command,
        lace_version=__version__,
        source="measured",
        **fields,
    )


def write_table(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(list(rows)).to_parquet(path, index=False)


def save_timeline(
    rec: Recording, settings: RecordSettings, case: GpuCase, kind: str, policy: str, timeline: Any
) -> tuple[str, DataEntry]:
    """Write a measured timeline under the recording; its file name and manifest entry."""
    file = f"{rec.name}/timelines/{case.slug}-{policy}-{kind}.parquet"
    target = rec.folder / file
    target.parent.mkdir(parents=True, exist_ok=True)
    timeline.save(target)
    m = timeline.meta
    entry = _entry(
        rec,
        settings,
        file,
        TIMELINE,
        model=m.model,
        layer=m.layer,
        layers=case.layers or 0,
        mode=m.mode,
        batch=m.batch,
        tokens=m.tokens,
        policy=m.policy,
        streams=m.streams,
        config=case.config_doc(),
    )
    return file, entry


# ---------------------------------------------------------------------------- the command
def record(
    settings: RecordSettings,
    out: Path,
    command: str,
    *,
    say: Callable[[str], None] = lambda text: None,
    meter: Callable[[str, int], Any] | None = None,
) -> Recording:
    """Run the stages and write their files under `out/<recording>/` and `out/manifest.json`.

    say: one line per finished piece of work (for a log); meter(what, total): a progress
    counter with `advance()` (the CLI's), or None."""
    env = environment()
    now = datetime.datetime.now(datetime.timezone.utc)
    out = Path(out)
    taken = [p.name for p in out.iterdir()] if out.is_dir() else []
    rec = Recording(
        folder=out,
        name=recording_name(env["device"], now.date().isoformat(), taken),
        env=env,
        date=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        command=command,
    )
    if "race" in settings.stages:
        counter = meter("race experiment", len(race_cases(settings))) if meter else None
        file = f"{rec.name}/race.parquet"
        rec.files.append(file)

        def flush(rows: list[RaceRow]) -> None:  # after every case: a stopped run keeps it
            rec.race_rows = [r.row() for r in rows]
            write_table(rec.race_rows, out / file)
            write_manifest(out, [_entry(rec, settings, file, RACE)])
            if counter:
                counter.advance()

        run_race(settings, say, flush)
    if "replays" in settings.stages:
        _replay_stage(rec, settings, say, meter)
    return rec


def _replay_stage(
    rec: Recording,
    settings: RecordSettings,
    say: Callable[[str], None],
    meter: Callable[[str, int], Any] | None,
) -> None:
    """The sweep, group by group; the table and the manifest are rewritten after every group,
    so a run stopped from outside keeps what it measured."""
    groups = sweep_groups(settings)
    if not groups:
        return
    counter = meter("replay sweep", len(groups)) if meter else None
    deadline = time.monotonic() + settings.budget_s
    table = f"{rec.name}/replays.parquet"
    rec.files.append(table)
    for group in groups:
        entries = [_entry(rec, settings, table, REPLAYS)]
        if time.monotonic() > deadline:
            rec.replay_rows += skipped_rows(group, settings)
        else:
            rows, timelines = record_group(group, settings)
            for kind, policy, timeline in timelines:
                if isinstance(timeline, str):
                    rec.notes.append(f"{group.case.label} {kind} {policy}: {timeline}")
                    continue
                file, entry = save_timeline(rec, settings, group.case, kind, policy, timeline)
                rec.notes += overlap_notes(f"{group.case.label} {kind} {policy}", timeline)
                rec.files.append(file)
                entries.append(entry)
                for row in rows:
                    if (row["schedule"], row["policy"]) == (kind, policy):
                        row["timeline"] = file
            rec.replay_rows += rows
            say(_group_line(group, rows))
        write_table(rec.replay_rows, rec.folder / table)
        write_manifest(rec.folder, entries)
        if counter:
            counter.advance()


def _group_line(group: SweepGroup, rows: Sequence[Mapping[str, Any]]) -> str:
    one = next((r for r in rows if r["schedule"] == ONE and r["status"] == "ok"), None)
    multi = next(
        (
            r
            for r in rows
            if r["schedule"] == MULTI and r["policy"] == TIMELINE_POLICY and r["status"] == "ok"
        ),
        None,
    )
    errors = sum(r["status"] != "ok" for r in rows)
    text = f"{group.case.label}: "
    if one and multi:
        text += (
            f"one {one['median_us']:.1f} µs, multi ({TIMELINE_POLICY}) {multi['median_us']:.1f}"
            f" µs, ×{one['median_us'] / multi['median_us']:.3f}"
        )
    return text + (f"; {errors} run(s) failed" if errors else "")


__all__ = [
    "RecordSettings",
    "Recording",
    "plan_summary",
    "race_cases",
    "record",
    "sweep_groups",
]
