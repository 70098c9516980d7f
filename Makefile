# Crucible — the two commands: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
PYTEST_ARGS ?=

.PHONY: run test test-fast bench lint fmt system-deps clean-ui

# ---------------------------------------------------------------- install

$(BIN)/python:
	@bash .ci/system-deps.sh python
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"

# Runtime dependencies (re-installed only when pyproject.toml changes).
$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

# Plus the dev group: pytest, schemathesis, playwright, ruff, ...
$(VENV)/.dev-deps: pyproject.toml $(VENV)/.run-deps
	$(BIN)/pip install --quiet -e . --group dev
	@touch $@

# ---------------------------------------------------------------- the two commands

## Install everything, migrate, build the UI (only when it changed) and start on :$(PORT).
run: $(VENV)/.run-deps
	@bash .ci/system-deps.sh run
	$(BIN)/crucible up --port $(PORT)

## Install what the suite needs and run unit, integration (SQLite + PostgreSQL) and e2e tests.
test: $(VENV)/.dev-deps
	@bash .ci/system-deps.sh test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/crucible build-ui --port $${CRUCIBLE_E2E_PORT:-3111}
	CRUCIBLE_REQUIRE_POSTGRES=1 CRUCIBLE_REQUIRE_DOCKER=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# ---------------------------------------------------------------- extras

## Unit + integration only (no browser).
test-fast: $(VENV)/.dev-deps
	$(BIN)/python -m pytest -m "not e2e" $(PYTEST_ARGS)

bench: $(VENV)/.dev-deps
	$(BIN)/python bench/api.py
	$(BIN)/python bench/queue.py
	$(BIN)/python bench/runner.py
	$(BIN)/python bench/state.py
	$(BIN)/python bench/policy.py
	$(BIN)/python bench/webhooks.py

lint: $(VENV)/.dev-deps
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

fmt: $(VENV)/.dev-deps
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

clean-ui:
	rm -rf .web .states
