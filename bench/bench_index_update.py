"""After an update: the changed documents sent into the live generation, against a new generation.

In one run on a real node: build the indicators of a seeded log, index them, then for each share
of changed documents make a new table from the live one with that share of its rows' scores
changed (the items chosen at random), write it as an update writes its table (the replaced one
kept beside it) and bring the index up to it with :func:`daskrec.index.update_index` in place
(``in_place_max=1``); then load the same table into a new generation (:func:`write_index`, the
path a larger share takes), and check both hold the same documents. Alternating in one process,
so the node and the machine are the same for both. Writes one row per share:

    {"share", "documents", "changed", "in_place_s" (until the update returns), "in_place_send_s"
     (the bulk updates and deletes), "in_place_wait_and_merge_s" (waiting for the node to let go
     of the replaced versions, then the merge to one segment), "in_place_serving_s" (until the
     new documents are searched: the rest), "new_generation_s", "ratio" (in_place_s / new_generation_s),
     "serving_ratio" (in_place_serving_s / new_generation_s), "in_place_node_cpu_s",
     "new_generation_node_cpu_s" (CPU seconds of the node over each: the load serving queries
     compete with)}

Usage: ``python bench/bench_index_update.py --events 50000000 --json bench/results/index-update-50M.json``
(needs a node: ``make es-up``; the 50M log is the seeded one of ``bench_build.py``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from bench_index import node_cpu_s
from elasticsearch import Elasticsearch, helpers
from measure import events_file, report

import daskrec.index as index_module
from daskrec import ClusterConfig, EsSettings, IndexConfig, connect, read_indicators, write_index, write_output
from daskrec.config import BuildConfig, IngestConfig
from daskrec.index import update_index
from daskrec.pipeline import write_build

ALIAS = "bench-index-update"


def with_changed_scores(table: pa.Table, share: float, rng: np.random.Generator) -> tuple[pa.Table, int]:
    """``table`` with the scores of ``share`` of its rows that have indicators raised by one ulp-ish step."""
    lengths = pc.list_value_length(table.column("scores")).to_numpy(zero_copy_only=False)
    candidates = np.flatnonzero(lengths > 0)
    chosen = rng.choice(candidates, size=min(len(candidates), round(share * table.num_rows)), replace=False)
    factor = np.ones(table.num_rows)
    factor[chosen] = 1.0 + 1e-9
    scores = table.column("scores").combine_chunks()
    scaled = pc.multiply(pc.list_flatten(scores), pa.array(np.repeat(factor, lengths)))
    column = pa.ListArray.from_arrays(scores.offsets, scaled)
    return table.set_column(table.column_names.index("scores"), "scores", column), len(chosen)


def documents(client: Elasticsearch) -> dict[str, Any]:
    client.indices.refresh(index=ALIAS)
    return {hit["_id"]: hit["_source"] for hit in helpers.scan(client, index=ALIAS, query={"query": {"match_all": {}}})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--shares", default="0.01,0.05,0.1,0.25,0.5")
    parser.add_argument("--es-url", default="http://127.0.0.1:9200")
    parser.add_argument("--check", action="store_true", help="compare every document of both indices (slow at 50M)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    settings = EsSettings(url=args.es_url, request_timeout=600)
    config = IndexConfig(alias=ALIAS, keep=1, replicas=0, in_place_max=1.0)
    client = Elasticsearch(**settings.client_options())
    rng = np.random.default_rng(0)
    waited: list[float] = []
    merge_replaced_away = index_module._merge_replaced_away

    def timed_merge(es: Elasticsearch, index: str) -> None:  # the bench's only instrumentation
        started = time.perf_counter()
        merge_replaced_away(es, index)
        waited.append(time.perf_counter() - started)

    index_module._merge_replaced_away = timed_merge
    rows = []
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent / "data") as tmp, connect(ClusterConfig(workers=2, threads=1), dashboard_address=":0"):
        out = f"{tmp}/out"
        write_build([str(events_file(args.events, 0))], out, BuildConfig(ingest=IngestConfig(event_types=None)))
        table = read_indicators(out)
        live_id = uuid.uuid4().hex
        write_output(out, table, {"table_id": live_id})
        write_index(out, settings, config)  # untimed: the node's JIT warms up on it
        for share in (float(s) for s in args.shares.split(",")):
            changed_table, changed = with_changed_scores(table, share, rng)
            table_id = uuid.uuid4().hex
            write_output(out, changed_table, {"table_id": table_id, "previous_table_id": live_id}, keep_previous=True)
            waited.clear()
            cpu, started = node_cpu_s(client), time.perf_counter()
            in_place = update_index(out, settings, config)
            in_place_s, in_place_cpu_s = time.perf_counter() - started, node_cpu_s(client) - cpu
            assert in_place.in_place and in_place.documents == changed, in_place
            in_place_docs = documents(client) if args.check else None
            cpu, started = node_cpu_s(client), time.perf_counter()
            new = write_index(out, settings, config)
            new_s, new_cpu_s = time.perf_counter() - started, node_cpu_s(client) - cpu
            assert not new.in_place
            if args.check:
                assert documents(client) == in_place_docs
            table, live_id = changed_table, table_id
            send_s, wait_and_merge_s = in_place.load_s, waited[0]
            serving_s = in_place_s - wait_and_merge_s
            rows.append({
                "share": share, "documents": table.num_rows, "changed": changed,
                "in_place_s": round(in_place_s, 2), "in_place_send_s": round(send_s, 2),
                "in_place_wait_and_merge_s": round(wait_and_merge_s, 2), "in_place_serving_s": round(serving_s, 2),
                "new_generation_s": round(new_s, 2), "ratio": round(in_place_s / new_s, 3),
                "serving_ratio": round(serving_s / new_s, 3),
                "in_place_node_cpu_s": round(in_place_cpu_s, 1), "new_generation_node_cpu_s": round(new_cpu_s, 1),
            })
            print(rows[-1], flush=True)
    for index in client.indices.get(index=f"{ALIAS}-*", allow_no_indices=True):
        client.indices.delete(index=index)
    report(rows, args.json)


if __name__ == "__main__":
    main()
