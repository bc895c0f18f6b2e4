# daskrec: developer entry points. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_EVENTS ?= 1000000
DEMO_DIR ?= demo-output

.PHONY: venv demo serve test test-fast typecheck bench bench-index bench-index-update bench-kernel bench-serve bench-shuffle bench-startup bench-update bench-outofcore quality dask-up dask-down es-up es-down es-up-secure es-down-secure clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

## demo: generate a seeded sample log, build its indicators, print a few items
demo: venv es-up
	$(BIN)/daskrec generate $(DEMO_DIR)/events.csv --events $(DEMO_EVENTS) --seed 42
	$(BIN)/daskrec build $(DEMO_DIR)/events.csv --event all --out $(DEMO_DIR)/indicators --es-url http://127.0.0.1:9200
	$(BIN)/daskrec show $(DEMO_DIR)/indicators -n 3
	$(BIN)/daskrec similar $$($(BIN)/python -c "import pyarrow.parquet as pq; t = pq.read_table('$(DEMO_DIR)/indicators/indicators.parquet'); print(t.column('item')[0])")
	$(BIN)/daskrec recommend --history 1,2,3 -k 5

## test: the whole suite, integration tests against real Elasticsearch nodes included (the plain one
## and the secured one, started if down)
test: venv es-up es-up-secure
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

## bench-kernel: the indicators stage alone, per-block kernel vs each pair once, same matrix, and both
## kernels of commit KERNEL_BEFORE (a worktree under bench/data) in the same rounds (README, "Benchmarks")
KERNEL_BEFORE ?= b95b0c8
bench-kernel: venv
	git worktree add --force --detach bench/data/before-$(KERNEL_BEFORE) $(KERNEL_BEFORE) 2>/dev/null || test -d bench/data/before-$(KERNEL_BEFORE)
	$(BIN)/python bench/bench_kernel.py --events 10000000 --mode all --rounds 3 \
		--reference bench/data/before-$(KERNEL_BEFORE) --json bench/results/kernel-10M-all.json

## bench-shuffle: daskrec's routing of rows by visitor against Dask's shuffle, without and with a
## worker memory limit (README, "How it is computed")
bench-shuffle: venv
	$(BIN)/python bench/bench_shuffle.py --events 10000000,50000000 --json bench/results/shuffle.json
	$(BIN)/python bench/bench_shuffle.py --events 10000000,50000000 --memory-limit 1.1GB --json bench/results/shuffle-limited.json

## bench-startup: a whole small build process (ml-latest-small) against the floor of its libraries
bench-startup: venv
	$(BIN)/python bench/bench_startup.py --rounds 5 --json bench/results/startup.json

## bench-update: an update of the latest 1% and 10% of a 50M-event log against a full build of it, and
## the least pair work an update that keeps every row's scores would redo, and the least time it would take (README, "Updates")
bench-update: venv
	$(BIN)/python bench/bench_update.py --events 50000000 --fractions 0.01,0.1 --json bench/results/update-50M.json
	$(BIN)/python bench/update_reach.py --events 50000000 --fraction 0.01 --json bench/results/update-reach-50M-1pct.json
	$(BIN)/python bench/update_reach.py --events 50000000 --fraction 0.1 --json bench/results/update-reach-50M-10pct.json
	$(BIN)/python bench/update_floor.py --events 50000000 --fractions 0.01,0.1 --json bench/results/update-floor-50M.json

## bench-outofcore: a 100M-event build (3.5 GB) under a 1.1 GB worker memory limit vs unlimited (three
## rounds, alternating), and the scaling runs at 1M..100M events with their plot (generates the logs once, ~10 GB of disk)
bench-outofcore: venv
	$(BIN)/python bench/bench_outofcore.py --events 100000000 --memory-limit 1.1GB --rounds 3 \
		--scaling 1000000,10000000,50000000,100000000 \
		--json bench/results/outofcore.json --plot bench/results/outofcore.png

## quality: daskrec's defaults and the tutorial preset (served by Elasticsearch) against the
## item-item peers on the real datasets (ml-latest-small ships in tests/data; the others are read
## from $DASKREC_DATA, default ../shared/data) (the README's quality table)
quality: venv es-up
	$(BIN)/python bench/bench_quality.py --json bench/results/quality.json

## dask-up / dask-down: a scheduler and two worker processes on loopback (see cluster/README.md)
dask-up: venv
	PATH=$(abspath $(BIN)):$$PATH cluster/dask-local.sh up --workers 2 --threads 1

dask-down:
	cluster/dask-local.sh down

## serve: index the demo build, then serve it on http://127.0.0.1:8000 (the page at /, the API at /docs)
serve: venv es-up
	@test -f $(DEMO_DIR)/indicators/manifest.json || $(MAKE) demo
	$(BIN)/daskrec index $(DEMO_DIR)/indicators --no-progress --dashboard-address :0
	$(BIN)/daskrec serve --port 8000

## bench-serve: open-loop load on the service and the same queries sent straight to the node
bench-serve: venv es-up
	$(BIN)/python bench/bench_serve.py --rates 25,50,100,125,150,200 --seconds 16 --rounds 2 --json bench/results/serve.json

## es-up / es-down: a single-node Elasticsearch on 127.0.0.1:9200 (fetched from Maven Central once)
es-up:
	cluster/elasticsearch/es.sh up

es-down:
	cluster/elasticsearch/es.sh down

## es-up-secure / es-down-secure: a second node on https://127.0.0.1:9202 with security on: a private
## CA, file-realm users with the least-privilege roles of cluster/elasticsearch/roles.yml
## (`cluster/elasticsearch/es.sh secure-env` prints the CA file and the users' credentials)
es-up-secure:
	cluster/elasticsearch/es.sh secure-up

es-down-secure:
	cluster/elasticsearch/es.sh secure-down

## bench-index: parallel bulk vs single-thread bulk, and query latency, on the local node
bench-index: venv es-up
	$(BIN)/python bench/bench_index.py --json bench/results/index.json

## bench-index-update: after an update of a 50M-event build, the changed documents sent in place vs a new generation
bench-index-update: venv es-up
	$(BIN)/python bench/bench_index_update.py --events 50000000 --shares 0.01,0.1,0.25,0.5 --json bench/results/index-update-50M.json

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .hypothesis
