"""Predicting upstream llama.cpp: its own schedule simulated with calibrated kernel costs, set
against the step times `lace bench --peers` measured (llama-batched-bench, CUDA graphs on).

What is simulated: the peer model (Qwen3.5-27B widths, 4 layers, vocabulary 256, f16 weights)
as llama.cpp builds it (LACE's builder follows its node order), decode of B sequences with
`MODEL_KV_TOKENS` tokens cached each (the mean context of batched-bench's decode phase), on one
stream (GGML_CUDA_GRAPH_OPT=0) or on ggml-cuda's own fork detector's streams (=1: it fires
only at B = 1, on the attention layer's Q/K/V fork).

What is assumed (`ASSUMPTIONS`): LACE's measured kernels stand in for ggml's, except the gated
delta rule, whose curve is refitted on ggml-cuda's GATED_DELTA_NET op as test-backend-ops timed
it (decode and prefill). Nothing host-side is modelled, while batched-bench reports host wall
time per step. `miss_terms` names, for each batch the prediction misses by more than
`MISS_THRESHOLD`, the term of the model that misses, from the figures themselves.

Prefill likewise: `predict_llama_prefill` sets batched-bench's prompt phase (T_PP, parsed per
process from the run's raw output) beside the simulated ubatches, `prefill_error_summary`
scores it without the rows that include a process's warm-up, and `prefill_miss_terms` names
the missing term.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from concurrency.errors import LaceError
from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule, serial_schedule, stream_schedule
from concurrency.peers.cases import (
    LLAMA_BATCHES,
    LLAMA_PROMPT,
    LLAMA_UBATCH,
    peer_model_config,
    prompt_ubatches,
)
from concurrency.peers.lace_peers import MODEL_KV_TOKENS
from concurrency.peers.llama_peers import PREFILL_CASE
from concurrency.peers.results import PeerRow
from concurrency.peers.table import WARMUP_MARK
from concurrency.timing.calibrate import _fit_sum
from concurrency.timing.cost import graph_costs
from concurrency.timing.gpus import GpuSpec

#: A prediction missing the measurement by more than this names its term.
MISS_THRESHOLD = 0.15
#: llama-batched-bench's context (-c), as `lace bench --peers` ran it (its ubatch: LLAMA_UBATCH).
LLAMA_N_CTX = 16384
GGML_GDN_CASES = ("gdn core decode", "gdn core prefill")
#: ggml-cuda on sm_90 with f16 weights runs a projection as a vector kernel (mmvf) for one
#: activation column only; 2–16 columns take its tensor-core mmf, more take cuBLAS
#: (ggml_cuda_should_use_mmvf / _mmf at the vendored commit).
GGML_GEMV_MAX_COLUMNS = 1
MODEL_CASE = "4-layer model decode step"
ASSUMPTIONS = (
    "graph: LACE's builder of llama.cpp's qwen35 graph (node order as llama.cpp), 4 layers "
    f"(3 GDN + 1 attention), vocabulary 256, f16 weights, {MODEL_KV_TOKENS} tokens cached per "
    "sequence; attention as FLASH_ATTN_EXT although batched-bench ran -fa off (KQ, softmax, KQV:"
    " at ≤ 256 cached cells a few µs either way)",
    "schedule: one stream with GGML_CUDA_GRAPH_OPT=0; with =1 ggml-cuda's detector "
    "(detect_branches(graph, 'ggml')), which forks only at B = 1 on the attention Q/K/V",
    "kernels: the calibrated curves of LACE's own kernels (fitted on the H200 recording) for "
    "every family but the gated delta rule, whose curve is refitted on ggml-cuda's "
    "GATED_DELTA_NET op (test-backend-ops perf, decode B = 1/4/16/64 and prefill)",
    "projections: ggml runs mmvf at 1 column, its tensor-core mmf at 2–16 and cuBLAS at 32+ "
    "(sm_90, f16); the model charges LACE's 1-column GEMV curve at B = 1 and LACE's cuBLAS "
    "GEMM curve (fitted at 64 columns) at every wider batch",
    "no host time: batched-bench measures host wall time per step (graph build, input upload, "
    "CUDA-graph launch, synchronisation), the simulator GPU time only",
    "prefill: batched-bench's prompt phase (T_PP, host wall time of the whole phase) as "
    f"ubatches of ≤ {LLAMA_UBATCH} tokens holding whole sequences, run one after another, no "
    "tokens cached before the prompt; rows whose samples include a process's warm-up are "
    "marked and left out of the error summary and of the miss terms",
)


def ggml_gdn_spec(spec: GpuSpec, rows: Sequence[PeerRow]) -> GpuSpec:
    """`spec` (calibrated) as ggml-cuda runs: the gated-delta-rule curve refitted on ggml-cuda's
    GATED_DELTA_NET op times (decode and prefill rows of the peers' table), and projections
    wider than one column on the GEMM curve (mmf and cuBLAS are tensor-core GEMMs)."""
    import pandas as pd

    if spec.kernel_model is None:
        raise LaceError(f"{spec.name} is not calibrated; run `lace calibrate` first")
    cfg = peer_model_config()
    samples = []
    for r in rows:
        if r.peer != "ggml-cuda" or r.case not in GGML_GDN_CASES or r.median_us is None:
            continue
        mode = "decode" if r.tokens == 1 else "prefill"
        g = build_graph(cfg, "gdn", mode, r.batch, None if mode == "decode" else r.tokens)
        (cost,) = [c for c in graph_costs(g, 2) if c.op_class == "gdn"]
        samples.append(
            {
                "bytes": cost.bytes_moved,
                "flops": cost.flops,
                "columns": cost.columns,
                "outputs": cost.outputs,
                "duration_us": r.median_us,
            }
        )
    if len(samples) < 2:
        raise LaceError("the peers' table has no ggml-cuda GATED_DELTA_NET times to fit")
    curve = _fit_sum("gdn", pd.DataFrame(samples))
    model = spec.kernel_model
    curves = (*(c for c in model.curves if c.op_class != "gdn"), curve)
    ggml = dataclasses.replace(model, curves=curves, gemv_max_columns=GGML_GEMV_MAX_COLUMNS)
    return dataclasses.replace(spec, name=f"{spec.name}+ggml", kernel_model=ggml)


def llama_graph(batch: int, mode: str = "decode", tokens: int | None = None) -> Graph:
    """The peer model's graph as batched-bench runs it (decode: MODEL_KV_TOKENS cached)."""
    cfg = peer_model_config()
    kv = MODEL_KV_TOKENS if mode == "decode" else 0
    return build_graph(
        cfg, "stack", mode, batch, tokens, cfg.n_layer, n_ctx=LLAMA_N_CTX, kv_tokens=kv
    )


def llama_schedule(graph: Graph, graph_opt: int) -> Schedule:
    """GGML_CUDA_GRAPH_OPT=0: one stream; =1: ggml-cuda's detector's streams."""
    if graph_opt == 0:
        return serial_schedule(graph)
    return stream_schedule(graph, detect_branches(graph, "ggml"))


def class_times(graph: Graph, spec: GpuSpec) -> dict[str, float]:
    """Each kernel family's isolated time summed over the graph, plus the launch gaps
    ('launch gaps'): what a one-stream step is made of (µs)."""
    from concurrency.timing.simulate import isolated_us

    out: dict[str, float] = {}
    kernels = 0
    for c in graph_costs(graph, 2):
        if c.launches:
            out[c.op_class] = out.get(c.op_class, 0.0) + isolated_us(c, spec)
            kernels += 1
    out["launch gaps"] = kernels * spec.launch_gap_graph_us
    return out


def _measured(rows: Sequence[PeerRow]) -> dict[tuple[int, int], float]:
    found = {}
    for r in rows:
        if (
            r.peer == "llama.cpp"
            and r.case == MODEL_CASE
            and r.median_us is not None
            and r.variant.startswith("batched-bench")
        ):
            found[(int(r.variant[-1]), r.batch)] = r.median_us
    return found


def predict_llama_decode(
    spec: GpuSpec, rows: Sequence[PeerRow], batches: Sequence[int] = LLAMA_BATCHES
) -> list[dict[str, object]]:
    """Per batch and GRAPH_OPT setting: streams, the measured step (None where not recorded),
    the prediction with LACE's kernels and with ggml's GDN op, and the error of the latter."""
    from concurrency.timing.metrics import makespan_us
    from concurrency.timing.simulate import simulate

    ggml = ggml_gdn_spec(spec, rows)
    measured = _measured(rows)
    out = []
    for b in batches:
        graph = llama_graph(b)
        for opt in (0, 1):
            schedule = llama_schedule(graph, opt)
            lace_us = makespan_us(simulate(graph, schedule, spec))
            pred_us = makespan_us(simulate(graph, schedule, ggml))
            meas = measured.get((opt, b))
            out.append(
                {
                    "batch": b,
                    "graph_opt": opt,
                    "streams": schedule.n_streams,
                    "measured_us": meas,
                    "predicted_lace_kernels_us": lace_us,
                    "predicted_us": pred_us,
                    "error": None if meas is None else (pred_us - meas) / meas,
                }
            )
    return out


def _residual_line(rows: Sequence[dict[str, object]], x_key: str) -> tuple[float, float] | None:
    """(intercept, slope) of measured − predicted against `x_key` over `rows`, by least
    squares; None with fewer than two distinct x values."""
    xs = np.array([float(p[x_key]) for p in rows], float)  # type: ignore[arg-type]
    if len(set(xs.tolist())) < 2:
        return None
    res = np.array([float(p["measured_us"]) - float(p["predicted_us"]) for p in rows])  # type: ignore[arg-type]
    slope, intercept = (float(v) for v in np.polyfit(xs, res, 1))
    return intercept, slope


def miss_terms(
    predictions: Sequence[dict[str, object]],
    spec: GpuSpec,
    rows: Sequence[PeerRow],
    threshold: float = MISS_THRESHOLD,
) -> list[dict[str, object]]:
    """For every prediction missing by more than `threshold`, the term of the model that misses
    and the figures that say so:

    - over-predicted (the model is slower than llama.cpp): the kernel family whose predicted time
      grew most from B = 1 (LACE's kernel for it is slower than ggml's at this batch);
    - under-predicted: time the model has no term for. The residual (measured − predicted) is
      fitted against B over the under-predicted batches; a slope per sequence far above what
      the GPU-side per-sequence bytes cost at the calibrated bandwidth points at host work per
      sequence, not at a kernel."""
    ggml = ggml_gdn_spec(spec, rows)
    base = class_times(llama_graph(1), ggml)
    under = [p for p in predictions if p["error"] is not None and p["error"] < -threshold]
    line = _residual_line(under, "batch")
    per_seq_gpu = _per_sequence_gpu_us(ggml)
    out = []
    for p in predictions:
        err = p["error"]
        if err is None or abs(err) <= threshold:
            continue
        b = int(p["batch"])
        if err > 0:
            times = class_times(llama_graph(b), ggml)
            grew = max(times, key=lambda k: times[k] - base.get(k, 0.0))
            term = f"kernel curve '{grew}'"
            why = (
                f"the model's {grew} time grows from {base.get(grew, 0.0):.0f} µs at B = 1 to "
                f"{times[grew]:.0f} µs at B = {b} (LACE's kernel); llama.cpp's whole step grows "
                f"by {p['measured_us'] - _measured_at(predictions, 1, p['graph_opt']):.0f} µs"
            )
        else:
            term = "time per step and per sequence outside the simulated kernels (no term)"
            why = f"{p['measured_us'] - p['predicted_us']:.0f} µs measured beyond the GPU time"
            if line is not None:
                why += (
                    f"; over the under-predicted batches the residual is {line[0]:.0f} µs + "
                    f"{line[1]:.0f} µs per sequence, while a sequence's GPU-side work costs "
                    f"{per_seq_gpu:.0f} µs in the model: host work per step and per sequence "
                    "(batched-bench times the host wall clock) or ggml kernels that scale per "
                    "sequence beyond LACE's; without a GPU timeline of llama.cpp the recording "
                    "cannot tell them apart"
                )
        out.append(
            {
                "batch": b,
                "graph_opt": p["graph_opt"],
                "error": err,
                "term": term,
                "evidence": why,
            }
        )
    return out


#: The batches a residual (host) term is fitted on in `host_term_heldout`; the rest are tested.
HOST_FIT_BATCHES = (1, 4, 16, 64)


def host_term_heldout(
    predictions: Sequence[dict[str, object]], fit_batches: Sequence[int] = HOST_FIT_BATCHES
) -> tuple[tuple[float, float], list[dict[str, object]]]:
    """How far a host term of the form a + b·B closes the gap: (a, b) fitted by least squares
    on the residual (measured − predicted) of `fit_batches`, scored on the other batches only.
    This uses llama.cpp's own step times, so it says what the missing term looks like; it is
    not a prediction from LACE's recording."""
    fit = [p for p in predictions if p["measured_us"] is not None and p["batch"] in fit_batches]
    test = [
        p for p in predictions if p["measured_us"] is not None and p["batch"] not in fit_batches
    ]
    if len(fit) < 2 or not test:
        raise LaceError("a host term needs measured steps at two fit batches and one more")
    bs = np.array([p["batch"] for p in fit], float)
    res = np.array([float(p["measured_us"]) - float(p["predicted_us"]) for p in fit])
    slope, intercept = (float(v) for v in np.polyfit(bs, res, 1))
    rows = []
    for p in test:
        with_host = float(p["predicted_us"]) + intercept + slope * int(p["batch"])
        meas = float(p["measured_us"])
        rows.append(
            {
                "batch": p["batch"],
                "graph_opt": p["graph_opt"],
                "measured_us": meas,
                "predicted_us": p["predicted_us"],
                "with_host_us": with_host,
                "error": (with_host - meas) / meas,
            }
        )
    return (intercept, slope), rows


def _measured_at(predictions: Sequence[dict[str, object]], batch: int, opt: object) -> float:
    for p in predictions:
        if p["batch"] == batch and p["graph_opt"] == opt and p["measured_us"] is not None:
            return float(p["measured_us"])  # type: ignore[arg-type]
    return math.nan


def _per_sequence_gpu_us(spec: GpuSpec) -> float:
    """The model's one-stream GPU time added per sequence (slope between B = 32 and 64)."""
    lo, hi = class_times(llama_graph(32), spec), class_times(llama_graph(64), spec)
    return (sum(hi.values()) - sum(lo.values())) / 32


def _measured_prefill(rows: Sequence[PeerRow]) -> dict[tuple[int, int], tuple[float, bool]]:
    """(GRAPH_OPT, batch) → (median T_PP µs, whether its samples include warm-up) of the
    llama.cpp prefill rows (batched-bench's prompt phase)."""
    found = {}
    for r in rows:
        if (
            r.peer == "llama.cpp"
            and r.case == PREFILL_CASE
            and r.median_us is not None
            and r.variant.startswith("batched-bench")
        ):
            found[(int(r.variant[-1]), r.batch)] = (r.median_us, WARMUP_MARK in r.notes)
    return found


def prefill_ubatch_graphs(batch: int) -> tuple[Graph, ...]:
    """The graphs llama.cpp evaluates for batched-bench's prompt phase at `batch`: one per
    ubatch (`prompt_ubatches`: whole sequences of LLAMA_PROMPT tokens, ≤ LLAMA_UBATCH each)."""
    return tuple(llama_graph(seqs, "prefill", LLAMA_PROMPT) for seqs in prompt_ubatches(batch))


def predict_llama_prefill(
    spec: GpuSpec, rows: Sequence[PeerRow], batches: Sequence[int] = LLAMA_BATCHES
) -> list[dict[str, object]]:
    """batched-bench's prompt phase (B sequences of LLAMA_PROMPT tokens) per batch and
    GRAPH_OPT setting: predicted as llama.cpp runs it, its ubatches one after another, each on
    llama.cpp's schedule (`llama_schedule`: the ggml detector never fires on several tokens, so
    one stream either way), with ggml's GDN op; beside it the measured T_PP (host wall time of
    the whole phase; None where not recorded), the error, and `warmup`: the measured row
    includes a process's warm-up (its notes carry WARMUP_MARK), so its error is no verdict on
    the model and `prefill_error_summary` and `prefill_miss_terms` leave it out."""
    from concurrency.timing.metrics import makespan_us
    from concurrency.timing.simulate import simulate

    ggml = ggml_gdn_spec(spec, rows)
    measured = _measured_prefill(rows)
    out = []
    for b in batches:
        graphs = prefill_ubatch_graphs(b)
        for opt in (0, 1):
            schedules = [llama_schedule(g, opt) for g in graphs]
            total = sum(
                makespan_us(simulate(g, sch, ggml))
                for g, sch in zip(graphs, schedules, strict=True)
            )
            meas, warm = measured.get((opt, b), (None, False))
            out.append(
                {
                    "batch": b,
                    "graph_opt": opt,
                    "streams": max(sch.n_streams for sch in schedules),
                    "tokens": b * LLAMA_PROMPT,
                    "ubatches": len(graphs),
                    "measured_us": meas,
                    "predicted_us": total,
                    "error": None if meas is None else (total - meas) / meas,
                    "warmup": warm,
                    "predicted_tokens_per_s": b * LLAMA_PROMPT / total * 1e6,
                }
            )
    return out


@dataclass(frozen=True)
class PrefillErrorSummary:
    """The prefill prediction's errors over the measured rows without warm-up: how many,
    the median |error| and the worst (batch, GRAPH_OPT, error); `warmup` rows left out."""

    compared: int
    warmup: int
    median_abs_error: float
    worst_batch: int
    worst_graph_opt: int
    worst_error: float


def prefill_error_summary(predictions: Sequence[dict[str, object]]) -> PrefillErrorSummary:
    """Summarise `predict_llama_prefill`'s errors, warm-up rows excluded (they time the
    process's first use, not the prompt)."""
    measured = [p for p in predictions if p["error"] is not None]
    fair = [p for p in measured if not p["warmup"]]
    if not fair:
        raise LaceError(
            "no measured prefill row without warm-up to compare; backfill the run's prefill "
            "rows (python -m concurrency.peers.backfill --raw llama-raw.txt --peers peers.json)"
        )
    worst = max(fair, key=lambda p: abs(float(p["error"])))  # type: ignore[arg-type]
    return PrefillErrorSummary(
        compared=len(fair),
        warmup=len(measured) - len(fair),
        median_abs_error=float(np.median([abs(float(p["error"])) for p in fair])),  # type: ignore[arg-type]
        worst_batch=int(worst["batch"]),  # type: ignore[call-overload]
        worst_graph_opt=int(worst["graph_opt"]),  # type: ignore[call-overload]
        worst_error=float(worst["error"]),  # type: ignore[arg-type]
    )


def _ubatch_times(batch: int, spec: GpuSpec) -> dict[str, float]:
    """Each kernel family's time summed over the prompt phase's ubatches at `batch` (µs)."""
    out: dict[str, float] = {}
    for g in prefill_ubatch_graphs(batch):
        for k, v in class_times(g, spec).items():
            out[k] = out.get(k, 0.0) + v
    return out


def _gdn_prefill_fit(ggml: GpuSpec, rows: Sequence[PeerRow]) -> float:
    """The worst relative error of the refitted GDN curve on ggml-cuda's own prefill op
    times (test-backend-ops): how far the one ggml-specific term is from ggml."""
    curve = ggml.kernel_model.curve("gdn")  # type: ignore[union-attr]
    worst = 0.0
    for r in rows:
        if r.peer == "ggml-cuda" and r.case == "gdn core prefill" and r.median_us:
            g = build_graph(peer_model_config(), "gdn", "prefill", r.batch, r.tokens)
            (cost,) = [c for c in graph_costs(g, 2) if c.op_class == "gdn"]
            err = (curve.isolated_us(cost) - r.median_us) / r.median_us
            worst = max(worst, abs(err), key=abs)
    return worst


def prefill_miss_terms(
    predictions: Sequence[dict[str, object]],
    spec: GpuSpec,
    rows: Sequence[PeerRow],
    threshold: float = MISS_THRESHOLD,
) -> list[dict[str, object]]:
    """For every prefill prediction (warm-up rows excluded) missing by more than `threshold`,
    the term of the model that misses and the figures that say so:

    - over-predicted (the model is slower than llama.cpp): the kernel family that takes the
      most of the predicted phase (LACE's curve for it is slower than ggml's kernel at these
      512-token ubatches; the phase is ubatches × one ubatch, so the largest family is where an
      excess can hide);
    - under-predicted: time the model has no term for. The residual (measured − predicted) is
      fitted as a + b·ubatches over the under-predicted rows: a is paid once per prompt
      phase, b per ubatch, set against what the model predicts per ubatch and how closely its
      GDN curve matches ggml's own prefill op."""
    ggml = ggml_gdn_spec(spec, rows)
    fair = [p for p in predictions if p["error"] is not None and not p["warmup"]]
    under = [p for p in fair if float(p["error"]) < -threshold]  # type: ignore[arg-type]
    fit = _residual_line(under, "ubatches")
    full = class_times(llama_graph(LLAMA_UBATCH // LLAMA_PROMPT, "prefill", LLAMA_PROMPT), ggml)
    gdn_err = _gdn_prefill_fit(ggml, rows)
    out = []
    for p in fair:
        err = float(p["error"])  # type: ignore[arg-type]
        if abs(err) <= threshold:
            continue
        b = int(p["batch"])  # type: ignore[call-overload]
        if err > 0:
            times = _ubatch_times(b, ggml)
            big = max(times, key=lambda k: times[k])
            term = f"kernel curve '{big}'"
            why = (
                f"the model's {big} time is {times[big]:.0f} µs of its {sum(times.values()):.0f}"
                f" µs over {p['ubatches']} ubatch(es); llama.cpp took {p['measured_us']:.0f} µs"
            )
        else:
            term = "time per prompt phase and per ubatch outside the simulated kernels (no term)"
            gap_us = float(p["measured_us"]) - float(p["predicted_us"])  # type: ignore[arg-type]
            why = f"{gap_us:.0f} µs measured beyond the GPU time"
            if fit is not None:
                why += (
                    f"; over the under-predicted rows the residual is {fit[0]:.0f} µs per "
                    f"prompt phase + {fit[1]:.0f} µs per ubatch, while the model's full ubatch "
                    f"costs {sum(full.values()):.0f} µs of GPU time (largest family "
                    f"{max(full, key=lambda k: full[k])!r}) and its GDN curve is within "
                    f"{abs(gdn_err):.0%} of ggml's own prefill op: host work per phase and per "
                    "ubatch (batched-bench times the host wall clock: graph build, scheduling, "
                    "input upload) or ggml kernels slower per ubatch than LACE's; without a GPU "
                    "timeline of llama.cpp's prompt the recording cannot tell them apart"
                )
        out.append(
            {
                "batch": b,
                "graph_opt": p["graph_opt"],
                "error": err,
                "term": term,
                "evidence": why,
            }
        )
    return out
