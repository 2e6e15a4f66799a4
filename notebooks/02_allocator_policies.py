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
# # 02 · Allocator policies: which plans race, and what safety costs
#
# ggml's allocator recycles a tensor's bytes right after its last reader *in node order*. Once the
# branches of a layer run on several CUDA streams that order is no longer the execution order,
# and a recycled buffer can be overwritten while another stream still reads it. LACE plans the
# same graph and schedule under six policies on ggml's mechanics (different rules for *when*
# bytes may be reused) and, for comparison outside ggml, under PyTorch's CUDA caching allocator
# with and without `record_stream`; it proves each plan race-free or lists its races,
# reproduces the corruption on the CPU, and prices each safe policy against a lower bound.

# %% tags=["parameters"]
MODEL = "qwen3.5-27b"
BATCH = 1
SMALL_MODEL = "tiny"
SEEDS = 8
BATCHES = [1, 2, 4, 8, 16, 32, 64]

# %%
import pandas as pd

from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.schedule import stream_schedule
from concurrency.memory.compare import compare_policies, policy_runs, policy_sweep
from concurrency.memory.ggml.cuda_is_valid import is_valid_ggml
from concurrency.memory.policies import POLICIES
from concurrency.render import vega
from concurrency.render.memory_map import memory_map_chart, policy_frame, policy_sweep_chart
from concurrency.render.tables import hazard_frame

vega.enable()  # charts draw with the Vega that ships with LACE: no network needed

# %% [markdown]
# ## One Gated DeltaNet layer under every policy
# Four branches (qkv, alpha, beta, z) on streams 1–4, everything else on stream 0. *Lower
# bound*: the largest total size of tensors that may be live at the same moment under this
# schedule — no race-free plan can use less. *Efficiency* = lower bound ÷ arena.

# %%
gdn = build_graph(MODEL, "gdn", "decode", BATCH)
report = detect_branches(gdn)
schedule = stream_schedule(gdn, report)
results = {r.policy: r for r in compare_policies(gdn, schedule, report, list(POLICIES))}
policy_frame(results.values())

# %% [markdown]
# `sequential` (ggml today) and `interleave` (#16991's reordering) have hazards; the other ggml
# policies have none, and here neither has PyTorch's allocator (its arena is its reserved
# memory: whole 2 MiB and 20 MiB segments; the section on PyTorch below shows when it races).
# The memory map shows where: rectangles are tensors from their writer to their last access,
# coloured by the stream that writes them; red outlines mark tensors in a hazard.

# %%
seq = results["sequential"]
memory_map_chart(gdn, schedule, seq.plan, seq.hazards)

# %%
hazard_frame(seq.hazards).head(12)

# %% [markdown]
# In llama.cpp's real node order the z projection comes *last* (after the fused GDN op), so for
# this layer `attn_norm` stays alive until z has read it and plain `sequential` does not hand
# its bytes away inside the layer; its races come from the z branch being planned onto bytes
# the qkv chain still uses. `interleave` reorders the region round-robin before planning; that
# frees `attn_norm` early, and a later branch node lands on it while other branches may still
# read it — the seed's bug (#21897: "re-use the `node->src` tensors assuming sequential
# execution"):

# %%
inter = results["interleave"]
hazard_frame(inter.hazards, tensor="attn_norm-0").head(8)

# %% [markdown]
# On a small config the plain `sequential` plan already puts a z-branch tensor on
# `attn_norm`'s bytes:

# %%
small = build_graph(SMALL_MODEL, "gdn", "decode", BATCH)
small_report = detect_branches(small)
small_schedule = stream_schedule(small, small_report)
(small_seq,) = compare_policies(small, small_schedule, small_report, ["sequential"])
hazard_frame(small_seq.hazards, tensor="attn_norm-0")

# %% [markdown]
# ## Outside ggml: PyTorch's caching allocator
# vLLM and SGLang overlap work on side streams in eager PyTorch. Its caching allocator keeps a
# pool per stream: a freed block is reused only by a later allocation on the stream that
# allocated it, unless `record_stream` marked other streams' uses (then it waits for them).
# With each branch on its own stream, as above, no branch stream allocates again inside the
# layer, so nothing races. With one auxiliary stream, as those engines use, `q_l2` and `k_l2`
# (made on the side stream, read by the GDN op on the main stream) go back to the side
# stream's pool as soon as the GDN op is issued, and the z projection, issued next on the side
# stream, takes their bytes while the GDN op may still read them. `record_stream` closes it.

# %%
aux_schedule = stream_schedule(gdn, report, max_streams=2)
torch_results = {
    r.policy: r
    for r in compare_policies(
        gdn, aux_schedule, report, ["sequential", "torch_caching", "torch_record_stream"]
    )
}
policy_frame(torch_results.values())

# %%
hazard_frame(torch_results["torch_caching"].hazards)

# %% [markdown]
# ## What ggml-cuda's own check sees
# ggml-cuda validates a region at run time with `is_valid()`: it compares the *write* ranges of
# different streams and rejects a branch reading another stream's output. It never looks at
# sources produced outside the region, such as the fork output. On the attention layer (the
# only region ggml-cuda accepts) the interleaved plan passes `is_valid()`, while LACE's checker
# lists what it misses:

# %%
attn = build_graph(MODEL, "attn", "decode", 1)
attn_report = detect_branches(attn, "ggml")
attn_schedule = stream_schedule(attn, attn_report)
attn_results = {
    r.policy: r
    for r in compare_policies(
        attn, attn_schedule, attn_report, ["sequential", "interleave", "happens_before"]
    )
}
pd.DataFrame(
    [
        {
            "policy": name,
            "is_valid()": is_valid_ggml(attn, attn_schedule, r.plan, attn_report.regions[0]),
            "hazards found by LACE": len(r.hazards),
        }
        for name, r in attn_results.items()
    ]
)

# %% [markdown]
# ## The corruption, reproduced on the CPU
# The NumPy executor runs the small layer in float32 inside each plan's arena (one byte buffer,
# every tensor a view at its planned offset), node by node in a random order the schedule
# allows, and compares with a float64 reference. Unsafe plans give wrong numbers for some
# orders; safe plans match for every order tried.

# %%
pd.DataFrame(policy_runs(small, small_schedule, small_report, list(POLICIES), range(SEEDS)))

# %% [markdown]
# ## The memory price of safety, across batch sizes
# Arena ÷ lower bound per policy (dashed: plans with hazards). `happens_before` reuses bytes as
# soon as the schedule proves the old tensor's accesses are over, so it stays closest to the
# bound; `alloc_dep` keeps a region's tensors until its last join; `no_alloc_free` never frees
# them; `no_reuse` never reuses anything. PyTorch's pair pays for whole segments per stream,
# which weighs most at small batches.

# %%
sweep = pd.DataFrame(policy_sweep(MODEL, "gdn", BATCHES, list(POLICIES)))
policy_sweep_chart(sweep)

# %%
sweep.pivot(index="batch", columns="policy", values="arena_bytes")

# %% [markdown]
# ## A whole model
# Planned on its own (`flow="graph"`), a 64-layer decode stack shows how the pinned memory of
# `no_alloc_free` accumulates region after region (inside LACE's general regions it pins the
# state gathers too), while `alloc_dep` and `happens_before` free each region's memory after
# its join. (In the running engine a decode step replays the 512-token reserve plan instead:
# notebook 03 and `lace plan --flow engine`.)

# %%
stack = build_graph(MODEL, "stack", "decode", BATCH)
stack_report = detect_branches(stack)
stack_schedule = stream_schedule(stack, stack_report)
policy_frame(compare_policies(stack, stack_schedule, stack_report, list(POLICIES), flow="graph"))
