# daskrec: developer entry points. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_EVENTS ?= 1000000
DEMO_DIR ?= demo-output

.PHONY: venv demo test test-fast typecheck bench dask-up dask-down clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

## demo: generate a seeded sample log, build its indicators, print a few items
demo: venv
	$(BIN)/daskrec generate $(DEMO_DIR)/events.csv --events $(DEMO_EVENTS) --seed 42
	$(BIN)/daskrec build $(DEMO_DIR)/events.csv --event all --out $(DEMO_DIR)/indicators
	$(BIN)/daskrec show $(DEMO_DIR)/indicators -n 5

## test: the whole suite (real-data agreement, CLI subprocesses, schedulers)
test: venv
	$(BIN)/python -m pytest

## test-fast: skip the slow and integration tests
test-fast: venv
	$(BIN)/python -m pytest -m "not slow and not integration"

typecheck: venv
	$(BIN)/mypy

## bench: daskrec vs the single-process reference, 10M events, both modes
bench: venv
	$(BIN)/python bench/bench_build.py --events 10000000 --mode all --json bench/results/build-10M-all.json
	$(BIN)/python bench/bench_build.py --events 10000000 --mode transaction --json bench/results/build-10M-transaction.json

## dask-up / dask-down: a scheduler and two worker processes on loopback (see cluster/README.md)
dask-up: venv
	PATH=$(abspath $(BIN)):$$PATH cluster/dask-local.sh up --workers 2 --threads 1

dask-down:
	cluster/dask-local.sh down

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .hypothesis
