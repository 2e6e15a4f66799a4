"""Calibration: fit the simulator's kernel model on measured runs, and score it on runs it
was not fitted on.

Inputs (built from a recording by `concurrency.calibration`, or by hand in tests):

- kernel samples: one row per kernel of a one-stream measured timeline (KERNEL_COLUMNS):
  its configuration (model, batch), family (`cost.op_class`), bytes, FLOPs, columns, outputs,
  whether it runs on tensor cores, and its measured duration. Multi-stream kernels are left
  out: co-running kernels stretch each other, so their durations do not say what a kernel
  costs alone.
- launch gaps: the idle time between consecutive kernels of a one-stream timeline.
- step cases (`StepCase`): a graph, the schedule it ran with and its measured step time (the
  median of many CUDA-graph replays), one stream or the schedule's streams.

What is fitted (`fit_spec`), all on the fit side of a split only:

1. per family a `ClassCurve` (concurrency.timing.kernel_model): non-negative least squares on
   the relative error of each kernel (every kernel counts alike whatever its size). The GEMV's
   memory and arithmetic overlap (max of the two terms, found by a search over the two rates);
   every other family adds its terms. A family with fewer than MIN_SAMPLES kernels or sizes
   falls back to the default curve fitted on every kernel together.
2. the launch gap of CUDA-graph replay: the median gap between kernels on one stream.
3. the concurrency efficiency η: a search that minimises the squared log error of the
   multi-stream step times of the fit side.

`heldout` fits on each split's fit configurations and scores the step cases of its test
configurations only (a configuration is a (model, batch) pair; the function refuses a split
whose sides share one), before (the datasheet spec) and after (the fitted one).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from concurrency.errors import LaceError
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.timing.cost import OP_CLASSES, graph_costs
from concurrency.timing.gpus import GpuSpec, get_gpu
from concurrency.timing.kernel_model import (
    DEFAULT_CLASS,
    LACE_GEMV_MAX_COLUMNS,
    ClassCurve,
    KernelModel,
)
from concurrency.timing.timeline import Timeline

if TYPE_CHECKING:
    import pandas as pd

#: A configuration: (model, batch). Splits never put one on both sides.
Config = tuple[str, int]

KERNEL_COLUMNS = (
    "model",
    "layer",
    "batch",
    "node",
    "op_class",
    "bytes",
    "flops",
    "columns",
    "outputs",
    "tensor_cores",
    "duration_us",
)
#: A family needs this many kernels, of at least MIN_SIZES distinct sizes, for its own curve.
MIN_SAMPLES = 6
MIN_SIZES = 3
#: Families whose memory traffic and arithmetic overlap (time = max of the two terms).
OVERLAP_CLASSES = frozenset({"gemv"})
#: The terms a family's curve may use (the rest stay 0): a latency, and bytes and FLOPs at a
#: rate. Few terms extrapolate: a curve fitted on one model's sizes must hold on another's.
#: The GEMV adds a cost per activation column (LACE's kernel is templated on the column count).
DEFAULT_TERMS = ("latency_us", "us_per_mb", "us_per_gflop")
CLASS_TERMS = {
    "gemv": ("latency_us", "us_per_column", "us_per_k_outputs", "us_per_mb", "us_per_gflop")
}
#: The coarse search grids of the sharing terms: η (concurrency efficiency, log-spaced) and φ
#: (the share of a kernel's fixed part that co-running kernels contend for).
ETA_GRID = tuple(float(x) for x in np.geomspace(0.5, 2.5, 9))
PHI_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
ONE, MULTI = "one", "multi"
_TERMS = ("latency_us", "us_per_column", "us_per_k_outputs", "us_per_mb", "us_per_gflop")


@dataclass(frozen=True)
class StepCase:
    """A graph, the schedule it ran with and its measured step time."""

    model: str
    layer: str
    layers: int
    batch: int
    schedule_kind: str  # ONE or MULTI
    measured_us: float
    graph: Graph = field(repr=False, compare=False)
    schedule: Schedule = field(repr=False, compare=False)
    weight_bytes_per_param: float = 2.0

    @property
    def config(self) -> Config:
        return (self.model, self.batch)

    @property
    def streams(self) -> int:
        return self.schedule.n_streams

    @property
    def layer_kind(self) -> str:
        """'gdn', 'attn' or 'stack×4'."""
        return f"stack×{self.layers}" if self.layer == "stack" else self.layer


@dataclass(frozen=True)
class Split:
    """Fit on `fit`'s configurations, score `test`'s."""

    name: str
    description: str
    fit: frozenset[Config]
    test: frozenset[Config]

    def __post_init__(self) -> None:
        shared = self.fit & self.test
        if shared:
            raise LaceError(
                f"split {self.name!r} fits and tests {sorted(shared)}; a held-out split must "
                "keep them apart"
            )
        if not self.fit or not self.test:
            raise LaceError(f"split {self.name!r} needs configurations on both sides")


# ------------------------------------------------------------------------------------ samples
def kernel_samples(
    timeline: Timeline,
    graph: Graph,
    *,
    model: str,
    layer: str,
    batch: int,
    weight_bytes_per_param: float = 2.0,
    gemv_max_columns: int = LACE_GEMV_MAX_COLUMNS,
) -> list[dict[str, object]]:
    """One KERNEL_COLUMNS row per kernel of a one-stream measured timeline of `graph`. A GEMV
    wider than `gemv_max_columns` ran as a GEMM on the device, so it is a sample of the GEMM
    family (the rule `KernelModel.curve_for` applies when it predicts)."""
    if len(timeline.streams) > 1:
        raise LaceError(
            "kernel samples come from one-stream timelines (co-running kernels stretch)"
        )
    costs = {c.node: c for c in graph_costs(graph, weight_bytes_per_param)}
    rows = []
    for span in timeline.spans:
        cost = costs.get(span.node)
        if cost is None or not cost.launches:
            continue
        rows.append(
            {
                "model": model,
                "layer": layer,
                "batch": batch,
                "node": span.node,
                "op_class": "gemm"
                if cost.op_class == "gemv" and cost.columns > gemv_max_columns
                else cost.op_class,
                "bytes": cost.bytes_moved,
                "flops": cost.flops,
                "columns": cost.columns,
                "outputs": cost.outputs,
                "tensor_cores": cost.tensor_cores,
                "duration_us": span.duration_us,
            }
        )
    return rows


def launch_gaps(timeline: Timeline) -> list[float]:
    """The idle time between consecutive kernels of a one-stream timeline (µs)."""
    spans = sorted(timeline.spans, key=lambda s: s.start_us)
    return [max(0.0, b.start_us - a.end_us) for a, b in itertools.pairwise(spans)]


# ------------------------------------------------------------------------------------ fitting
def _features(frame: pd.DataFrame) -> np.ndarray:
    """Per sample the multipliers of the five terms: 1, columns, k outputs, MB, GFLOP."""
    return np.stack(
        [
            np.ones(len(frame)),
            frame["columns"].to_numpy(float),
            frame["outputs"].to_numpy(float) / 1e3,
            frame["bytes"].to_numpy(float) / 1e6,
            frame["flops"].to_numpy(float) / 1e9,
        ],
        axis=1,
    )


def nnls_relative(features: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising Σ ((features·x − measured) ÷ measured)²: the exact
    solution, by least squares on every subset of columns (there are at most five)."""
    return _nnls_targets(features / measured[:, None], np.ones(len(measured)))


def _allowed(op_class: str, frame: pd.DataFrame) -> np.ndarray:
    """The family's terms, less the per-column one where every sample has the same column
    count: there it is the latency term again, and a fit free to split them would invent a
    slope that a held-out batch then doubles (a GEMV fitted at B = 1 only, tested at B = 2)."""
    terms = CLASS_TERMS.get(op_class, DEFAULT_TERMS)
    keep = np.array([t in terms for t in _TERMS])
    if frame["columns"].nunique() <= 1:
        keep[1] = False
    return keep


def _fit_sum(op_class: str, frame: pd.DataFrame) -> ClassCurve:
    keep = _allowed(op_class, frame)
    x = np.zeros(len(_TERMS))
    x[keep] = nnls_relative(_features(frame)[:, keep], frame["duration_us"].to_numpy(float))
    return ClassCurve(op_class, **dict(zip(_TERMS, map(float, x), strict=True)), kernels=len(frame))


def _fit_overlap(op_class: str, frame: pd.DataFrame) -> ClassCurve:
    """latency + per column + per k outputs + max(per MB · MB, per GFLOP · GFLOP): a search
    over the two rates (log grid, then a finer one around the best), NNLS for the rest."""
    f = _features(frame)
    measured = frame["duration_us"].to_numpy(float)
    keep = _allowed(op_class, frame)[:3]

    def solve(per_mb: float, per_gflop: float) -> tuple[float, np.ndarray]:
        core = np.maximum(per_mb * f[:, 3], per_gflop * f[:, 4])
        a = f[:, :3][:, keep] / measured[:, None]
        y = 1 - core / measured
        x = np.zeros(3)
        x[keep] = _nnls_targets(a, y)
        r = float(np.sum((a @ x[keep] - y) ** 2))
        return r, x

    best = (math.inf, 0.0, 0.0, np.zeros(3))
    mbs, gfs = np.geomspace(0.1, 2.0, 25), np.geomspace(1.0, 1000.0, 25)  # µs/MB, µs/GFLOP
    if frame["columns"].nunique() <= 1:
        # One column count: FLOPs are a fixed multiple of the weight bytes, so the two rates
        # cannot be told apart and a FLOP rate would scale wrongly with the columns. Bytes only.
        gfs = np.zeros(1)
    for _ in range(2):
        for per_mb in mbs:
            for per_gflop in gfs:
                r, x = solve(per_mb, per_gflop)
                if r < best[0]:
                    best = (r, float(per_mb), float(per_gflop), x)
        mbs = best[1] * np.geomspace(0.85, 1.18, 15)
        gfs = best[2] * np.geomspace(0.85, 1.18, 15)
    _, per_mb, per_gflop, x = best
    return ClassCurve(
        op_class,
        latency_us=float(x[0]),
        us_per_column=float(x[1]),
        us_per_k_outputs=float(x[2]),
        us_per_mb=per_mb,
        us_per_gflop=per_gflop,
        overlap=True,
        kernels=len(frame),
    )


def _nnls_targets(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative x minimising |a·x − y|² (subset enumeration; a has few columns)."""
    n = a.shape[1]
    best_x, best_r = np.zeros(n), float(np.sum(y**2))
    for k in range(1, n + 1):
        for subset in itertools.combinations(range(n), k):
            cols = list(subset)
            x, *_ = np.linalg.lstsq(a[:, cols], y, rcond=None)
            if (x < 0).any():
                continue
            r = float(np.sum((a[:, cols] @ x - y) ** 2))
            if r < best_r - 1e-12:
                best_x, best_r = np.zeros(n), r
                best_x[cols] = x
    return best_x


def fit_curves(samples: pd.DataFrame) -> tuple[ClassCurve, ...]:
    """A curve per family with enough samples, plus the default curve (all samples)."""
    if samples.empty:
        raise LaceError("no kernel samples to fit: the fit side has no one-stream timeline")
    curves = [_fit_sum(DEFAULT_CLASS, samples)]
    for op_class in OP_CLASSES:
        frame = samples[samples["op_class"] == op_class]
        sizes = frame[["bytes", "flops", "columns"]].drop_duplicates()
        if len(frame) < MIN_SAMPLES or len(sizes) < MIN_SIZES:
            continue
        fit = _fit_overlap if op_class in OVERLAP_CLASSES else _fit_sum
        curves.append(fit(op_class, frame))
    return tuple(curves)


def predict_us(case: StepCase, spec: GpuSpec) -> float:
    """The simulator's step time for a case (makespan of its schedule, CUDA-graph launches)."""
    from concurrency.timing.metrics import makespan_us
    from concurrency.timing.simulate import simulate

    timeline = simulate(
        case.graph,
        case.schedule,
        spec,
        launch="graph",
        weight_bytes_per_param=case.weight_bytes_per_param,
    )
    return makespan_us(timeline)


def fit_concurrency(spec: GpuSpec, cases: Sequence[StepCase]) -> tuple[float, float]:
    """(η, φ) minimising the squared log error of the multi-stream cases: a coarse grid, then
    a finer one around its best ((1, 0) when there is no multi-stream case)."""
    multi = [c for c in cases if c.schedule_kind == MULTI and c.streams > 1]
    if not multi or spec.kernel_model is None:
        return 1.0, 0.0

    def loss(eta: float, phi: float) -> float:
        model = dataclasses.replace(
            spec.kernel_model, concurrency_efficiency=eta, shared_fixed_fraction=phi
        )
        trial = dataclasses.replace(spec, kernel_model=model)
        return sum(math.log(predict_us(c, trial) / c.measured_us) ** 2 for c in multi)

    best = min((loss(e, p), e, p) for e in ETA_GRID for p in PHI_GRID)
    etas = best[1] * np.geomspace(0.85, 1.18, 5)
    phis = np.clip(best[2] + np.linspace(-0.125, 0.125, 5), 0.0, 1.0)
    best = min(
        [best, *((loss(float(e), float(p)), float(e), float(p)) for e in etas for p in phis)]
    )
    return best[1], best[2]


def fit_spec(
    base: str | GpuSpec,
    samples: pd.DataFrame,
    gaps: Iterable[float],
    cases: Sequence[StepCase],
    *,
    name: str | None = None,
) -> GpuSpec:
    """`base` with a fitted kernel model, launch gap and concurrency efficiency."""
    spec = get_gpu(base)
    gap_list = [g for g in gaps if g >= 0]
    if not gap_list:
        raise LaceError("no launch gaps to fit: the fit side has no one-stream timeline")
    curves = fit_curves(samples)
    fitted = dataclasses.replace(
        spec,
        name=name or f"{spec.name}-calibrated",
        launch_gap_graph_us=float(np.median(gap_list)),
        kernel_model=KernelModel(curves),
        source=f"{spec.source}; kernel curves, launch gap and concurrency fitted on measured "
        "runs by `lace calibrate`",
    )
    eta, phi = fit_concurrency(fitted, cases)
    model = dataclasses.replace(
        fitted.kernel_model, concurrency_efficiency=eta, shared_fixed_fraction=phi
    )
    return dataclasses.replace(fitted, kernel_model=model)


# --------------------------------------------------------------------------------- evaluation
def evaluate(cases: Sequence[StepCase], spec: GpuSpec) -> list[dict[str, object]]:
    """Predicted against measured, one row per case: error = (predicted − measured) ÷
    measured."""
    rows = []
    for c in cases:
        predicted = predict_us(c, spec)
        rows.append(
            {
                "model": c.model,
                "layer": c.layer_kind,
                "batch": c.batch,
                "schedule": c.schedule_kind,
                "streams": c.streams,
                "measured_us": c.measured_us,
                "predicted_us": predicted,
                "error": (predicted - c.measured_us) / c.measured_us,
            }
        )
    return rows


def standard_splits(configs: Iterable[Config]) -> tuple[Split, ...]:
    """The held-out splits of a set of configurations: by batch (fit the timeline batches 1, 8
    and 64, test the others), by model (fit one, test the other, both ways), and across both
    (fit one model's timeline batches, test the other model's other batches). Splits whose
    sides would be empty are left out."""
    configs = frozenset(configs)
    models = sorted({m for m, _ in configs})
    fit_batches = {1, 8, 64}
    out = []

    def add(name: str, description: str, fit: set[Config], test: set[Config]) -> None:
        if fit and test and not fit & test:
            out.append(Split(name, description, frozenset(fit), frozenset(test)))

    add(
        "batch",
        "fit B = 1, 8, 64 of every model; test every other batch",
        {c for c in configs if c[1] in fit_batches},
        {c for c in configs if c[1] not in fit_batches},
    )
    for fit_model in models:
        for test_model in models:
            if fit_model == test_model:
                continue
            add(
                f"model:{fit_model}→{test_model}",
                f"fit {fit_model} (every batch); test {test_model}",
                {c for c in configs if c[0] == fit_model},
                {c for c in configs if c[0] == test_model},
            )
            add(
                f"cross:{fit_model}→{test_model}",
                f"fit {fit_model} at B = 1, 8, 64; test {test_model} at the other batches",
                {c for c in configs if c[0] == fit_model and c[1] in fit_batches},
                {c for c in configs if c[0] == test_model and c[1] not in fit_batches},
            )
    return tuple(out)


@dataclass(frozen=True)
class HeldOut:
    """One split's fitted spec and its scored test cases (before and after)."""

    split: Split
    spec: GpuSpec
    rows: tuple[dict[str, object], ...]


def heldout(
    base: str | GpuSpec,
    samples: pd.DataFrame,
    gaps: pd.DataFrame,
    cases: Sequence[StepCase],
    splits: Sequence[Split],
) -> list[HeldOut]:
    """Fit each split on its fit side, score its test side: per test case the measured step,
    the datasheet spec's prediction (before) and the fitted spec's (after).

    `gaps` has columns model, batch, gap_us. Only rows of the fit side reach the fit; a test
    row is scored only when its configuration is on the test side."""
    before = get_gpu(base)
    results = []
    for split in splits:
        fit_samples = _on(samples, split.fit)
        fit_gaps = _on(gaps, split.fit)["gap_us"].tolist()
        fit_cases = [c for c in cases if c.config in split.fit]
        spec = fit_spec(
            before, fit_samples, fit_gaps, fit_cases, name=f"{before.name}-{split.name}"
        )
        test_cases = [c for c in cases if c.config in split.test]
        rows = []
        for c, b, a in zip(
            test_cases, evaluate(test_cases, before), evaluate(test_cases, spec), strict=True
        ):
            if c.config in split.fit:  # defensive: Split already forbids it
                raise LaceError(f"split {split.name!r} would score {c.config}, which it fitted")
            rows.append(
                {
                    "split": split.name,
                    **{k: a[k] for k in ("model", "layer", "batch", "schedule", "streams")},
                    "measured_us": c.measured_us,
                    "before_us": b["predicted_us"],
                    "after_us": a["predicted_us"],
                    "before_error": b["error"],
                    "after_error": a["error"],
                }
            )
        results.append(HeldOut(split, spec, tuple(rows)))
    return results


def _on(frame: pd.DataFrame, configs: frozenset[Config]) -> pd.DataFrame:
    keys = list(zip(frame["model"], frame["batch"].astype(int), strict=True))
    return frame[[k in configs for k in keys]]


def error_summary(rows: Iterable[dict[str, object]], by: Sequence[str]) -> pd.DataFrame:
    """Median and worst |error| before and after, grouped by `by` (e.g. split, schedule)."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise LaceError("no scored cases to summarise")
    frame["before_abs"] = frame["before_error"].abs()
    frame["after_abs"] = frame["after_error"].abs()
    out = frame.groupby(list(by), sort=False).agg(
        cases=("after_abs", "size"),
        before_median=("before_abs", "median"),
        before_worst=("before_abs", "max"),
        after_median=("after_abs", "median"),
        after_worst=("after_abs", "max"),
    )
    return out.reset_index()


def curve_rows(spec: GpuSpec) -> list[dict[str, object]]:
    """The fitted terms of a calibrated spec, one row per family: its terms, the bandwidth and
    FLOP rate a large kernel reaches, its fraction of the datasheet peak and half size."""
    if spec.kernel_model is None:
        raise LaceError(f"{spec.name} is not calibrated: it has no kernel model")
    rows = []
    for c in spec.kernel_model.curves:
        bw, tf = c.bandwidth_gbps, c.tflops
        rows.append(
            {
                "op_class": c.op_class,
                "kernels": c.kernels,
                **{t: getattr(c, t) for t in _TERMS},
                "overlap": c.overlap,
                "bandwidth_gb_s": bw,
                "of_peak_bandwidth": None if bw is None else bw / spec.mem_bandwidth_gbps,
                "tflops": tf,
                "half_size_mb": c.half_size_mb,
            }
        )
    return rows
