# LACE's two jobs, each doing its own set-up first:
#   make report   execute every notebook in notebooks/ headless; HTML lands in reports/
#   make test     ruff, then the whole pytest suite (notebook execution included)
# `make setup` alone makes .venv, installs the package when pyproject.toml changes and checks
# that Graphviz's `dot` is on PATH; it is quick when everything is already in place.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.lace-installed
DOT_FIX := install Graphviz: apt-get install graphviz / brew install graphviz / conda install -c conda-forge graphviz

.PHONY: setup report test bench graphviz

report: setup
	$(PYTHON) -m concurrency report

test: setup
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
