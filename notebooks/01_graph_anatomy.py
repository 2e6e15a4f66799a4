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
# # 01 · Graph anatomy: where a Qwen3.5 layer forks
#
# LACE builds the compute graph llama.cpp builds for one layer, node for node (checked against a
# real engine dump in the tests), and finds the **fork regions**: a node whose result feeds
# independent chains that CUDA streams could run side by side. Two detectors look at the same
# graph: LACE's general one and a port of ggml-cuda's current one.

# %% tags=["parameters"]
MODEL = "qwen3.5-27b"
BATCH = 1

# %%
from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.render.dot import graph_dot
from concurrency.render.tables import batch_sweep, branch_frame

# %% [markdown]
# ## The Gated DeltaNet layer
# `attn_norm` forks into four projections: qkv (then the conv, SiLU and the L2 norms of q and
# k), alpha (the decay gate), beta, and z. The first three meet at the fused `GATED_DELTA_NET`
# op; z joins only at the gated RMSNorm after it. The conv- and recurrent-state gathers depend
# on no branch and stay on the main stream.

# %%
gdn = build_graph(MODEL, "gdn", "decode", BATCH)
graph_dot(gdn)

# %% [markdown]
# ggml-cuda's detector (fan-out exactly 3, one-row consumers, every node between fork and join in
# a branch) turns this layer down, and says why:

# %%
branch_frame(gdn, detect_branches(gdn, "general"))

# %%
branch_frame(gdn, detect_branches(gdn, "ggml"))

# %% [markdown]
# ## The gated full-attention layer
# Here ggml-cuda's pattern fits: Q (with its output gate), V and K fork from `attn_norm` and join
# at flash attention; the KV-cache writes belong to their branch through the cache they write.

# %%
attn = build_graph(MODEL, "attn", "decode", BATCH)
graph_dot(attn, detector="ggml")

# %%
branch_frame(attn, detect_branches(attn, "ggml"))

# %% [markdown]
# With more than one token per graph, ggml-cuda's detector counts no fan-out at all (its
# `nrows <= 1` rule), while the general detector finds the same regions at any batch size:

# %%
attn_b4 = build_graph(MODEL, "attn", "decode", 4)
branch_frame(attn_b4, detect_branches(attn_b4, "ggml"))

# %% [markdown]
# ## How the branches grow with batch size
# Bytes each branch writes, per decode batch: the qkv chain dominates; beta and alpha stay tiny.

# %%
batch_sweep(MODEL, "gdn", [1, 2, 4, 8, 16, 32, 64])
