"""daskrec's own routing of rows by visitor against Dask's shuffle, for the recent-rows step.

Both run on the same LocalCluster, from the same partitions of the same seeded log, and end with
each visitor's most recent rows (``keep_recent``, the same function on both paths):

* ``routing``: daskrec's ingest stage, as a build runs it (each partition writes one Arrow batch
  per visitor bucket; each bucket reads its batch of every partition, keeps the recent rows and
  writes them). Timed from the build report's ``ingest`` stage.
* ``shuffle``: ``read_events(...).shuffle(on="visitorid")`` (Dask's default method: P2P on a
  distributed cluster), then ``keep_recent`` per output partition, counted.

Writes a JSON list with one row per size: ``events``, ``routing_s``, ``shuffle_s``, ``ratio``
(shuffle over routing), ``kept_rows`` (equal on both paths, checked).

Usage: ``python bench/bench_shuffle.py --events 2000000,10000000 --json bench/results/shuffle.json``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
from measure import HERE, events_file, report

from daskrec import BuildConfig, IngestConfig, build_indicators, connect
from daskrec.ingest import expand_inputs, keep_recent, read_events


def shuffled_recent_rows(path: Path, ingest: IngestConfig) -> int:
    """Kept rows through Dask's shuffle by visitor, then keep_recent per partition."""
    frame = read_events(expand_inputs([str(path)]), ingest)
    good = frame[frame["bad_column"] == 0].drop(columns=["bad_column"])
    routed = good.shuffle(on="visitorid")
    meta = pd.DataFrame({"user": pd.Series(dtype="int64"), "visitorid": pd.Series(dtype="int64"),
                         "itemid": pd.Series(dtype="int64"), "matrix": pd.Series(dtype="int8")})
    kept = routed.map_partitions(keep_recent, ingest.recent, meta=meta)
    return int(kept.map_partitions(len).sum().compute())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", default="2000000,10000000", help="Comma-separated log sizes.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=HERE / "data")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    config = BuildConfig(ingest=IngestConfig(event_types=None, recent=50))
    rows = []
    with connect(dashboard_address=":0"):
        for events in (int(n) for n in args.events.split(",")):
            path = events_file(events, args.seed, args.data_dir)
            built = build_indicators([str(path)], config).report
            started = time.perf_counter()
            kept = shuffled_recent_rows(path, config.ingest)
            shuffle_s = time.perf_counter() - started
            routing_s = built.timings["ingest"]
            if kept != built.counts["events_kept"]:
                sys.exit(f"the paths disagree: {kept} rows kept after the shuffle, {built.counts['events_kept']} after routing")
            rows.append({"events": events, "routing_s": round(routing_s, 2), "shuffle_s": round(shuffle_s, 2),
                         "ratio": round(shuffle_s / routing_s, 2), "kept_rows": kept})
            print(json.dumps(rows[-1]), file=sys.stderr)
    report(rows, args.json)


if __name__ == "__main__":
    main()
