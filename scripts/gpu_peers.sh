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
# A site directory of this script's own, emptied first: a warm machine keeps what an earlier
# script installed (gpu_peers.sh's fla would make transformers pick fla's Triton kernels here).
SITE=/tmp/site-peers
rm -rf "$SITE"
PY=python3
wheels=()
for pattern in nvmath_python fla_core; do
  for w in .whl/${pattern}-*.whl; do [ -e "$w" ] && wheels+=("$w"); done
done
for mod in bindings:cuda_bindings core:cuda_core pathfinder:cuda_pathfinder; do
  if ! $PY -c "import cuda.${mod%%:*}" 2>/dev/null; then
    for w in .whl/fallback/${mod##*:}-*.whl; do [ -e "$w" ] && wheels+=("$w"); done
  fi
done
echo "== installing ${#wheels[@]} wheels into $SITE: ${wheels[*]##*/}"
if [ ${#wheels[@]} -gt 0 ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "${wheels[@]}" 2>&1 | grep -v "^WARNING: Target directory" | tail -5
fi
SRC=.llama-src
# gguf (the GGUF writer) from the carried tree's gguf-py: the machine has no gguf package
export PYTHONPATH="$SITE:$PWD:$PWD/$SRC/gguf-py" PYTHONUNBUFFERED=1
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
