"""Stage 2: memory plans for a graph under a schedule, and checks that they are safe.

`plan` (MemoryPlan), `ggml/` (ggml-alloc ported rule by rule), `policies/` (the allocator
policies), `bound` (the lower bound), `check` (races and use after reuse), `engine_flow`
(llama.cpp's reserve, then replay or re-plan by each policy's rule), `sites` (where a hazard
is: GDN, attention, FFN or MoE fork), `compare` (every policy side by side). Pure Python.
"""
