"""The race on the GPU: replay every plan of a case many times and count the runs whose
outputs differ (`race_case`); the plans, the checker's expectations, the planted overwrite and
the window wideners are `race_plans`' values.

For one case (a graph, its multi-stream schedule, its plans from `cases.CaseContext`: the
engine's own offsets for 4-layer stacks, the graph's own plan for single layers) every plan is
captured once as a CUDA graph and replayed N times. Every replay starts from the same state: the
arena as a fresh upload leaves it (the graph inputs at their offsets, every other byte 0xFF,
NaN as f32) and the recurrent and KV states as uploaded. The same inputs every time, not fresh
ones: then every correct run is bitwise the same (the kernels have no atomics), any difference
is the plan's, and a read of bytes the replay has not written yet shows as NaN instead of as the
previous replay's identical value. Fresh inputs would need a float64 reference per run and
change no kernel's duration (the kernels are dense), so they would show nothing more.

After each replay the outputs and states are compared ON the device with the first run of the
reference plan (`happens_before`, safe): bitwise (`bitwise_runs`) and by relative error
(`wrong_runs`: above the graph's tolerance, `check.tolerance`). That first run is itself checked
once against the float64 NumPy reference where the graph fits the NumPy executor (single
layers): `safe_vs_float64`. Where a race did not show by itself (widen "auto"), the plan is
replayed again with a widener, in a row of its own that names it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from concurrency.errors import LaceError
from concurrency.execute.gpu.cases import CaseContext, GpuCase
from concurrency.execute.gpu.launch import ARENA, LaunchPlan, build_launch_plan
from concurrency.execute.gpu.race_plans import (
    DEFAULT_DELAY_US,
    DEFAULT_REPEAT,
    WIDENER_KINDS,
    DelayLaunch,
    RaceSubject,
    Widener,
    expectation,
    race_subjects,
    verdict,
    widen,
    widener_for,
)

DEFAULT_REPLAYS = 300
WIDEN_MODES = ("auto", "always", "never")


# ---------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class RaceRow:
    """One plan of one case replayed `runs` times (the race table's row)."""

    case: GpuCase
    plan: str  # "sequential", "interleave (one stream)", "planted", "sequential + delay"
    policy: str
    plan_source: str
    streams: int
    races: int
    uses_after_reuse: int
    runs: int = 0
    bitwise_runs: int = 0
    wrong_runs: int = 0
    widened: str = ""
    max_error: float = math.nan
    tolerance: float = math.nan
    safe_vs_float64: float = math.nan
    replay_us: float = math.nan
    status: str = "ok"
    error: str = ""

    @property
    def expected(self) -> str:
        return expectation(self.races, self.uses_after_reuse)

    @property
    def verdict(self) -> str:
        if self.status != "ok":
            return self.status
        return verdict(self.expected, self.runs, self.wrong_runs, self.bitwise_runs)

    def row(self) -> dict[str, object]:
        c = self.case
        return {
            "model": c.model,
            "config": _json(c.config_doc()),
            "layer": c.layer,
            "layers": c.layers or 0,
            "batch": c.batch,
            "plan": self.plan,
            "policy": self.policy,
            "flow": c.flow,
            "plan_source": self.plan_source,
            "streams": self.streams,
            "races": self.races,
            "uses_after_reuse": self.uses_after_reuse,
            "expected": self.expected,
            "runs": self.runs,
            "bitwise_runs": self.bitwise_runs,
            "wrong_runs": self.wrong_runs,
            "widened": self.widened,
            "max_error": self.max_error,
            "tolerance": self.tolerance,
            "safe_vs_float64": self.safe_vs_float64,
            "replay_us": self.replay_us,
            "verdict": self.verdict,
            "status": self.status,
            "error": self.error,
        }


def _json(doc: object) -> str:
    import json

    return json.dumps(doc, sort_keys=True)


def race_table(rows: Sequence[Mapping[str, object]]) -> list[str]:
    """The race table as text: one line per row (plan, batch, checker verdict, runs,
    differing runs, widened?, max error, verdict), widened rows described below it."""
    head = (
        f"{'case':<27} {'plan':<24} {'str':>3} {'races':>5} {'UAR':>4} {'runs':>5} "
        f"{'bitwise':>7} {'wrong':>5} {'max err':>9} {'widened':>7}  verdict"
    )
    lines = [head]
    notes = []
    for r in rows:
        layer = f"stack×{r['layers']}" if r["layer"] == "stack" else str(r["layer"])
        case = f"{r['model']} {layer} B={r['batch']}"
        err = r["max_error"]
        err_text = "-" if not isinstance(err, float) or math.isnan(err) else f"{err:9.2e}"
        widened = "yes" if r["widened"] else "no"
        lines.append(
            f"{case[:27]:<27} {str(r['plan'])[:24]:<24} {r['streams']:>3} {r['races']:>5} "
            f"{r['uses_after_reuse']:>4} {r['runs']:>5} {r['bitwise_runs']:>7} "
            f"{r['wrong_runs']:>5} {err_text:>9} {widened:>7}  {r['verdict']}"
        )
        if r["widened"]:
            notes.append(f"  widened ({case}, {r['plan']}): {r['widened']}")
        if r["error"]:
            notes.append(f"  {r['status']} ({case}, {r['plan']}): {str(r['error'])[:160]}")
    return lines + notes


# ---------------------------------------------------------------------------- comparing
def relative_error(xp: Any, ref: Any, got: Any) -> Any:
    """‖ref − got‖ / ‖ref‖ over ref's finite elements, inf where got is non-finite and ref is
    not (as `check.relative_errors`), as a 0-d array of `xp` (NumPy or CuPy): no host sync."""
    r = ref.astype(xp.float64)
    g = got.astype(xp.float64)
    finite = xp.isfinite(r)
    bad = xp.any(finite & ~xp.isfinite(g))
    diff = xp.where(finite, r - xp.where(xp.isfinite(g), g, 0.0), 0.0)
    num = xp.sqrt(xp.sum(diff * diff))
    den = xp.maximum(xp.sqrt(xp.sum(xp.where(finite, r, 0.0) ** 2)), 1e-30)
    return xp.where(bad, xp.inf, num / den)


@dataclass(frozen=True)
class ResultView:
    """One result tensor of a run: its stored bits and its values (float), as arrays over the
    run's memory, and the reference's (contiguous copies)."""

    key: str
    dtype: str  # the storage type
    bits: Any
    values: Any  # None for bf16: decoded from the bits at each comparison
    ref_bits: Any
    ref_values: Any


def compare_results(xp: Any, views: Sequence[ResultView]) -> tuple[Any, Any]:
    """(any bit differs, max relative error) over every result, as 0-d arrays of `xp`."""
    differs = xp.zeros((), dtype=bool)
    error = xp.zeros((), dtype=xp.float64)
    for v in views:
        values = bf16_values(xp, v.bits) if v.values is None else v.values
        differs = differs | xp.any(v.bits != v.ref_bits)
        error = xp.maximum(error, relative_error(xp, v.ref_values, values))
    return differs, error


#: Storage type → (type of its bits, type of its values; None: decode bf16 from its bits).
_TYPES = {
    "f32": ("uint32", "float32"),
    "f16": ("uint16", "float16"),
    "bf16": ("uint16", None),
    "i32": ("uint32", "int32"),
    "i64": ("uint64", "int64"),
}


def bf16_values(xp: Any, bits: Any) -> Any:
    """float32 values of bf16 bit patterns (exact)."""
    return (bits.astype(xp.uint32) << 16).view(xp.float32)


class DeviceArrays:
    """Arrays over device memory (CuPy): views at raw addresses, allocations, copies.
    Tests pass a stand-in with the same methods over host memory."""

    def __init__(self, cp: Any) -> None:
        self.cp = cp
        self.xp = cp

    def view(self, address: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: str):  # type: ignore[no-untyped-def]
        cp = self.cp
        itemsize = np.dtype(dtype).itemsize
        span = itemsize + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
        mem = cp.cuda.UnownedMemory(address, max(span, itemsize), self)
        return cp.ndarray(shape, dtype, cp.cuda.MemoryPointer(mem, 0), strides=strides)

    def to_host(self, array: Any) -> np.ndarray:
        return self.cp.asnumpy(array)


# ---------------------------------------------------------------------------- the device run
def _delay_kernel(cp: Any) -> Any:
    source = r"""
    extern "C" __global__ void lace_delay(long long ns) {
        unsigned long long start, now;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
        do {
            asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
        } while (now - start < (unsigned long long)ns);
    }
    """
    return cp.RawKernel(source, "lace_delay")


def race_run(lp: LaunchPlan) -> Any:
    """A `DeviceRun` of `lp` that also binds `DelayLaunch`es (the delay widener)."""
    from concurrency.execute.gpu.runner import DeviceRun

    class RaceRun(DeviceRun):
        def _bind(self, launch: Any) -> Callable[[Any], None]:
            if isinstance(launch, DelayLaunch):
                fn = _delay_kernel(self.cp)
                getattr(fn, "kernel", None)  # compile and load now, not during stream capture
                args = (np.int64(launch.ns),)
                return lambda stream: fn((1, 1, 1), (1, 1, 1), args)
            return super()._bind(launch)

    return RaceRun(lp)


def _copy(cp: Any, dst: int, src: int, nbytes: int, stream: Any | None = None) -> None:
    rt = cp.cuda.runtime
    if stream is None:
        rt.memcpy(dst, src, nbytes, rt.memcpyDeviceToDevice)
    else:
        rt.memcpyAsync(dst, src, nbytes, rt.memcpyDeviceToDevice, stream.ptr)


class LeafStore:
    """Device copies of a run's weights and states as first uploaded: every other run of the
    case starts from them, and every replay restores the states from them."""

    def __init__(self, run: Any) -> None:
        cp = run.cp
        self.cp = cp
        self.weights_from = run  # weights never change: later runs copy them from this run
        self.states: dict[str, tuple[Any, int]] = {}
        for name, spec in run.lp.buffers.items():
            if spec.kind == "state":
                mem = cp.cuda.alloc(max(spec.nbytes, 1))
                _copy(cp, int(mem.ptr), run.base[name], spec.nbytes)
                self.states[name] = (mem, spec.nbytes)

    def load(self, run: Any) -> None:
        """Weights and states into `run` (a run of the same graph and weight type)."""
        for name, spec in run.lp.buffers.items():
            if spec.kind == "weight":
                _copy(self.cp, run.base[name], self.weights_from.base[name], spec.nbytes)
        self.restore_states(run)

    def restore_states(self, run: Any, stream: Any | None = None) -> None:
        for name, (mem, nbytes) in self.states.items():
            _copy(self.cp, run.base[name], int(mem.ptr), nbytes, stream)


def arena_extent(lp: LaunchPlan) -> int:
    """Bytes of the arena the graph touches (an engine-flow buffer may be larger)."""
    ends = [
        ref.ptr.offset_bytes + ref.nbytes for ref in lp.tensors.values() if ref.ptr.buffer == ARENA
    ]
    return max(ends, default=1)


@dataclass
class Prepared:
    """A run ready to replay: inputs uploaded, the arena's first state saved, graph captured."""

    run: Any
    graph_exec: Any
    snapshot: Any
    extent: int

    def restore(self, store: LeafStore, stream: Any) -> None:
        _copy(self.run.cp, self.run.base[ARENA], int(self.snapshot.ptr), self.extent, stream)
        store.restore_states(self.run, stream)


def prepare(run: Any, store: LeafStore | None, graph_inputs: Mapping[str, np.ndarray]) -> Prepared:
    """Upload into `run` (from `store`, or as already uploaded when None): arena 0xFF plus the
    graph inputs, weights and states; save the arena; run eagerly once when cuBLASLt matmuls
    need their warm-up; capture the CUDA graph."""
    cp = run.cp
    if store is not None:
        run.fill_arena()
        store.load(run)
        for name, value in graph_inputs.items():
            run.upload_leaf(name, value)
    cp.cuda.Device().synchronize()
    extent = arena_extent(run.lp)
    snapshot = cp.cuda.alloc(extent)
    _copy(cp, int(snapshot.ptr), run.base[ARENA], extent)
    if run.lp.matmuls():
        run.run_eager()  # nvmath allocates its workspace at the first execution, not in capture
    graph_exec = run.capture()
    return Prepared(run, graph_exec, snapshot, extent)


def result_views(
    arrays: Any, prepared: Prepared, refs: Mapping[str, tuple[Any, Any]] | None
) -> list[ResultView]:
    """Views of every result tensor (outputs and states) over the run's memory, with the
    reference `refs` (None: the views themselves, to take `reference_copies` of)."""
    run = prepared.run
    out = []
    for key in run.lp.result_keys():
        ref = run.lp.tensors.get(key)
        if ref is None:
            continue
        bits_t, values_t = _TYPES[ref.dtype]
        address = run.address(ref.ptr)
        shape, strides = tuple(ref.shape[::-1]), tuple(ref.strides_bytes[::-1])
        bits = arrays.view(address, shape, strides, bits_t)
        values = None if values_t is None else arrays.view(address, shape, strides, values_t)
        ref_bits, ref_values = refs[key] if refs is not None else (bits, values)
        out.append(ResultView(key, ref.dtype, bits, values, ref_bits, ref_values))
    return out


def reference_copies(arrays: Any, views: Sequence[ResultView]) -> dict[str, tuple[Any, Any]]:
    """Contiguous copies (bits, values) of the results as they are now: the reference."""
    xp = arrays.xp
    out = {}
    for v in views:
        bits = v.bits.copy()
        values_t = _TYPES[v.dtype][1]
        out[v.key] = (bits, bf16_values(xp, bits) if values_t is None else bits.view(values_t))
    return out


def replay_and_compare(
    arrays: Any, prepared: Prepared, store: LeafStore, views: Sequence[ResultView], replays: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per replay: restore (arena and states), replay, compare on the device; then one copy of
    the per-replay flags and errors to the host."""
    xp = arrays.xp
    run = prepared.run
    main = run.streams[0]
    with main:  # every array operation on the run's main stream, in order with the replays
        differs = xp.zeros(replays, dtype=bool)
        errors = xp.zeros(replays, dtype=xp.float64)
        for i in range(replays):
            prepared.restore(store, main)
            run.replay(prepared.graph_exec, sync=False)
            d, e = compare_results(xp, views)
            differs[i] = d
            errors[i] = e
    main.synchronize()
    return arrays.to_host(differs).astype(bool), arrays.to_host(errors).astype(float)


def replay_us(prepared: Prepared, count: int = 5) -> float:
    """Median GPU time of a few back-to-back replays (µs); NaN for count 0."""
    if count < 1:
        return math.nan
    return float(np.median(prepared.run.replay_times_us(prepared.graph_exec, count)))


# ---------------------------------------------------------------------------- one case
@dataclass(frozen=True)
class RaceSettings:
    """How a race experiment runs."""

    replays: int = DEFAULT_REPLAYS
    widen: str = "auto"
    widener: str = "delay"
    delay_us: float = DEFAULT_DELAY_US
    repeat: int = DEFAULT_REPEAT
    seed: int = 0
    float64: bool = True
    #: Replays timed (CUDA events) before the compared ones; 0: not timed, and the delay
    #: widener spins `delay_us` only.
    timing_replays: int = 5
    #: Labels of the plans to replay (`race_subjects`); None: every plan.
    plans: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.widen not in WIDEN_MODES:
            raise LaceError(f"widen must be one of {', '.join(WIDEN_MODES)}, not {self.widen!r}")
        if self.widener not in WIDENER_KINDS:
            raise LaceError(
                f"widener must be one of {', '.join(WIDENER_KINDS)}, not {self.widener!r}"
            )
        if self.replays < 1:
            raise LaceError(f"replays must be ≥ 1, got {self.replays}")


class _Inputs:
    """The case's inputs: host values with their float64 reference where the graph fits the
    NumPy executor (single layers), else drawn on the device (`bench.random_device_inputs`)."""

    def __init__(
        self, graph: Any, settings: RaceSettings, weights: str, cache: dict[str, np.ndarray]
    ) -> None:
        from concurrency.execute.numpy_arena import check_size, make_graph_inputs, reference_run

        self.values: dict[str, np.ndarray] | None = None
        self.reference: dict[str, np.ndarray] | None = None
        self.why_no_float64 = "" if settings.float64 else "float64 check not asked for"
        if settings.float64:
            try:
                check_size(graph)
            except LaceError as exc:
                self.why_no_float64 = "no float64 check: " + str(exc).split(";")[0]
        if not self.why_no_float64:
            self.values = host_values(graph, settings.seed, weights, cache)
            self.reference = reference_run(graph, self.values)
            self.graph_inputs = {k: v for k, v in self.values.items() if not graph[k].external}
        else:
            self.graph_inputs = make_graph_inputs(graph, settings.seed)

    def upload(self, run: Any, seed: int) -> None:
        from concurrency.execute.gpu.bench import random_device_inputs

        if self.values is not None:
            run.upload(self.values)
        else:
            random_device_inputs(run, seed)


def host_values(
    graph: Any, seed: int, weights: str, cache: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Inputs for a GPU run and its float64 reference, as `check.reference_inputs` makes them
    (cast weights rounded to `weights`, f16 leaves to f16), with each weight drawn once per
    name, shape and type in `cache` and reused for every batch (the weights of a layer do not
    depend on the batch); states N(0, 0.1²) and the graph inputs drawn per graph."""
    from concurrency.execute.gpu.check import reference_inputs
    from concurrency.execute.gpu.storage import round_to
    from concurrency.execute.numpy_arena import make_graph_inputs
    from concurrency.graph.ir import TensorKind

    def key(name: str) -> str:
        return f"{weights}:{name}:{graph[name].shape}"

    leaves = [n for n in graph.leafs if graph[n].kind is TensorKind.WEIGHT]
    if any(key(n) not in cache for n in leaves):
        drawn = reference_inputs(graph, seed, weights)
        cache.update({key(n): drawn[n] for n in leaves})
    rng = np.random.default_rng(seed + 1)
    graph_inputs = make_graph_inputs(graph, seed)
    values: dict[str, np.ndarray] = {}
    for name in graph.leafs:
        t = graph[name]
        if t.kind is TensorKind.WEIGHT:
            values[name] = cache[key(name)]
        elif t.kind is TensorKind.STATE:
            values[name] = rng.normal(0.0, 0.1, t.shape[::-1])
        else:
            values[name] = graph_inputs[name]
        if t.dtype == "f16":
            values[name] = round_to(values[name], "f16")
    return values


def race_case(
    case: GpuCase,
    settings: RaceSettings,
    *,
    deadline: float = math.inf,
    weights_cache: dict[str, np.ndarray] | None = None,
    arrays: Any = None,
    report: Callable[[str], None] | None = None,
) -> list[RaceRow]:
    """Every plan of `case` (`race_subjects`), replayed `settings.replays` times and compared
    with the first run of the reference plan; wideners where a race did not show (auto) or
    for every racy plan (always). Rows not started by `deadline` (time.monotonic()) say so."""
    from concurrency.execute.gpu import backend
    from concurrency.execute.gpu.check import relative_errors, tolerance

    cp = backend.cupy()
    arrays = DeviceArrays(cp) if arrays is None else arrays
    say = report or (lambda text: None)
    cache = {} if weights_cache is None else weights_cache
    ctx = CaseContext(case)
    graph = ctx.graph
    subjects = race_subjects(ctx)
    if settings.plans is not None:
        unknown = sorted(set(settings.plans) - {s.label for s in subjects})
        if unknown or subjects[0].label not in settings.plans:
            raise LaceError(
                f"plans must include the reference {subjects[0].label!r} and name plans of "
                f"{', '.join(s.label for s in subjects)}; unknown: {unknown}"
            )
        subjects = [s for s in subjects if s.label in settings.plans]
    tol = tolerance(graph, case.weights)
    inputs = _Inputs(graph, settings, case.weights, cache)
    options = {"weight_dtype": case.weights, "matmul": case.matmul, "gdn": case.gdn}
    rows: list[RaceRow] = []

    def base_row(subject: RaceSubject, label: str, widened: str = "") -> RaceRow:
        p = subject.placed
        check = subject.check
        return RaceRow(
            case=case,
            plan=label,
            policy=subject.plan.policy,
            plan_source=(
                f"{p.source}; {subject.planted.describe()}" if subject.planted else p.source
            ),
            streams=p.schedule.n_streams,
            races=len(check.races),
            uses_after_reuse=len(check.uses_after_reuse),
            widened=widened,
            tolerance=tol,
        )

    # the reference: the first run of the safe plan
    ref_subject = subjects[0]
    ref_lp = build_launch_plan(graph, ref_subject.placed.schedule, ref_subject.plan, **options)
    ref_run = race_run(ref_lp)
    store: LeafStore | None = None
    try:
        inputs.upload(ref_run, settings.seed)
        store = LeafStore(ref_run)
        ref_prep = prepare(ref_run, None, inputs.graph_inputs)
        main = ref_run.streams[0]
        with main:  # the runs' streams do not wait for the legacy one: stay on main
            ref_prep.restore(store, main)
            ref_run.replay(ref_prep.graph_exec, sync=False)
            refs = reference_copies(arrays, result_views(arrays, ref_prep, None))
        main.synchronize()
        safe64 = math.nan
        if inputs.reference is not None:
            safe64 = max(relative_errors(inputs.reference, ref_run.read()).values(), default=0.0)
        say(
            f"{case.label}: reference {ref_subject.label} run; vs float64: "
            + (f"{safe64:.2e} (tolerance {tol:g})" if inputs.reference else inputs.why_no_float64)
        )
        ref_prep_views = result_views(arrays, ref_prep, refs)

        def replay_subject(subject: RaceSubject, label: str, widener: Widener | None) -> RaceRow:
            row = base_row(subject, label, widener.describe() if widener else "")
            if time.monotonic() > deadline:
                return dataclasses.replace(row, status="not run (time budget)")
            prepared = None
            run = None
            try:
                if subject is ref_subject and widener is None:
                    prepared, views = ref_prep, ref_prep_views
                else:
                    lp = build_launch_plan(graph, subject.placed.schedule, subject.plan, **options)
                    if widener is not None:
                        lp = widen(lp, widener)
                    run = race_run(lp)
                    assert store is not None
                    prepared = prepare(run, store, inputs.graph_inputs)
                    views = result_views(arrays, prepared, refs)
                t_us = replay_us(prepared, settings.timing_replays)
                differs, errors = replay_and_compare(
                    arrays, prepared, store, views, settings.replays
                )
                row = dataclasses.replace(
                    row,
                    runs=settings.replays,
                    bitwise_runs=int(differs.sum()),
                    wrong_runs=int((errors > tol).sum()),
                    max_error=float(errors.max()) if errors.size else math.nan,
                    safe_vs_float64=safe64,
                    replay_us=t_us,
                )
            except Exception as exc:  # a failed plan is a row; the experiment goes on
                text = " ".join(str(exc).split())[:300]
                row = dataclasses.replace(
                    row, status="error", error=f"{type(exc).__name__}: {text}"
                )
            finally:
                if run is not None:
                    run.free()
            say(f"{case.label}: {label}: {row.verdict} ({row.wrong_runs}/{row.runs} wrong)")
            return row

        for subject in subjects:
            row = replay_subject(subject, subject.label, None)
            rows.append(row)
            wants = settings.widen == "always" or (
                settings.widen == "auto" and row.runs and row.wrong_runs == 0
            )
            if row.races and wants and row.status == "ok":
                lp = build_launch_plan(graph, subject.placed.schedule, subject.plan, **options)
                amount: float = settings.repeat
                if settings.widener == "delay":  # longer than a whole replay: surely late
                    amount = settings.delay_us
                    if not math.isnan(row.replay_us):
                        amount = max(amount, math.ceil(1.5 * row.replay_us / 50.0) * 50.0)
                widener = widener_for(subject.check, lp, settings.widener, amount)
                if widener is not None:
                    label = f"{subject.label} + {widener.kind}"
                    rows.append(replay_subject(subject, label, widener))
    finally:
        ref_run.free()
    return rows
