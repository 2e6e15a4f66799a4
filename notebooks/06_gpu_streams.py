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
# # 06 · GPU streams: measured timelines, the race on the GPU, measured against simulated
#
# `lace record` runs LACE's graphs on a GPU (CuPy kernels on the schedule's CUDA streams, one
# captured CUDA graph per plan) and writes what it saw under `data/`: CUPTI timelines, replay
# times, and the race experiment. This notebook reads those files, so it runs on any machine;
# it never runs a kernel. Every figure says where it comes from: **measured on** a device and
# date (from `data/`), or **simulated** on a GPU spec (LACE's timing model) where nothing is
# recorded for that case.
#
# - the GDN layer and the 4-layer stack: the measured timeline beside the memory map of the
#   very plan it ran with (tensors in a hazard outlined in red);
# - the race experiment: unsafe plans replayed hundreds of times against a safe reference;
# - measured against simulated: the simulator's prediction for each recorded case.

# %% tags=["parameters"]
DATA = None  # the data folder; None: the repository's data/
MODEL = "qwen3.5-27b"  # the model of the simulated figures when nothing is recorded
GPU = "h200"  # the simulator's GPU spec when nothing is recorded

# %%
from pathlib import Path

import pandas as pd

from concurrency.data import RACE, REPLAYS, default_folder, load_manifest, load_table
from concurrency.execute.gpu.bench import bench_rows
from concurrency.recorded import (
    case_view,
    comparison_rows,
    expected_verdicts,
    recorded_timelines,
    simulated_rows,
)
from concurrency.render import vega
from concurrency.render.measured import case_chart

vega.enable()

folder = Path(DATA) if DATA else default_folder()
entries = load_manifest(folder)
timelines = recorded_timelines(folder)
races = load_table(folder, RACE)
replays = load_table(folder, REPLAYS)
recorded = bool(timelines)
devices = sorted({f"{e.device} ({e.date[:10]})" for e in entries})
print(
    f"{len(entries)} recorded file(s) in {folder}: measured on {', '.join(devices)}"
    if entries
    else f"No GPU recording in {folder} yet: every figure below is simulated on {GPU} and "
    "says so. `lace record` on a GPU machine writes one (see data/README.md)."
)

# %% [markdown]
# ## What is recorded
# One row per file of the manifest (`data/manifest.json`): what it holds, where and when it was
# measured, and the case (tables hold many cases in their own columns).

# %%
pd.DataFrame(
    [
        {
            "kind": e.kind,
            "device": e.device,
            "date": e.date,
            "model": e.model,
            "layer": e.layer,
            "batch": e.batch,
            "policy": e.policy,
            "streams": e.streams,
            "file": e.file,
        }
        for e in entries
    ],
    columns=["kind", "device", "date", "model", "layer", "batch", "policy", "streams", "file"],
)


# %% [markdown]
# ## The GDN layer: the measured timeline beside its memory map
# The multi-stream `happens_before` run (LACE's safe policy) at the smallest recorded batch:
# one lane per CUDA stream, one bar per graph node (first kernel start to last kernel end, from
# CUPTI, in one replay of the captured graph). Beside it, the arena of the same plan: x is the
# node position, y the byte offset, one rectangle per tensor from its writer to its last
# reader, coloured by the stream that writes it.


# %%
gdn = case_view(timelines, "gdn", model=MODEL, gpu=GPU)
print(gdn.title)
case_chart(gdn)

# %% [markdown]
# ## The 4-layer stack
# A whole llama.cpp-shaped graph (three GDN layers and one attention layer, the output head with
# a 256-token vocabulary): its offsets are the engine's own (`engine_flow`: replayed from the
# n_ubatch-token reserve graph or re-planned, by each policy's rule).

# %%
stack = case_view(timelines, "stack", model=MODEL, gpu=GPU, layers=4)
print(stack.title)
case_chart(stack)

# %% [markdown]
# ## The race on the GPU
# Each plan replayed N times from the same inputs (arena refilled with NaN, states restored
# before every replay), outputs and states compared on the device with the first run of the
# safe `happens_before` plan. `expected` is what the checker demands: **never** differ (no
# hazard), differ in **every run** (a use after reuse: the planted ordered overwrite, and
# `interleave` planned on an order one stream does not run), or **depends on timing** (races).
# A row with `widened` set ran with a window widener (a delay kernel before the race's first
# access, or a repeated kernel) because the race did not show by itself; it says which.

# %%
RACE_VIEW = ["model", "layer", "batch", "plan", "streams", "races", "uses_after_reuse"]
RACE_VIEW += ["expected", "runs", "bitwise_runs", "wrong_runs", "max_error", "verdict", "widened"]
if not races.empty:
    race_frame = races[RACE_VIEW]
    print(f"measured: {', '.join(sorted(set(races['device'])))}")
else:  # what the checker says each plan must do; nothing has run yet
    race_frame = pd.DataFrame(expected_verdicts(MODEL))
    print("not run on a GPU yet: the checker's verdicts only")
race_frame

# %% [markdown]
# ## Measured against simulated
# For every recorded timeline, the simulator's timeline of the same graph and schedule on the
# spec named like the recording's GPU: makespans, the makespan error ((simulated − measured) ÷
# measured) and the median |error| of the kernels' durations (`metrics.compare`). Where nothing
# is recorded, the simulated one-stream and multi-stream makespans alone, labelled simulated.

# %%
compare_frame = pd.DataFrame(comparison_rows(timelines) if recorded else simulated_rows(MODEL, GPU))
compare_frame.round(3)

# %% [markdown]
# And the replay times `lace bench --from-data` prints: per graph and batch, the median of
# many CUDA-graph replays on one stream (`sequential`, as ggml runs without streams) and on the
# schedule's streams (`happens_before`), timed side by side in alternating rounds; the achieved
# bandwidth is the bytes the step must move (weights, states, KV rows read) over the median.

# %%
bench = pd.DataFrame(bench_rows(replays.to_dict("records"), ["happens_before"]))
bench.round(3) if not bench.empty else "no replay table recorded yet"
