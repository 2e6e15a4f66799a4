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
# # 03 · Fidelity: LACE's plans against ggml-alloc itself
#
# A memory map is only worth showing if LACE's `sequential` policy *is* ggml's allocator. Here the
# same graphs are planned twice: by LACE's Python port and by the real `ggml_gallocr` (the ggml
# that llama-cpp-python 0.3.36 vendors, driven through its C API), and every offset and the
# buffer size are compared. `interleave` is ggml-alloc on ggml-cuda's interleaved order and
# `alloc_dep` is ggml-alloc with #27301's dependency nodes inserted as ggml's scheduler inserts
# them, so those are checked too. (`no_alloc_free` was never merged and `happens_before` is
# LACE's own: ggml has no twin for them.)

# %% tags=["parameters"]
MODELS = ["tiny", "qwen3.5-0.8b", "qwen3.5-27b"]
BATCHES = [1, 4]

# %%
import pandas as pd

from concurrency.oracle.fidelity import fidelity_table, load_oracle, preset_cases

ggml, status = load_oracle()
status

# %% [markdown]
# Each row: one graph (GDN layer, attention layer, 4-layer stack; decode and prefill), one
# policy, the arena both allocators chose, and whether every tensor got the same offset.

# %%
rows = fidelity_table(ggml, preset_cases(MODELS, BATCHES)) if ggml else []
table = pd.DataFrame([r.row() for r in rows])
table

# %%
f"{int(table['equal'].sum())} of {len(table)} plans identical" if len(table) else status

# %% [markdown]
# ## Against the running engine
# The allocator being right is not enough: llama.cpp plans its compute buffer once, on the
# worst-case graphs it reserves when a context is created (prompt processing at `n_ubatch` = 512
# tokens, token generation, prompt processing again), and every later graph with the same node
# count whose tensors fit replays those offsets. So the memory a decode step shares between
# tensors is decided by the 512-token plan. LACE's `--flow engine` reproduces that flow; below,
# LACE's graphs and offsets are checked against a random-weight GGUF of each model (scaled down,
# head structure kept) running in llama.cpp itself — when the probe can run here.

# %%
from concurrency.graph.config import get_config, scaled_down
from concurrency.memory.engine_hazards import engine_hazard_table
from concurrency.oracle.engine_compare import engine_fidelity
from concurrency.oracle.fidelity import load_probe

probe, probe_status = load_probe()
probe_status

# %%
ENGINE_MODELS = ["tiny", "qwen3.5-27b", "qwen3.5-35b-a3b", "qwen3-next-80b-a3b"]
engine_rows = (
    [
        engine_fidelity(probe(cfg, b, 8), cfg).row()
        for cfg in (scaled_down(get_config(m)) for m in ENGINE_MODELS)
        for b in (1, 2)
    ]
    if probe
    else []
)
pd.DataFrame(engine_rows)

# %% [markdown]
# ## The races the seed's concurrency would really hit
# The hazard checker on the engine's own offsets (the reserve plan replayed into the decode
# graph) under the four-branch GDN schedule, next to what a plan of the decode graph alone
# predicts. The sets depend on the model and the batch size; on small configs the engine puts
# silu(z) on `attn_norm`'s bytes while the other branches may still read it (the seed's bug), and
# the alpha and beta projections in one block.

# %%
hazard_rows = engine_hazard_table(
    ["tiny", "qwen3.5-0.8b", "qwen3.5-9b", "qwen3.5-27b"], [1, 2, 4, 8]
)
pd.DataFrame([r.row() for r in hazard_rows])

# %%
from concurrency.render.tables import hazard_frame

tiny_b1 = hazard_rows[0]
hazard_frame(tiny_b1.engine, tensor="attn_norm-0")
