#!/usr/bin/env bash
# LACE's GPU recording, for a lent GPU machine (no network): install the carried wheels into
# /tmp/site (as scripts/gpu_check.sh does), compile every kernel once (NVRTC), then
# `lace record`: the race experiment and the replay sweep, written into data/ of this checkout.
#   carry .whl/ (nvmath-python, cupti-python; fallback/ holds cuda-core, cuda-pathfinder and
#   cuda-bindings, installed only when the machine lacks them).
#   bash scripts/gpu_record.sh [extra `lace record` options, e.g. --budget-s 200]
# Into $OUT (default ./gpu-record), at most 5 files:
#   lace-record.tar.gz   the new data/ contents (data/manifest.json and the recording folder):
#                        unpack with `tar -xzf lace-record.tar.gz -C data/` in the repository
#   record-report.txt    every table in full, and the log
#   record-stderr.txt    progress and warnings
#   bench.txt            `lace bench --from-data data --policies all` (the committed view)
# The summary printed last fits in a few kilobytes. Budgets (lace record's defaults): race
# 120 s, sweep 230 s, plus the install, the compile and the last piece of work started: about
# 7 minutes on an H200.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-record}"
mkdir -p "$OUT"
source scripts/device_site.sh
device_site record nvmath_python cupti_python
T0=$(date +%s)

echo "== versions"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$PY - <<'EOF'
from importlib import metadata
for d in ("cupy-cuda13x", "nvmath-python", "cupti-python", "torch", "numpy", "pandas", "pyarrow"):
    try:
        print(f"  {d:<14} {metadata.version(d)}")
    except metadata.PackageNotFoundError:
        print(f"  {d:<14} absent")
EOF

echo "== compiling the kernels (NVRTC)"
$PY - <<'EOF'
import time
from concurrency.execute.gpu import kernels
t = time.perf_counter()
for source in kernels.sources():
    module = kernels.module(source)
    for name in kernels.kernel_names(source):
        module.get_function(name)
print(f"  {len(kernels.sources())} files in {time.perf_counter() - t:.0f} s")
EOF

echo "== lace record (progress in $OUT/record-stderr.txt)"
before=" $(ls data | tr '\n' ' ') "
# a hard stop well inside the machine's 10 minutes: lace record writes its tables and manifest
# after every case and graph, so a stopped run keeps what it measured
left=$(( 550 - ($(date +%s) - T0) ))
timeout "$left" $PY -m concurrency record --out data --report "$OUT/record-report.txt" \
  "$@" >"$OUT/record-summary.txt" 2>"$OUT/record-stderr.txt"
rc=$?
echo "  lace record exit status $rc after $(( $(date +%s) - T0 )) s (124: stopped at ${left} s)"
grep -E "Traceback|lace: error" "$OUT/record-stderr.txt" | tail -5

$PY -m concurrency bench --from-data data --policies all >"$OUT/bench.txt" 2>&1
new=""
shopt -s nullglob
for f in data/*/; do
  f=$(basename "$f"); case "$before" in *" $f "*) ;; *) new="$new $f" ;; esac
done
tar -czf "$OUT/lace-record.tar.gz" -C data manifest.json $new
echo "== into $OUT: $(cd "$OUT" && ls -1 | tr '\n' ' ')"
echo "   lace-record.tar.gz: $(du -h "$OUT/lace-record.tar.gz" | cut -f1) ($new)"
if [ -s "$OUT/record-summary.txt" ]; then
  echo "== summary (lace record's stdout)"
  cat "$OUT/record-summary.txt"
else  # stopped or failed before its summary: what the files say
  echo "== no summary; the last progress lines and the recorded replay pairs"
  tail -15 "$OUT/record-stderr.txt" | cut -c1-200
  head -40 "$OUT/bench.txt" | cut -c1-160
fi
rm -f "$OUT/record-summary.txt"
echo "== total $(( $(date +%s) - T0 )) s"
exit $rc
