#!/usr/bin/env bash
# Issue 13's gated-delta-rule kernels on a lent GPU machine in one device call (about 4 minutes
# on an H200):
#   1. the gated-delta GPU tests: pytest -m gpu tests/test_gpu_kernels.py -k gated_delta
#   2. the timings: python -m concurrency.peers.gdn_bench (LACE's core op at decode B = 1, 4, 16,
#      64 and prefill T = 512 (B = 1, 4), T = 2048 (B = 1), the chunked_tf32 form, each chunked
#      kernel alone, the Qwen3.5-27B GDN decode layer one stream against the schedule's streams)
#   3. the GDN layer tests (tests/test_gpu_layers.py -k gdn), then the stacks' prompts while time
#      is left
#   4. the table once more, last (LACE next to issue 13's fla and ggml-cuda figures).
#   carry .whl/ (nvmath-python; pytest and its deps where the machine has none; fallback/ holds
#   cuda-core, cuda-pathfinder and cuda-bindings, installed only when the machine lacks them).
#   bash scripts/gpu_gdn.sh
# Results in $OUT (default ./gdn-out), six files: tests-kernels.log, junit-kernels.xml (each
# test's error against float64 and its tolerance), tests-layers.log, gdn-log.txt,
# gdn-bench.json, gdn-table.txt.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gdn-out}
mkdir -p "$OUT"
source scripts/device_site.sh
device_site gdn --pytest nvmath_python
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null
PYTEST=($PY -m pytest -m gpu -p no:cacheprovider -o addopts= -q -rfE --tb=short --durations=5)

echo "== [$SECONDS s] gated-delta kernel tests"
timeout 150 "${PYTEST[@]}" --junitxml="$OUT/junit-kernels.xml" tests/test_gpu_kernels.py \
  -k "gated_delta or recurrent_and_chunked" >"$OUT/tests-kernels.log" 2>&1
echo "   rc=$?"
grep -E "passed|failed|error|FAILED|ERROR|TIMEOUT" "$OUT/tests-kernels.log" | tail -30
$PY - "$OUT/junit-kernels.xml" <<'EOF_PY' 2>/dev/null || echo "   (no JUnit file)"
import sys, xml.etree.ElementTree as ET
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    bad = [t for t in ("failure", "error", "skipped") if case.find(t) is not None]
    print(f"   {case.get('name')[:66]:<66} {props.get('max_rel_error', '-'):>10} "
          f"tol {props.get('tolerance', '-'):>6} {bad[0] if bad else 'ok'}")
EOF_PY

echo "== [$SECONDS s] timings"
timeout 150 $PY -m concurrency.peers.gdn_bench --out "$OUT" 2>&1 | tee "$OUT/gdn-log.txt"

echo "== [$SECONDS s] GDN layer tests, then the stacks' prompts in the time left"
: >"$OUT/tests-layers.log"
for expr in "gdn" "stack and prefill"; do
  left=$((225 - SECONDS))
  if [ $left -lt 20 ]; then
    echo "   -k '$expr': not run (time budget)" | tee -a "$OUT/tests-layers.log"
    continue
  fi
  echo "== -k '$expr' (limit $left s)" >>"$OUT/tests-layers.log"
  timeout $left "${PYTEST[@]}" tests/test_gpu_layers.py -k "$expr" >>"$OUT/tests-layers.log" 2>&1
  echo "   -k '$expr': rc=$? (124: stopped at the time budget; the log shows how far it got)"
done
grep -E "^== -k|passed|failed|error|FAILED|ERROR" "$OUT/tests-layers.log" | tail -30

echo "== [$SECONDS s] done"
cat "$OUT/gdn-table.txt" 2>/dev/null || echo "(no table: the timings did not finish)"
