# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Streams and overlap: measured against predicted
#
# LACE's simulator predicts a step's timeline from a graph, a stream schedule and a GPU spec
# (`concurrency/timing/simulate.py`). With only a datasheet it is a roofline: every kernel at a
# fixed fraction of the peak bandwidth or FLOP rate, 2.5 µs between kernels. This notebook
# holds it against what the H200 measured (`data/`: CUDA-graph replay medians of Qwen3.5-27B
# and 0.8B layers and 4-layer stacks at B = 1…64, CUPTI timelines at B = 1, 8, 64), then
# calibrates it (`lace calibrate`) and asks three questions:
#
# 1. How far off is the datasheet model, and how far the calibrated one **on configurations it
#    was not fitted on**?
# 2. Does a calibrated timeline look like the measured one, stream by stream?
# 3. Can it predict an engine it never saw run: upstream llama.cpp's decode steps and prompts?
#
# What `lace calibrate` fits (`concurrency/timing/calibrate.py`): per kernel family (GEMV,
# GEMM, gathers, copies, element-wise, norms, the gated delta rule, attention, …) a curve
# *latency + bytes ÷ bandwidth + FLOPs ÷ rate* on the one-stream CUPTI kernels (the GEMV also
# pays per activation column, and overlaps its bytes with its arithmetic); the launch gap of
# CUDA-graph replay (the median gap between kernels on one stream); and how kernels on other
# streams stretch each other (η, φ: `concurrency/timing/kernel_model.py`), on the multi-stream
# step times. Vocabulary: **step time** is the median of many CUDA-graph replays; **error** is
# (predicted − measured) ÷ measured.

# %% tags=["parameters"]
DATA = None  # a data folder with a manifest; None: the repository's data/
MODEL = "qwen3.5-27b"
LAYER = "gdn"
BATCH = 1
SPLIT = "batch"

# %%
import pandas as pd

from concurrency.data import default_folder
from concurrency.prediction import (
    CalibrationView,
    calibration_data,
    family_errors,
    llama_tables,
    remaining_misses,
    timeline_triple,
)
from concurrency.render import vega
from concurrency.render.timeline_chart import timeline_chart
from concurrency.timing.metrics import makespan_us

vega.enable()  # charts draw with the Vega that ships with LACE: no network needed
pd.set_option("display.max_colwidth", 200)

folder = default_folder() if DATA is None else DATA
view = CalibrationView.from_folder(folder)
data = calibration_data(folder)
print(f"calibrated spec {view.spec.name}: {view.path}")
print(f"fitted on {view.fit['kernel_samples']} kernels, {view.fit['step_cases']} step times")

# %% [markdown]
# ## 1 · Held-out error, before and after
# Each split fits on some (model, batch) configurations and scores only the others:
# **batch** fits B = 1, 8, 64 (the batches with timelines) of both models and tests B = 2, 4,
# 16, 32; **model** fits one model at every batch and tests the other; **cross** fits one
# model at B = 1, 8, 64 and tests the other model's other batches. *Before* is the datasheet
# H200; *after* the spec fitted on the split's fit side. One stream is the `sequential` plan on
# the serial schedule, multi-stream the `happens_before` plan on the detector's five streams.

# %%
summary = view.summary()
summary.round(3)

# %% [markdown]
# Per layer kind (the goal is ≤ 10 % median and ≤ 20 % worst):

# %%
view.summary(("split", "layer", "schedule")).round(3)

# %% [markdown]
# The `SPLIT` split case by case:

# %%
view.by_layer_batch(SPLIT).round(3)

# %% [markdown]
# ## 2 · The fitted terms
# One row per kernel family, from the spec fitted on every configuration (the one `lace
# simulate --gpu` reads): its latency, µs per MB and per GFLOP, the bandwidth a large kernel of
# the family reaches (and its fraction of the H200's 4.8 TB/s), and the size at which it
# reaches half of that (`half_size_mb`: the saturating efficiency curve MB ÷ (MB + half
# size)). Below it, how each split's sharing terms came out.

# %%
view.terms().round(3)

# %%
view.splits().round(3)

# %% [markdown]
# ## 3 · A timeline beside its prediction
# The measured multi-stream timeline of the `MODEL` `LAYER` layer at B = `BATCH` (CUPTI), the
# calibrated simulation of the same graph and schedule, and the datasheet one.

# %%
triple = timeline_triple(folder, view.spec, model=MODEL, layer=LAYER, batch=BATCH)
spans = {
    "measured": makespan_us(triple.recorded.timeline),
    "calibrated": makespan_us(triple.calibrated),
    "datasheet": makespan_us(triple.datasheet),
}
pd.Series(spans, name="makespan_us").round(1)

# %%
timeline_chart(triple.recorded.timeline, title=triple.recorded.title())

# %%
timeline_chart(triple.calibrated, title=f"calibrated prediction on {view.spec.name}")

# %%
timeline_chart(triple.datasheet, title="datasheet prediction (h200, uncalibrated)")

# %% [markdown]
# ## 4 · Predicting upstream llama.cpp
# llama.cpp's own schedule (one stream with `GGML_CUDA_GRAPH_OPT=0`; ggml-cuda's detector with
# `=1`, which forks only at B = 1, on the attention Q/K/V) simulated with the calibrated
# curves, against the step times `lace bench --peers` measured (llama-batched-bench, host wall
# time per decode step, CUDA graphs on). What the prediction assumes:

# %%
llama = llama_tables(folder, view.spec)
for line in llama["assumptions"]:
    print("-", line)

# %%
llama["decode"].round(3)

# %% [markdown]
# Where the prediction misses by more than 15 %, the term of the model that misses, named
# from the figures (`concurrency.peers.predict.miss_terms`):

# %%
llama["misses"]

# %% [markdown]
# What that missing term looks like: a + b·B fitted on the residual of B = 1, 4, 16, 64 and
# added to the prediction at the other batches (this uses llama.cpp's own step times, so it
# describes the miss; it does not predict from LACE's recording):

# %%
a, b = llama["host_term_us"]
print(f"a = {a:.0f} µs per step, b = {b:.0f} µs per sequence")
llama["host"].round(3)

# %% [markdown]
# Prefill: batched-bench's prompt phase (B sequences of 128 tokens, in ubatches of ≤ 512
# tokens holding whole sequences), predicted as llama.cpp runs it, beside the measured T_PP
# (host wall time of the whole phase, median over the run's processes; parsed from the run's
# raw output). A batched-bench process's first prompts also pay its warm-up; the rows whose
# samples do (`warmup`: slower per ubatch than twice a later, at least as full ubatch of the
# same process) are shown but left out of the summary and of the miss terms:

# %%
prefill = llama["prefill"]
prefill_summary = llama["prefill_summary"]
if prefill_summary is None:
    print("no prompt phase was measured in this folder: the prediction alone")
else:
    warm = sorted(prefill.loc[prefill["warmup"], "batch"].unique())
    print(
        f"{prefill_summary.compared} measured rows compared, median |error| "
        f"{prefill_summary.median_abs_error:.0%}, worst {prefill_summary.worst_error:+.0%} at "
        f"B = {prefill_summary.worst_batch} (GRAPH_OPT={prefill_summary.worst_graph_opt}); "
        f"{prefill_summary.warmup} warm-up rows left out (B = {', '.join(map(str, warm))})"
    )
prefill.round(3)

# %% [markdown]
# Where the prefill prediction misses by more than 15 % (warm-up rows excluded), the term that
# misses (`concurrency.peers.predict.prefill_miss_terms`):

# %%
llama["prefill_misses"]

# %% [markdown]
# ## 5 · What the model still gets wrong
# Computed from the recording and the fit: the worst held-out steps, the kernel families the
# curves fit worst (on the kernels they were fitted on), kernels whose time depends on more
# than their shape, and how the sharing terms move between splits.

# %%
remaining_misses(view, data)

# %%
family_errors(data, view.spec).round(3)
