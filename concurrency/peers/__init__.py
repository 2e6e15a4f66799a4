"""The peers: other implementations of the same Gated DeltaNet work, measured next to LACE.

`lace bench --peers` puts, in one table from one run on one device: LACE's GDN core kernel and
layer; flash-linear-attention's `fused_recurrent_gated_delta_rule` and `chunk_gated_delta_rule`;
a PyTorch + fla GDN decode layer in one CUDA graph on one and four streams; ggml-cuda's
GATED_DELTA_NET op (test-backend-ops perf); and upstream llama.cpp end to end
(llama-batched-bench, stream concurrency off and on in alternating rounds).

GPU-free modules (CI tests them): `results` (the table's rows and the run's metadata, saved and
loaded), `table` (the printed table), `parse` (test-backend-ops, llama-batched-bench and
llama-bench output), `trim` (the vendored llama.cpp cut down to what the device builds),
`model` (the random-weight GGUF of the peer model). Device-side modules import torch, fla or
CuPy only inside the functions that measure: `timing`, `torch_layer`, `fla_peers`,
`lace_peers`, `llama_peers`, and `device` (the one-call orchestrator the device script runs).
"""

from __future__ import annotations
