"""Indexing throughput and query latency on a real Elasticsearch node.

In one run: build the indicators of a generated log, load them with daskrec's parallel bulk
(``write_index`` on the Dask workers) and, into a twin index with the same settings, with one
single-threaded ``helpers.bulk`` of the same documents; then time 1,000 ``similar`` and 1,000
``recommend`` calls through the alias (after an untimed warm-up load and 500 warm-up queries of each). Writes

    {"documents", "daskrec_docs_per_s" (the parallel bulk phase), "single_thread_docs_per_s" (bulk
     and refresh), "speedup" (their ratio), "daskrec_end_to_end_docs_per_s" (create, bulk, refresh,
     merge to one segment, verify, alias swap), "daskrec_finish_s",
     "single_thread_daskrec_actions_docs_per_s" (daskrec's pre-encoded actions, one thread),
     "similar_p50_ms", "similar_p99_ms", "recommend_p50_ms", "recommend_p99_ms", "workers", "threads",
     "single_thread_cores_busy", "daskrec_cores_busy" (CPU seconds of the node and of the loading
     processes per second of wall time, over the single-thread load and over the whole
     ``write_index``: how much of the machine each keeps busy),
     "speedup_bound" (machine cores / single_thread_cores_busy: what perfect parallel scaling on
     this machine could give when the node runs on it too)}

Usage: ``python bench/bench_index.py --events 5000000 --json bench/results/index.json``
(needs a node: ``make es-up``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from elasticsearch import Elasticsearch, helpers

from daskrec import (
    BuildConfig,
    ClusterConfig,
    EsSettings,
    IndexConfig,
    IngestConfig,
    SynthConfig,
    build_indicators,
    build_manifest,
    connect,
    connect_es,
    generate_events,
    read_indicators,
    recommend,
    similar,
    write_index,
    write_output,
)
from daskrec.index import (
    bulk_actions,
    index_template,
    indicator_documents,
    loading_settings,
)

HERE = Path(__file__).resolve().parent
ALIAS = "bench-items"


def percentiles(seconds: list[float]) -> tuple[float, float]:
    values = np.asarray(seconds) * 1000
    return round(float(np.percentile(values, 50)), 2), round(float(np.percentile(values, 99)), 2)


def plain_actions(documents: Iterable[dict[str, Any]], index: str) -> Iterator[dict[str, Any]]:
    """The actions a user would write for ``helpers.bulk``: the reference."""
    for document in documents:
        yield {"_index": index, "_id": str(document["id"]), "_source": document}


def node_cpu_s(client: Elasticsearch) -> float:
    """CPU seconds the Elasticsearch node has used so far."""
    nodes = client.nodes.stats(node_id="_local", metric="process")["nodes"]
    return float(next(iter(nodes.values()))["process"]["cpu"]["total_in_millis"]) / 1000


def own_cpu_s() -> float:
    """CPU seconds this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def single_thread_load(client: Elasticsearch, table: pa.Table, config: IndexConfig, make_actions: Any) -> tuple[float, float]:
    """Seconds for one ``helpers.bulk`` of every document into a twin index with the same settings,
    and the CPU seconds the node and this process spent meanwhile."""
    twin = "bench-single-thread"
    client.options(ignore_status=404).indices.delete(index=twin)
    template = index_template(twin)["template"]
    client.indices.create(index=twin, settings={**template["settings"], **loading_settings()}, mappings=template["mappings"])
    options: dict[str, Any] = {"chunk_size": config.chunk_size, "max_chunk_bytes": config.max_chunk_bytes}
    if make_actions is bulk_actions:
        options["expand_action_callback"] = lambda action: action
    started, cpu_started = time.perf_counter(), node_cpu_s(client) + own_cpu_s()
    helpers.bulk(client, make_actions(indicator_documents(table), twin), **options)
    client.indices.refresh(index=twin)
    seconds, cpu_s = time.perf_counter() - started, node_cpu_s(client) + own_cpu_s() - cpu_started
    client.indices.delete(index=twin)
    return seconds, cpu_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--es-url", default="http://127.0.0.1:9200")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for daskrec's load")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    settings = EsSettings(url=args.es_url)
    config = IndexConfig(alias=ALIAS, keep=1, replicas=0)

    with tempfile.TemporaryDirectory() as tmp:
        events, out = Path(tmp) / "events.csv", Path(tmp) / "out"
        generate_events(str(events), SynthConfig(events=args.events, seed=7))
        build = BuildConfig(ingest=IngestConfig(event_types=None))
        client = connect_es(settings)
        with connect(ClusterConfig(workers=args.workers, threads=args.threads), dashboard_address=":0") as dask:
            result = build_indicators([str(events)], build)
            write_output(str(out), result.table, build_manifest([str(events)], build, result.report))
            # One untimed load first: a freshly started JVM would make whichever load runs first
            # pay for its JIT warm-up.
            single_thread_load(client, read_indicators(str(out)), config, plain_actions)
            cpu_started = node_cpu_s(client) + sum(dask.run(own_cpu_s).values())
            started = time.perf_counter()
            report = write_index(str(out), settings, config)
            daskrec_s = time.perf_counter() - started
            # CPU of the node and the workers over the whole write_index (load, refresh, merge).
            daskrec_cpu_s = node_cpu_s(client) + sum(dask.run(own_cpu_s).values()) - cpu_started
        table = read_indicators(str(out))

        single_s, single_cpu_s = single_thread_load(client, table, config, plain_actions)
        single_same_actions_s, _ = single_thread_load(client, table, config, bulk_actions)

        rows = table.to_pylist()
        with_indicators = [r for r in rows if r["indicators"]]
        rng = random.Random(1)
        # Warm the caches and the node's JIT before timing, as a served index would be (after a
        # fresh start 100 queries left the first timed ones 1.5x slower).
        for _ in range(500):
            similar(client, rng.choice(rows)["item"], index=ALIAS)
            recommend(client, [r["item"] for r in rng.sample(with_indicators, rng.randint(1, 5))], 10, index=ALIAS)
        similar_s, recommend_s = [], []
        for _ in range(args.queries):
            item = rng.choice(rows)["item"]
            t = time.perf_counter()
            similar(client, item, index=ALIAS)
            similar_s.append(time.perf_counter() - t)
        for _ in range(args.queries):
            history = [r["item"] for r in rng.sample(with_indicators, rng.randint(1, 5))]
            t = time.perf_counter()
            recommend(client, history, 10, index=ALIAS)
            recommend_s.append(time.perf_counter() - t)
        client.indices.delete(index=report.index)

    similar_p50, similar_p99 = percentiles(similar_s)
    recommend_p50, recommend_p99 = percentiles(recommend_s)
    figures = {
        "documents": report.documents,
        "daskrec_docs_per_s": round(report.documents / report.load_s),
        "daskrec_end_to_end_docs_per_s": round(report.documents / daskrec_s),
        "daskrec_finish_s": report.finish_s,
        "single_thread_docs_per_s": round(report.documents / single_s),
        "speedup": round(single_s / report.load_s, 2),
        "single_thread_daskrec_actions_docs_per_s": round(report.documents / single_same_actions_s),
        "similar_p50_ms": similar_p50,
        "similar_p99_ms": similar_p99,
        "recommend_p50_ms": recommend_p50,
        "recommend_p99_ms": recommend_p99,
        "workers": args.workers,
        "threads": args.threads,
        "single_thread_cores_busy": round(single_cpu_s / single_s, 2),
        "daskrec_cores_busy": round(daskrec_cpu_s / daskrec_s, 2),
        "speedup_bound": round((os.cpu_count() or 1) / (single_cpu_s / single_s), 2),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if report.documents != table.num_rows:
        sys.exit("the index does not hold every item")


if __name__ == "__main__":
    main()
