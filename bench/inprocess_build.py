"""The daskrec recipe with daskrec's own kernels in one process, all in memory: no Dask, no
scratch files. What a user could write with the library alone.

``bench_build.py`` times it beside ``daskrec build`` on the same log, so the difference is what
the Dask layer costs or gains. The steps are the pipeline's:

* ``ingest``: a multi-threaded pyarrow parse of the four columns, the chosen event types, each
  visitor's recent rows (:func:`daskrec.ingest.keep_recent`);
* ``occurrences``: the item vocabulary (sorted ids), the occurrence matrix
  (:func:`~daskrec.cooccurrence.occurrence_block`, binarised for the users table), its marginals
  and each item row's work (:func:`~daskrec.cooccurrence.summarise`);
* ``indicators``: the library's kernel for a matrix held whole
  (:func:`daskrec.indicators.all_indicators`: each pair of items once, ``--threads`` threads);
* ``output``: the table (:func:`daskrec.pipeline.indicator_table`), written as Parquet.

It handles the primary field only (no cross-occurrence types, no downsampling, no trending
counts): enough for the benchmark's recipes, not a second pipeline.

Usage: ``python bench/inprocess_build.py EVENTS.csv OUT.parquet [--event all] [--preset tutorial]
[--threads 2] [--report FILE]``; the report is ``{"timings_s", "work", "items"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from daskrec import cooccurrence as co
from daskrec.config import PRESETS, BuildConfig, IngestConfig
from daskrec.indicators import all_indicators
from daskrec.ingest import keep_recent
from daskrec.pipeline import ItemCounts, indicator_table

@contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    started = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - started, 3)


def occurrences_of(path: str, config: BuildConfig, timings: dict[str, float]) -> tuple[pd.Index, co.Occurrences, co.BlockSummary]:
    """The ``ingest`` and ``occurrences`` stages: the item vocabulary, the occurrence matrix and
    its summary (marginals, each item row's work), timed into ``timings``."""
    with stage("ingest", timings):
        columns = ["timestamp", "visitorid", "event", "itemid"]
        frame = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(include_columns=columns)).to_pandas()
        if config.ingest.event_types is not None:
            frame = frame[frame["event"].isin(config.ingest.event_types).to_numpy()]
        frame = frame.drop(columns="event").assign(position=np.arange(len(frame)))
        kept = keep_recent(frame, config.ingest.recent)
        del frame
    with stage("occurrences", timings):
        vocabulary = pd.Index(kept["itemid"].unique()).sort_values()
        codes = vocabulary.get_indexer(kept["itemid"])
        users = kept["user"].to_numpy()
        del kept
        block = co.occurrence_block(users, codes, int(users.max()) + 1, len(vocabulary))
        if config.indicators.llr_table == "users":
            block = co.binarise(block)
        occurrences = co.stack_blocks([block])
        summary = co.summarise(occurrences, config.indicators.llr_table)
    return vocabulary, occurrences, summary


def inprocess_indicators(path: str, config: BuildConfig, threads: int) -> tuple[pa.Table, dict[str, float], int]:
    """The indicator table of the log at ``path`` (primary field only), the stages' seconds and
    the kernel's work (multiply-adds)."""
    timings: dict[str, float] = {}
    chosen = config.indicators
    vocabulary, occurrences, summary = occurrences_of(path, config, timings)
    with stage("indicators", timings):
        block = next(all_indicators(occurrences, summary.margins, chosen.top_k, chosen.min_llr, threads))
    with stage("output", timings):
        popularity = np.bincount(occurrences.by_user.indices, minlength=len(vocabulary)).astype(np.int64)
        counts = ItemCounts(popularity=popularity, trending=np.zeros_like(popularity))
        table = indicator_table(vocabulary, block, counts)
    return table, timings, int(summary.work.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("events")
    parser.add_argument("out")
    parser.add_argument("--event", default="all", help="'all' or comma-separated event types.")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args()
    base = PRESETS[args.preset].build
    event_types = None if args.event == "all" else tuple(args.event.split(","))
    config = BuildConfig(ingest=IngestConfig(event_types=event_types, recent=base.ingest.recent), indicators=base.indicators)
    table, timings, work = inprocess_indicators(args.events, config, args.threads)
    started = time.perf_counter()
    pq.write_table(table, args.out)
    timings["output"] = round(timings["output"] + time.perf_counter() - started, 3)
    if args.report is not None:
        args.report.write_text(json.dumps({"timings_s": timings, "work": work, "items": table.num_rows}) + "\n")


if __name__ == "__main__":
    main()
