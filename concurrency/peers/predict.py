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
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from concurrency.errors import LaceError
from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule, serial_schedule, stream_schedule
from concurrency.peers.cases import LLAMA_BATCHES, LLAMA_PROMPT, peer_model_config
from concurrency.peers.lace_peers import MODEL_KV_TOKENS
from concurrency.peers.results import PeerRow
from concurrency.timing.calibrate import _fit_sum
from concurrency.timing.cost import graph_costs
from concurrency.timing.gpus import GpuSpec

#: A prediction missing the measurement by more than this names its term.
MISS_THRESHOLD = 0.15
#: llama-batched-bench's context (-c) and ubatch (-ub), as `lace bench --peers` ran it.
LLAMA_N_CTX = 16384
LLAMA_UBATCH = 512
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
    slope = intercept = None
    if len(under) >= 2:
        bs = np.array([p["batch"] for p in under], float)
        res = np.array([p["measured_us"] - p["predicted_us"] for p in under], float)
        slope, intercept = (float(v) for v in np.polyfit(bs, res, 1))
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
            if slope is not None and intercept is not None:
                why += (
                    f"; over the under-predicted batches the residual is {intercept:.0f} µs + "
                    f"{slope:.0f} µs per sequence, while a sequence's GPU-side work costs "
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


def predict_llama_prefill(
    spec: GpuSpec, rows: Sequence[PeerRow], batches: Sequence[int] = LLAMA_BATCHES
) -> list[dict[str, object]]:
    """batched-bench's prompt phase (B sequences of LLAMA_PROMPT tokens), predicted: llama.cpp
    splits it into ubatches of ≤ LLAMA_UBATCH tokens, whole sequences each (recurrent models
    split by sequence), run one after another on one stream (the ggml detector never fires on
    several tokens). No measurement exists to compare against: batched-bench's prompt times
    were not recorded."""
    from concurrency.timing.metrics import makespan_us
    from concurrency.timing.simulate import simulate

    ggml = ggml_gdn_spec(spec, rows)
    per_ubatch = max(1, LLAMA_UBATCH // LLAMA_PROMPT)
    out = []
    for b in batches:
        full, rest = divmod(b, per_ubatch)
        total = 0.0
        for seqs, count in ((per_ubatch, full), (rest, 1 if rest else 0)):
            if count:
                g = llama_graph(seqs, "prefill", LLAMA_PROMPT)
                total += count * makespan_us(simulate(g, serial_schedule(g), ggml))
        out.append(
            {
                "batch": b,
                "tokens": b * LLAMA_PROMPT,
                "ubatches": full + (1 if rest else 0),
                "predicted_us": total,
                "predicted_tokens_per_s": b * LLAMA_PROMPT / total * 1e6,
                "measured_us": None,
            }
        )
    return out
