"""Measured against predicted: the tables and timelines notebook 04 shows, read from a
recording and its calibrated spec (`lace calibrate`'s document), so the notebook only calls.

- `CalibrationView`: the held-out rows of a calibrated document as tables (per split and
  schedule; per layer kind and batch; the fitted terms per kernel family).
- `timeline_triple`: a recorded timeline beside the calibrated and the datasheet simulation of
  the same graph and schedule.
- `llama_tables`: upstream llama.cpp predicted (concurrency.peers.predict) against its measured
  step times, the terms that miss, a held-out host term, and the prefill prediction against
  its measured prompt phases (warm-up rows marked), with the terms that miss there.
- `remaining_misses`: what the calibrated model still gets wrong, computed from the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from concurrency.calibration import (
    CalibrationData,
    calibrated_spec_file,
    load_calibration_data,
    load_calibration_document,
)
from concurrency.errors import LaceError
from concurrency.timing.calibrate import error_summary
from concurrency.timing.gpus import GpuSpec, get_gpu

if TYPE_CHECKING:
    import pandas as pd

    from concurrency.recorded import RecordedTimeline
    from concurrency.timing.timeline import Timeline


@dataclass(frozen=True)
class CalibrationView:
    """A calibrated document's spec and held-out evaluation, as tables."""

    path: Path
    spec: GpuSpec
    fit: dict[str, Any] = field(repr=False)

    @classmethod
    def from_folder(cls, folder: str | Path) -> CalibrationView:
        """The calibrated spec the manifest of `folder` lists (`lace calibrate` writes one)."""
        path = calibrated_spec_file(folder)
        if path is None:
            raise LaceError(
                f"{folder} lists no calibrated spec; run `lace calibrate --data {folder}`"
            )
        spec, fit = load_calibration_document(path)
        return cls(path, spec, fit)

    @property
    def base(self) -> GpuSpec:
        return get_gpu(str(self.fit["base"]))

    def rows(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.fit["heldout"])

    def summary(self, by: Sequence[str] = ("split", "schedule")) -> pd.DataFrame:
        """Median and worst |error| before and after, per split and schedule (default)."""
        return error_summary(self.fit["heldout"], by)

    def by_layer_batch(self, split: str) -> pd.DataFrame:
        """One split's test cases: per layer kind, batch and schedule, measured, before and
        after (µs) and both errors."""
        rows = self.rows()
        if split not in set(rows["split"]):
            raise LaceError(
                f"no held-out split {split!r}; the document has {sorted(set(rows['split']))}"
            )
        cols = ["model", "layer", "batch", "schedule", "measured_us", "before_us", "after_us"]
        cols += ["before_error", "after_error"]
        return rows[rows["split"] == split][cols].sort_values(["model", "layer", "batch"])

    def terms(self) -> pd.DataFrame:
        """The fitted curve of every kernel family (the spec fitted on every configuration)."""
        import pandas as pd

        return pd.DataFrame(self.fit["terms"])

    def splits(self) -> pd.DataFrame:
        """Each split: what it fits and tests, and the sharing terms it fitted."""
        import pandas as pd

        out = []
        for s in self.fit["splits"]:
            out.append(
                {
                    "split": s["name"],
                    "description": s["description"],
                    "fit": len(s["fit"]),
                    "test": len(s["test"]),
                    "launch_gap_us": s["launch_gap_us"],
                    "concurrency_efficiency": s["concurrency_efficiency"],
                    "shared_fixed_fraction": s["shared_fixed_fraction"],
                }
            )
        return pd.DataFrame(out)


@dataclass(frozen=True)
class TimelineTriple:
    """A recorded timeline and the simulator's for the same graph and schedule."""

    recorded: RecordedTimeline
    calibrated: Timeline
    datasheet: Timeline


def timeline_triple(
    folder: str | Path,
    spec: GpuSpec,
    *,
    model: str,
    layer: str,
    batch: int,
    streams: str = "multi",
) -> TimelineTriple:
    """The recorded timeline of one case (streams: "one" or "multi"), with the calibrated and
    the datasheet simulation of its graph and schedule."""
    from concurrency.recorded import gpu_spec_for, recorded_timelines

    found = [
        t
        for t in recorded_timelines(folder)
        if (t.entry.model, t.entry.layer, t.entry.batch, t.kind) == (model, layer, batch, streams)
    ]
    if not found:
        raise LaceError(
            f"no recorded {streams}-stream timeline of {model} {layer} B={batch} in {folder}"
        )
    t = found[0]
    datasheet = gpu_spec_for(t.entry.device) or "h200"
    return TimelineTriple(t, t.simulated(spec), t.simulated(datasheet))


def llama_tables(folder: str | Path, spec: GpuSpec) -> dict[str, Any]:
    """llama.cpp predicted against measured: 'decode' (per batch and GRAPH_OPT), 'misses' (the
    term each miss > 15 % names), 'host' ((a, b) and the held-out batches with a + b·B added),
    'prefill' (batched-bench's prompt phase per batch and GRAPH_OPT, measured beside predicted,
    warm-up rows marked), 'prefill_summary' (its errors without the warm-up rows, a
    `PrefillErrorSummary`; None where no prompt phase was measured), 'prefill_misses' (the
    term each prefill miss > 15 % names) and 'assumptions'."""
    import pandas as pd

    from concurrency.data import peer_files
    from concurrency.peers.predict import (
        ASSUMPTIONS,
        host_term_heldout,
        miss_terms,
        predict_llama_decode,
        predict_llama_prefill,
        prefill_error_summary,
        prefill_miss_terms,
    )
    from concurrency.peers.results import load_results

    files = peer_files(folder)
    if not files:
        raise LaceError(f"{folder} lists no peers' results; run `lace bench --peers` on a GPU")
    _, rows = load_results(files[-1])
    decode = predict_llama_decode(spec, rows)
    (a, b), host = host_term_heldout(decode)
    prefill = predict_llama_prefill(spec, rows)
    return {
        "decode": pd.DataFrame(decode),
        "misses": pd.DataFrame(miss_terms(decode, spec, rows)),
        "host_term_us": (a, b),
        "host": pd.DataFrame(host),
        "prefill": pd.DataFrame(prefill),
        "prefill_summary": (
            prefill_error_summary(prefill)
            if any(p["error"] is not None and not p["warmup"] for p in prefill)
            else None
        ),
        "prefill_misses": pd.DataFrame(prefill_miss_terms(prefill, spec, rows)),
        "assumptions": list(ASSUMPTIONS),
    }


def family_errors(data: CalibrationData, spec: GpuSpec) -> pd.DataFrame:
    """Per kernel family, the calibrated curve against the measured one-stream kernels it was
    fitted on: kernels, median and worst |error|, and the worst kernel."""
    import pandas as pd

    from concurrency.timing.cost import OpCost

    if spec.kernel_model is None:
        raise LaceError(f"{spec.name} is not calibrated")
    rows = []
    for r in data.samples.itertuples(index=False):
        cost = OpCost(
            r.node,
            r.flops,
            r.bytes,
            0.0,
            1,
            bool(r.tensor_cores),
            r.op_class,
            int(r.columns),
            int(r.outputs),
        )
        predicted = spec.kernel_model.isolated_us(cost, spec)
        rows.append(
            {
                "op_class": r.op_class,
                "kernel": f"{r.model} {r.layer} B={r.batch} {r.node}",
                "measured_us": r.duration_us,
                "predicted_us": predicted,
                "error": (predicted - r.duration_us) / r.duration_us,
            }
        )
    frame = pd.DataFrame(rows)
    frame["abs"] = frame["error"].abs()
    worst = frame.loc[frame.groupby("op_class")["abs"].idxmax()].set_index("op_class")
    out = frame.groupby("op_class").agg(
        kernels=("abs", "size"), median_error=("abs", "median"), worst_error=("abs", "max")
    )
    out["worst_kernel"] = worst["kernel"]
    out["worst_measured_us"] = worst["measured_us"]
    out["worst_predicted_us"] = worst["predicted_us"]
    return out.reset_index().sort_values("median_error", ascending=False)


def same_shape_spread(data: CalibrationData, ratio: float = 1.5) -> pd.DataFrame:
    """Kernels of identical shape (model, batch, family, bytes, FLOPs) whose measured time
    differs by more than `ratio` between the graphs they ran in: a cost no curve of the shapes
    can fit (one row per family, model and batch: the fastest and slowest graph)."""
    import pandas as pd

    keys = ["model", "batch", "op_class", "bytes", "flops"]
    out = []
    for key, group in data.samples.groupby(keys):
        lo, hi = group.loc[group["duration_us"].idxmin()], group.loc[group["duration_us"].idxmax()]
        if hi["duration_us"] > ratio * lo["duration_us"]:
            out.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "node": hi["node"],
                    "slow_graph": hi["layer"],
                    "slow_us": hi["duration_us"],
                    "fast_graph": lo["layer"],
                    "fast_us": lo["duration_us"],
                    "ratio": hi["duration_us"] / lo["duration_us"],
                }
            )
    columns = [*keys, "node", "slow_graph", "slow_us", "fast_graph", "fast_us", "ratio"]
    frame = pd.DataFrame(out, columns=columns)
    if frame.empty:
        return frame
    return (
        frame.sort_values("ratio", ascending=False)
        .drop_duplicates(["model", "batch", "op_class"])
        .reset_index(drop=True)
    )


def recycled_inputs(model: str, layer: str, batch: int, layers: int | None = None) -> dict:
    """For a recorded case's one-stream plan (`sequential`): the graph inputs whose arena
    bytes a later tensor of the same plan reuses, and those tensors. A CUDA-graph replay
    uploads inputs once, so every replay after the first reads what the later tensor left."""
    from concurrency.execute.gpu.cases import ONE, CaseContext, GpuCase
    from concurrency.graph.ir import TensorKind

    ctx = CaseContext(GpuCase(model, layer, batch, layers=layers))
    plan = ctx.place("sequential", ONE).plan
    out = {}
    for name in ctx.graph.leafs:
        t = ctx.graph[name]
        if t.kind is not TensorKind.INPUT or name not in plan.offsets:
            continue
        lo, hi = plan.offsets[name], plan.offsets[name] + plan.sizes[name]
        reused = [
            other
            for other, off in plan.offsets.items()
            if other != name and off < hi and off + plan.sizes[other] > lo
        ]
        if reused:
            out[t.ggml_name or name] = reused
    return out


def remaining_misses(view: CalibrationView, data: CalibrationData, top: int = 6) -> pd.DataFrame:
    """What the calibrated model still gets wrong, each row a finding with its figures: the
    worst held-out cases, the kernel families its curves fit worst, kernels whose time depends
    on more than their shape, and how the sharing terms move between splits."""
    import pandas as pd

    rows: list[dict[str, object]] = []
    held = view.rows()
    held["abs"] = held["after_error"].abs()
    for r in held.sort_values("abs", ascending=False).head(top).itertuples(index=False):
        rows.append(
            {
                "what": "worst held-out step",
                "where": f"{r.split}: {r.model} {r.layer} B={r.batch} {r.schedule}",
                "figures": f"measured {r.measured_us:.0f} µs, predicted {r.after_us:.0f} µs "
                f"({r.after_error:+.0%})",
            }
        )
    fam = family_errors(data, view.spec)
    for r in fam[fam["median_error"] > 0.10].itertuples(index=False):
        rows.append(
            {
                "what": "kernel curve fits poorly",
                "where": r.op_class,
                "figures": f"median |error| {r.median_error:.0%} over {r.kernels} kernels; worst "
                f"{r.worst_kernel}: {r.worst_measured_us:.1f} µs measured, "
                f"{r.worst_predicted_us:.1f} predicted",
            }
        )
    spread = same_shape_spread(data)
    for r in spread.itertuples(index=False):
        rows.append(
            {
                "what": "same shape, different time",
                "where": f"{r.model} B={r.batch} {r.op_class} ({r.node})",
                "figures": f"{r.slow_us:.1f} µs in the {r.slow_graph} graph, {r.fast_us:.1f} µs in "
                f"the {r.fast_graph} graph (×{r.ratio:.1f})",
            }
        )
    # a recording whose replays reused stale inputs: name the attention mask (data/README.md)
    if not data.replays_set_inputs and (spread["op_class"] == "attention").any():
        (model,) = spread[spread["op_class"] == "attention"]["model"].head(1)
        batch = int(spread[spread["op_class"] == "attention"]["batch"].iloc[0])
        recycled = recycled_inputs(model, "attn", batch)
        if "attn_inp_kq_mask" in recycled:
            rows.append(
                {
                    "what": "attention reads a recycled mask",
                    "where": f"{model} attn B={batch}, plan sequential",
                    "figures": "the kernel skips −inf keys; the mask's bytes are reused by "
                    f"{', '.join(recycled['attn_inp_kq_mask'])}, so replays after the first "
                    "run on an overwritten mask and read every KV cell",
                }
            )
    splits = view.splits()
    rows.append(
        {
            "what": "sharing terms move between splits",
            "where": ", ".join(splits["split"]),
            "figures": "η "
            + ", ".join(f"{v:.2f}" for v in splits["concurrency_efficiency"])
            + "; φ "
            + ", ".join(f"{v:.2f}" for v in splits["shared_fixed_fraction"]),
        }
    )
    return pd.DataFrame(rows)


def calibration_data(folder: str | Path) -> CalibrationData:
    """The recording's calibration inputs (kernel samples, gaps, step cases)."""
    return load_calibration_data(folder)
