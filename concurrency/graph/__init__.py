"""Stage 1 of the pipeline: model configs → graphs → branches → schedules.

`config` (ModelConfig presets), `ir` (Graph, Tensor), `deps` (ordering beyond data edges),
`builders` (llama.cpp's Qwen3.5 graphs), `branches` (fork detectors), `schedule` (streams,
events, happens-before). Pure Python: no GPU, plotting or widget library.
"""
