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
# # 05 · The explorer: memory reuse beside kernel overlap
#
# Pick a model, a layer, a batch size, an allocator policy, the number of streams and a GPU:
# the dashboard plans the layer's memory, checks the plan for hazards under the schedule, and
# simulates the timeline. Above: the memory map (where each tensor lives, red outlines for the
# tensors in a hazard); below: the kernels on their streams. Click a kernel to highlight the
# tensor it writes. The timeline is simulated (see notebook 04); no GPU is needed.

# %% tags=["parameters"]
MODEL = "qwen3.5-27b"
BATCH = 1

# %%
from concurrency.render.dashboard import dashboard, linked_chart, metrics_frame
from concurrency.render.explorer import Choice, explore

# %% [markdown]
# The interactive version (in JupyterLab):

# %%
dashboard(model=MODEL, batch=BATCH)

# %% [markdown]
# The same views for two fixed choices, so a static report shows them too: ggml's allocator
# today against LACE's happens-before policy, both on five streams.

# %%
racy = explore(Choice(model=MODEL, batch=BATCH, policy="sequential"))
metrics_frame(racy)

# %%
linked_chart(racy)

# %%
safe = explore(Choice(model=MODEL, batch=BATCH, policy="happens_before"))
metrics_frame(safe)

# %%
linked_chart(safe)
