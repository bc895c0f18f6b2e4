"""daskrec's own routing of rows by visitor against Dask's shuffle, for the recent-rows step.

Both run on the same LocalCluster, from the same partitions of the same seeded log, and end with
each visitor's most recent rows (``keep_recent``, the same function on both paths):

* ``routing``: daskrec's ingest stage, as a build runs it (each partition writes one Arrow batch
  per visitor bucket; each bucket reads its batch of every partition, keeps the recent rows and
  writes them). Timed from the build report's ``ingest`` stage.
* ``shuffle``: ``read_events(...).shuffle(on="visitorid")`` (Dask's default method: P2P on a
  distributed cluster), then ``keep_recent`` per output partition, counted.

The resident memory of this process (the worker runs in it) is sampled every 50 ms, so each path's
peak is known: the shuffle's over its whole run, the routing's over the build's ingest stage
(the build's first stage: its first ``ingest`` seconds).

Writes a JSON list with one row per size: ``events``, ``memory_limit`` (the worker's, or null),
``routing_s``, ``shuffle_s``, ``ratio`` (shuffle over routing), ``routing_peak_gb``,
``shuffle_peak_gb``, ``kept_rows`` (equal on both paths, checked).

Usage: ``python bench/bench_shuffle.py --events 2000000,10000000 [--memory-limit 1.1GB] --json FILE``
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import psutil
from measure import HERE, events_file, report

from daskrec import BuildConfig, ClusterConfig, IngestConfig, build_indicators, connect
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


@contextmanager
def sampled_memory() -> Iterator[list[tuple[float, int]]]:
    """(seconds since start, resident bytes of this process) every 50 ms while the block runs."""
    samples: list[tuple[float, int]] = []
    done = threading.Event()
    process, started = psutil.Process(), time.perf_counter()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.perf_counter() - started, process.memory_info().rss))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        done.set()
        sampler.join()


def peak_gb(samples: list[tuple[float, int]], until: float = float("inf")) -> float:
    """The largest sample up to ``until`` seconds, in GB."""
    return round(max(rss for at, rss in samples if at <= until) / 1e9, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", default="2000000,10000000", help="Comma-separated log sizes.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=HERE / "data")
    parser.add_argument("--memory-limit", default=None, help="The worker's memory limit (e.g. 1.1GB); none by default.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    config = BuildConfig(ingest=IngestConfig(event_types=None, recent=50))
    rows = []
    with connect(ClusterConfig(memory_limit=args.memory_limit), dashboard_address=":0"):
        for events in (int(n) for n in args.events.split(",")):
            path = events_file(events, args.seed, args.data_dir)
            with sampled_memory() as routing_memory:
                built = build_indicators([str(path)], config).report
            with sampled_memory() as shuffle_memory:
                started = time.perf_counter()
                kept = shuffled_recent_rows(path, config.ingest)
                shuffle_s = time.perf_counter() - started
            routing_s = built.timings["ingest"]
            if kept != built.counts["events_kept"]:
                sys.exit(f"the paths disagree: {kept} rows kept after the shuffle, {built.counts['events_kept']} after routing")
            rows.append({"events": events, "memory_limit": args.memory_limit, "routing_s": round(routing_s, 2),
                         "shuffle_s": round(shuffle_s, 2), "ratio": round(shuffle_s / routing_s, 2),
                         "routing_peak_gb": peak_gb(routing_memory, routing_s),
                         "shuffle_peak_gb": peak_gb(shuffle_memory), "kept_rows": kept})
            print(json.dumps(rows[-1]), file=sys.stderr)
    report(rows, args.json)


if __name__ == "__main__":
    main()
