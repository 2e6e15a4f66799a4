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
