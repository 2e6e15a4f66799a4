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
# # 01 · The problem, and where a Qwen3.5 layer forks
#
# **The problem.** llama.cpp PR #21897 runs the independent branches of a layer on separate
# CUDA streams. ggml's graph allocator, which plans the compute buffer, recycles a tensor's
# bytes right after its last reader *in node order*. Once branches run concurrently that order
# is no longer the execution order: a buffer can be handed to a new tensor on one stream while
# another stream still reads it. The cells below compute it for one small Gated DeltaNet layer
# (every figure in the text is computed here, not typed).
#
# LACE builds the compute graph llama.cpp builds, node for node (checked against a real engine
# dump in the tests), and finds the **fork regions**: a node whose result feeds independent
# chains that CUDA streams could run side by side. Two detectors look at the same graph: LACE's
# general one and a port of ggml-cuda's current one.

# %% tags=["parameters"]
MODEL = "qwen3.5-27b"
BATCH = 1
SMALL_MODEL = "tiny"
MOE_MODEL = "qwen3.5-35b-a3b"

# %%
from IPython.display import Markdown

from concurrency.format import format_bytes
from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.schedule import stream_schedule
from concurrency.memory.compare import compare_policies
from concurrency.render.dot import graph_dot
from concurrency.render.tables import batch_sweep, branch_frame, hazard_frame

# %%
small = build_graph(SMALL_MODEL, "gdn", "decode", BATCH)
small_report = detect_branches(small)
small_schedule = stream_schedule(small, small_report)
(ggml_today,) = compare_policies(small, small_schedule, small_report, ["sequential"])
recycled = hazard_frame(ggml_today.hazards, tensor="attn_norm-0")
region = small_report.regions[0]
first = recycled.iloc[0] if len(recycled) else None
Markdown(
    f"On the `{SMALL_MODEL}` config, `{region.fork}` forks into {len(region.branches)} "
    f"branches ({', '.join(b.nodes[0] for b in region.branches)}), run on "
    f"{small_schedule.n_streams} streams. ggml's plan (`sequential`) has "
    f"**{len(ggml_today.hazards)} hazard(s)**; {len(recycled)} of them recycle the bytes of "
    f"`attn_norm-0`, the fork's output that every branch reads"
    + (
        f": `{first['second node']}` (stream {first['stream ']}) and `{first['first node']}` "
        f"(stream {first['stream']}) touch the same {first['size']} with nothing ordering them."
        if first is not None
        else "."
    )
)

# %%
recycled.head(6)

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

# %% [markdown]
# ## The MoE layer: a shared-expert fork
# In the mixture-of-experts models the FFN forks too: after the post-attention norm, the
# router and the routed experts form one branch and the shared expert's gate and up
# projections (and its sigmoid gate) run beside them until the expert outputs are summed.

# %%
moe = build_graph(MOE_MODEL, "stack", "decode", BATCH, None, 1)
moe_report = detect_branches(moe)
shexp = next(r for r in moe_report.regions if any("shexp" in b.nodes[0] for b in r.branches))
Markdown(
    f"In one `{MOE_MODEL}` layer ({len(moe)} nodes) the general detector finds "
    f"{len(moe_report.regions)} fork regions; the FFN one forks at `{shexp.fork}` into "
    f"{len(shexp.branches)} branches: "
    + ", ".join(f"`{b.nodes[0]}` ({len(b.nodes)} nodes)" for b in shexp.branches)
    + f". The routed branch writes "
    f"{format_bytes(sum(moe[n].nbytes for n in shexp.branches[0].nodes if not moe[n].is_view))}."
)

# %%
graph_dot(moe, moe_report, focus=shexp.fork)
