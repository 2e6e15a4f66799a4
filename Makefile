# LACE's two jobs, each doing its own set-up first:
#   make report   execute every notebook in notebooks/ headless; HTML lands in reports/
#   make test     ruff, then the whole pytest suite (notebook execution included)
# `make setup` alone makes .venv, installs the package when pyproject.toml changes and checks
# that Graphviz's `dot` is on PATH; it is quick when everything is already in place.
# `make test` also installs Debian's Chromium (as root with apt-get) for the browser tests,
# which Playwright drives; where none can be had they are skipped with the reason.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.lace-installed
DOT_FIX := install Graphviz: apt-get install graphviz / brew install graphviz / conda install -c conda-forge graphviz

.PHONY: setup report test bench graphviz oracle chromium

report: setup
	$(PYTHON) -m concurrency report

test: setup
	@$(MAKE) --no-print-directory oracle || echo "lace: the ggml oracle could not be built; its fidelity tests will be skipped (see above)" >&2
	@$(MAKE) --no-print-directory chromium || echo "lace: no Chromium; the browser tests will be skipped (see above)" >&2
	$(VENV)/bin/ruff check .
	$(PYTHON) -m pytest

# Benchmarks print pytest-benchmark's table (they run once, untimed, inside `make test`).
bench: setup
	$(PYTHON) -m pytest tests/test_bench.py --benchmark-enable --benchmark-only

setup: $(STAMP) graphviz

# Only the venv's existence matters (order-only), not its interpreter's timestamp. A failed
# `python3 -m venv` leaves a half-made folder, so remove it and say what to install.
$(PYTHON):
	@echo "lace: creating $(VENV) with python3 -m venv"
	@python3 -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "lace: python3 -m venv failed; install Python's venv module (apt-get install python3-venv)" >&2; \
	  exit 1; }

# Reinstall whenever pyproject.toml (dependencies, entry points) is newer than the stamp.
$(STAMP): pyproject.toml | $(PYTHON)
	@echo "lace: installing lace-kit and its dev tools into $(VENV)"
	$(PYTHON) -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $@

# The ggml oracle: llama-cpp-python 0.3.36 built from source for the CPU, as small as its CMake
# options allow; the wheel is cached so later runs only install it (about 6 minutes the first time
# on 2 cores). Then gguf (the `oracle` extra), which the engine probe writes its models with.
ORACLE_VERSION := 0.3.36
WHEELS := $(HOME)/.cache/lace/wheels
ORACLE_CMAKE := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF \
  -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DGGML_LLAMAFILE=OFF -DCMAKE_BUILD_TYPE=Release

oracle: $(STAMP)
	@$(PYTHON) -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llama_cpp') is None)" || { \
	  mkdir -p $(WHEELS); \
	  if ! ls $(WHEELS)/llama_cpp_python-$(ORACLE_VERSION)-*.whl >/dev/null 2>&1; then \
	    echo "lace: building llama-cpp-python $(ORACLE_VERSION) for the CPU (first time only, several minutes)"; \
	    CMAKE_ARGS="$(ORACLE_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	      $(PYTHON) -m pip wheel --disable-pip-version-check -q --no-deps \
	      --no-binary llama-cpp-python -w $(WHEELS) llama-cpp-python==$(ORACLE_VERSION); \
	  fi; \
	  $(PYTHON) -m pip install --disable-pip-version-check -q $(WHEELS)/llama_cpp_python-$(ORACLE_VERSION)-*.whl; \
	}
	@$(PYTHON) -c "from importlib.metadata import version; import sys; \
	  sys.exit(tuple(map(int, version('gguf').split('.')[:2])) < (0, 19))" 2>/dev/null || \
	  $(PYTHON) -m pip install --disable-pip-version-check -q 'gguf>=0.19'

# The graphviz Python package only drives the `dot` program; it does not ship it.
graphviz:
	@command -v dot >/dev/null 2>&1 && exit 0; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" -eq 0 ]; then \
	  echo "lace: Graphviz's dot not found; installing it with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; \
	  command -v dot >/dev/null 2>&1 || { echo "lace: dot still missing; $(DOT_FIX)" >&2; exit 1; }; \
	else \
	  echo "lace: Graphviz's dot not found; $(DOT_FIX)" >&2; exit 1; \
	fi

# The browser tests drive the system's Chromium through Playwright (never `playwright install`,
# which downloads a browser of its own). Installed like Graphviz: apt-get as root, else a hint.
CHROMIUM_FIX := install Chromium: apt-get install chromium (Debian/Ubuntu) or put chromium on PATH

chromium:
	@command -v chromium >/dev/null 2>&1 && exit 0; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" -eq 0 ]; then \
	  echo "lace: Chromium not found; installing it with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  command -v chromium >/dev/null 2>&1 || { echo "lace: chromium still missing; $(CHROMIUM_FIX)" >&2; exit 1; }; \
	else \
	  echo "lace: Chromium not found; $(CHROMIUM_FIX)" >&2; exit 1; \
	fi
