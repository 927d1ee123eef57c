# The two commands a newcomer runs: `make demo` and `make test`.
# Each creates .venv (once) and installs what it needs into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export FLWR_TELEMETRY_ENABLED := 0

.PHONY: demo portal test lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# the demo needs the core package only
$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# tests also need the test tools and every optional extra (each is tested in CI too)
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev,torch,service,imaging,imaging-crosscheck,genomics]"
	touch $(VENV)/.core $(VENV)/.service $@

install: $(VENV)/.installed

demo: $(VENV)/.core
	$(BIN)/hemafed demo

# the demo, then the researcher portal and site consoles on it (needs the service extra)
$(VENV)/.service: pyproject.toml $(VENV)/.core
	$(BIN)/python -m pip install --quiet -e ".[service]"
	touch $@

portal: $(VENV)/.service
	$(BIN)/hemafed demo --transport inprocess --serve

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q --timeout=900 --durations=15

clean:
	rm -rf $(VENV) build *.egg-info
