"""Stage 3: timelines — the cost model, GPU specs, the stream simulator, metrics and traces.

`timeline` (the Timeline value, simulated or measured), `gpus`, `cost`, `simulate`,
`metrics` (HTA-named), `trace` (Chrome/Perfetto JSON), `stream_study` (one stream vs many).
Pure Python: no GPU, plotting or widget library.
"""
