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
# # 05 · The explorer: memory reuse beside kernel overlap
#
# Pick a model, a layer (or the whole model), decode or prefill, a batch size, an allocator
# policy, the number of streams and a GPU: the dashboard plans the memory, checks the plan for
# hazards under the schedule and simulates the timeline, all on one time axis.
#
# - **Memory map** (top, as PyTorch's memory_viz draws it): a rectangle per tensor from its
#   writer to its last reader, bytes up; every tensor is at least a few pixels tall (the
#   "bytes to scale" button gives the true proportions). Red bands with a ▲ (race) or ◆ (use
#   after reuse) are hazards; the *hazards* tab lists them.
# - **Live bytes** (middle): the arena's live bytes over time; the red cursor follows the
#   pointer and says how many tensors are live.
# - **Timeline** (bottom, as Nsight Systems draws it): a lane per stream, arrows for event
#   waits; recorded GPU timelines from `data/` appear below it when there are any.
#
# Click a tensor or a kernel: the tensor, its writer and readers light up and the tensors
# placed on its bytes are outlined; the *selected tensor* tab gives its lifetime and sharers.
# The wheel zooms time, dragging pans, double-click resets. The timeline is simulated
# (notebook 04); no GPU is needed.

# %% tags=["parameters"]
MODEL = "qwen3.5-27b"
BATCH = 1
POLICY = "sequential"
GPU = "h100"

# %%
from pathlib import Path

from concurrency.render import vega
from concurrency.render.dashboard import dashboard, metrics_frame
from concurrency.render.explorer import Choice, explore
from concurrency.render.linked import compare_chart

vega.enable()
DATA = Path("..") / "data"

# %% [markdown]
# The interactive version (in JupyterLab; a static report shows it for the starting choice):

# %%
dashboard(model=MODEL, batch=BATCH, policy=POLICY, gpu=GPU, data=DATA)

# %% [markdown]
# The same views for two fixed choices side by side, so a static report shows them too:
# ggml's allocator today against LACE's happens-before policy, both on the general detector's
# streams. Clicking a tensor in one selects it in the other.

# %%
racy = explore(Choice(model=MODEL, batch=BATCH, policy="sequential", gpu=GPU))
safe = explore(Choice(model=MODEL, batch=BATCH, policy="happens_before", gpu=GPU))
compare_chart(racy, safe)

# %%
metrics_frame(racy).merge(metrics_frame(safe), how="outer")
