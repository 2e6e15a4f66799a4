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
# A site directory of this script's own, emptied first: a warm machine keeps what an earlier
# script installed (gpu_peers.sh's fla would make transformers pick fla's Triton kernels here).
SITE=/tmp/site-check
rm -rf "$SITE"
PY=python3
wheels=()
for pattern in nvmath_python cupti_python; do
  for w in .whl/${pattern}-*.whl; do [ -e "$w" ] && wheels+=("$w"); done
done
# pytest only where the machine has none (the image's own pytest keeps its plugins working)
if ! $PY -c "import pytest" 2>/dev/null; then
  for pattern in pytest pluggy iniconfig pygments; do
    for w in .whl/${pattern}-*.whl; do [ -e "$w" ] && wheels+=("$w"); done
  done
fi
for mod in bindings:cuda_bindings core:cuda_core pathfinder:cuda_pathfinder; do
  if ! $PY -c "import cuda.${mod%%:*}" 2>/dev/null; then
    for w in .whl/fallback/${mod##*:}-*.whl; do [ -e "$w" ] && wheels+=("$w"); done
  fi
done
echo "== installing ${#wheels[@]} wheels into $SITE: ${wheels[*]##*/}"
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" "${wheels[@]}" 2>&1 | grep -v "^WARNING: Target directory" | tail -5
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1
exec $PY -m concurrency.execute.gpu.selfcheck --out "${OUT:-gpu-selfcheck}" "$@"
