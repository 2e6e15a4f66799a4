#!/usr/bin/env bash
# LACE's GPU self-check, for a lent GPU machine (no network): install the carried wheels into
# /tmp/site, then `python -m concurrency.execute.gpu.selfcheck` (versions, NVRTC compile of every
# kernel, the GPU tests with a results table, a replay-timing smoke, a CUPTI timeline).
#   carry .whl/ (nvmath-python, cupti-python, pytest and its deps; fallback/ holds cuda-core,
#   cuda-pathfinder and cuda-bindings, installed only when the machine lacks them).
#   bash scripts/gpu_check.sh [--no-timing] [--rounds N] [--replays N] [-k EXPR] [--tests FILE ...]
# Results: $OUT (default ./gpu-selfcheck) receives three files — selfcheck.tar.gz (every JUnit
# XML, pytest log, timeline JSON and table), results.txt and timing.txt; the output ends with a
# recap (results per test function, failures, the timing table, per-kernel CUPTI tables).
# fla wheels are deliberately NOT installed: transformers would then run fla's Triton kernels
# (TF32, ~1e-3) instead of its float64-capable torch functions in the comparison tests.
set -u
cd "$(dirname "$0")/.."
source scripts/device_site.sh
device_site check --pytest nvmath_python cupti_python
exec $PY -m concurrency.execute.gpu.selfcheck --out "${OUT:-gpu-selfcheck}" "$@"
