# The two commands a new machine needs: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: run test lint typecheck unit bench format clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Sparklio needs Python 3.11 or newer: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[dev]'
	@touch $@ $(VENV)/.installed

## Start the gateway (mock mode unless GENERATOR_MODE=live) on $(HOST):$(PORT).
run: $(VENV)/.installed
	$(BIN)/sparklio serve --host $(HOST) --port $(PORT)

## Lint, type-check and run the test suite.
test: lint typecheck unit

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check sparklio tests bench
	$(BIN)/ruff format --check sparklio tests bench

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

unit: $(VENV)/.installed-dev
	$(BIN)/pytest

## Benchmarks print figures; they are not tests.
bench: $(VENV)/.installed-dev
	$(BIN)/python bench/gateway_overhead.py

format: $(VENV)/.installed-dev
	$(BIN)/ruff format sparklio tests bench
	$(BIN)/ruff check --fix sparklio tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
