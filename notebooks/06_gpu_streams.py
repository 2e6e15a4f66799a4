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
#     display_name: Python 3
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

import altair as alt
import pandas as pd

from concurrency.data import RACE, REPLAYS, default_folder, load_manifest, load_table
from concurrency.execute.gpu.bench import bench_rows
from concurrency.execute.gpu.cases import MULTI, ONE, CaseContext, GpuCase
from concurrency.execute.gpu.race_plans import race_subjects
from concurrency.recorded import comparison_rows, pick, recorded_timelines
from concurrency.render.memory_map import memory_map_chart
from concurrency.render.timeline_chart import timeline_chart
from concurrency.timing.metrics import makespan_us
from concurrency.timing.simulate import simulate

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
def side_by_side(layer: str, layers: int | None = None) -> tuple[alt.HConcatChart, str, str]:
    """The measured timeline of `layer` with its plan's memory map, or the simulated ones."""
    found = pick(timelines, layer=layer, policy="happens_before")
    if found is not None:
        graph, placed = found.context.graph, found.placed
        timeline, title, source = found.timeline, found.title(), "measured"
    else:
        ctx = CaseContext(GpuCase(MODEL, layer, 1, layers=layers))
        graph, placed = ctx.graph, ctx.place("happens_before", MULTI)
        timeline = simulate(graph, placed.schedule, GPU, launch="graph")
        title = f"{ctx.case.label}, happens_before: simulated on {GPU} (not recorded)"
        source = "simulated"
    left = timeline_chart(timeline, title=title, width=520)
    right = memory_map_chart(
        graph,
        placed.schedule,
        placed.plan,
        placed.check.hazards,
        width=380,
        height=280,
        title=f"its memory plan ({placed.source})",
    )
    chart = alt.hconcat(left, right).resolve_scale(color="independent")
    return chart, title, source


gdn_chart, gdn_title, gdn_source = side_by_side("gdn")
print(gdn_title)
gdn_chart

# %% [markdown]
# ## The 4-layer stack
# A whole llama.cpp-shaped graph (three GDN layers and one attention layer, the output head with
# a 256-token vocabulary): its offsets are the engine's own (`engine_flow`: replayed from the
# n_ubatch-token reserve graph or re-planned, by each policy's rule).

# %%
stack_chart, stack_title, stack_source = side_by_side("stack", layers=4)
print(stack_title)
stack_chart

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
    race_frame = races[RACE_VIEW].copy()
    print(f"measured: {', '.join(sorted(set(races['device'])))}")
else:  # what the checker says each plan must do; nothing has run yet
    ctx = CaseContext(GpuCase(MODEL, "gdn", 1))
    race_frame = pd.DataFrame(
        [
            {
                "model": MODEL,
                "layer": "gdn",
                "batch": 1,
                "plan": s.label,
                "streams": s.placed.schedule.n_streams,
                "races": len(s.check.races),
                "uses_after_reuse": len(s.check.uses_after_reuse),
                "expected": {0: "never"}.get(
                    len(s.check.hazards),
                    "every run" if s.check.uses_after_reuse else "depends on timing",
                ),
            }
            for s in race_subjects(ctx)
        ]
    )
    print("not run on a GPU yet: the checker's verdicts only")
race_frame

# %% [markdown]
# ## Measured against simulated
# For every recorded timeline, the simulator's timeline of the same graph and schedule on the
# spec named like the recording's GPU: makespans, the makespan error ((simulated − measured) ÷
# measured) and the median |error| of the kernels' durations (`metrics.compare`). Where nothing
# is recorded, the simulated one-stream and multi-stream makespans alone, labelled simulated.

# %%
if recorded:
    compare_frame = pd.DataFrame(comparison_rows(timelines))
else:
    rows = []
    for layer, layers in (("gdn", None), ("stack", 4)):
        ctx = CaseContext(GpuCase(MODEL, layer, 1, layers=layers))
        for kind in (ONE, MULTI):
            schedule = ctx.schedule(kind)
            sim = simulate(ctx.graph, schedule, GPU, launch="graph")
            rows.append(
                {
                    "case": ctx.case.label,
                    "streams": schedule.n_streams,
                    "simulated_on": GPU,
                    "simulated_us": makespan_us(sim),
                    "source": "simulated",
                }
            )
    compare_frame = pd.DataFrame(rows)
compare_frame.round(3)

# %% [markdown]
# And the replay times `lace bench --from-data` prints: per graph and batch, the median of
# many CUDA-graph replays on one stream (`sequential`, as ggml runs without streams) and on the
# schedule's streams (`happens_before`), timed side by side in alternating rounds; the achieved
# bandwidth is the bytes the step must move (weights, states, KV rows read) over the median.

# %%
bench = pd.DataFrame(bench_rows(replays.to_dict("records"), ["happens_before"]))
bench.round(3) if not bench.empty else "no replay table recorded yet"
