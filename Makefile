# Two entry points, both safe on a fresh machine: `make demo` and `make test` (what CI runs).
# `make docs` builds the documentation site into site/.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test setup lint browser docs

$(BIN)/gatescope: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

# torch==2.13.0 first: it resolves to the CPU wheel on disk; a bare `torch` would pull CUDA.
$(VENV)/.test-deps: $(BIN)/gatescope
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,docs]'
	touch $@

# MkDocs, Material, mkdocstrings and mkdocs-jupyter (the `docs` extra), for `make docs` alone
$(VENV)/.docs-deps: $(BIN)/gatescope
	$(BIN)/pip install -q -e '.[docs]'
	touch $@

setup: $(VENV)/.test-deps

demo: $(BIN)/gatescope
	$(BIN)/gatescope demo

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The explorer's browser tests drive Debian's chromium through chromium-driver (selenium is
# pointed at /usr/bin/chromedriver; nothing downloads a browser). Installed when missing and
# we are root (CI); otherwise those tests skip and say why.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else \
	    echo "note: /usr/bin/chromium or /usr/bin/chromedriver is missing: the browser tests will skip"; \
	  fi; \
	fi

# The site, offline, into site/: topic pages, the API reference from the docstrings,
# examples/*.ipynb rendered (not executed). --strict: a broken link or reference fails it.
docs: $(VENV)/.docs-deps
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

test: lint browser
	$(BIN)/python -m pytest -n 2 -q
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
