# Sourced by the scripts/gpu_*.sh device scripts: installs the wheels carried in .whl/ into a
# site directory of the calling script's own and puts it (and the checkout) on PYTHONPATH.
#
#   source scripts/device_site.sh
#   device_site NAME [--pytest] PATTERN...   # e.g. device_site check --pytest nvmath_python
#
# NAME: the site is /tmp/site-NAME, emptied first (a warm machine keeps what an earlier script
# installed: gpu_peers.sh's fla would make transformers pick fla's Triton kernels elsewhere).
# --pytest: add pytest and its dependencies, only where the machine has no pytest (the image's
# own keeps its plugins working). PATTERN: wheel name prefixes in .whl/. cuda-bindings,
# cuda-core and cuda-pathfinder come from .whl/fallback/ only where the machine lacks them.
# Sets SITE and PY (python3); exports PYTHONPATH="$SITE:$PWD" and PYTHONUNBUFFERED=1.
device_site() {
  local name=$1
  shift
  SITE=/tmp/site-$name
  PY=python3
  rm -rf "$SITE"
  local wheels=() patterns=() w pattern mod
  for pattern in "$@"; do
    if [ "$pattern" = --pytest ]; then
      if ! $PY -c "import pytest" 2>/dev/null; then
        patterns+=(pytest pluggy iniconfig pygments)
      fi
    else
      patterns+=("$pattern")
    fi
  done
  for pattern in "${patterns[@]}"; do
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
  export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1
}
