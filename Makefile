# Two entry points, both safe on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test setup lint

$(BIN)/gatescope: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

# torch==2.13.0 first: it resolves to the CPU wheel on disk; a bare `torch` would pull CUDA.
$(VENV)/.test-deps: $(BIN)/gatescope
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.test-deps

demo: $(BIN)/gatescope
	$(BIN)/gatescope demo

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -n 2 -q
