#!/usr/bin/env bash
# LACE's peers in one device call (issue 14 item 1): LACE, fla, PyTorch + fla, ggml-cuda's
# GATED_DELTA_NET and llama.cpp end to end, measured in the same run on the same GPU.
#   carry: .whl        nvmath_python-1.0.0 and fla_core-0.6.0 (fallback/: cuda-core,
#                      cuda-bindings, cuda-pathfinder, installed only where the machine lacks them)
#          .llama-src  the trimmed vendored llama.cpp: python -m concurrency.peers.trim
#                      <sdist>/vendor/llama.cpp .llama-src (≈ 15 MB)
#   bash scripts/gpu_peers.sh [python -m concurrency.peers.device options]
# Results in $OUT: peers.json (rows + metadata), peers-table.txt, llama-raw.txt, llama-build.log,
# llama-model.log; stdout is the progress log and the table (`tee $OUT/peers-log.txt`).
set -u
cd "$(dirname "$0")/.."
source scripts/device_site.sh
device_site peers nvmath_python fla_core
SRC=.llama-src
# gguf (the GGUF writer) from the carried tree's gguf-py: the machine has no gguf package
export PYTHONPATH="$SITE:$PWD:$PWD/$SRC/gguf-py"
# the GATED_DELTA_NET perf cases of the 27B dims, added to test-backend-ops (once)
PATCH=scripts/peers/test-backend-ops-gdn.patch
if [ -f "$SRC/tests/test-backend-ops.cpp" ] && ! grep -q "LACE peers: Qwen3.5-27B" "$SRC/tests/test-backend-ops.cpp"; then
  if command -v patch >/dev/null; then
    patch -p1 -d "$SRC" --forward --no-backup-if-mismatch < "$PATCH"
  else
    $PY -m concurrency.peers.patching "$SRC" "$PATCH"
  fi || echo "== the test-backend-ops patch did not apply; ggml-cuda rows will say so"
fi
exec $PY -m concurrency.peers.device --out "${OUT:-peers-out}" --llama-src "$SRC" "$@"
