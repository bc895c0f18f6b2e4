"""Wire the stages into Dask graphs: events → recent rows → occurrences → indicators.

:func:`build_indicators` runs on whichever Dask scheduler is active (a ``distributed.Client``,
threads, or the synchronous scheduler) and returns the indicators table with counts and
stage timings. Each stage is persisted before the next is planned, so its time is measured
and its inputs are released.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
from dask.base import compute
from dask.delayed import Delayed, delayed

from . import cooccurrence as co
from .config import BuildConfig, IndicatorConfig
from .errors import DataWarning, InputError
from .indicators import IndicatorBlock, indicator_block
from .ingest import (
    REQUIRED_COLUMNS,
    EventFile,
    IdKinds,
    StringIdsFound,
    expand_inputs,
    keep_recent,
    read_events,
)
from .scheduling import materialise, scheduler_threads

log = logging.getLogger(__name__)

__all__ = ["BuildResult", "build_indicators", "indicator_table"]

_BLOCKS_PER_THREAD = 4


@dataclass
class BuildResult:
    """What a build produced: the indicators table, counts and stage timings."""

    table: pa.Table
    """``item``, ``indicators`` (item ids, best first), ``scores`` (root LLR) and ``popularity``
    (users per item), one row per item."""
    counts: dict[str, int] = field(default_factory=dict)
    """Sizes seen along the way (events read, kept, users, items, nonzeros, ...)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent per stage."""


def build_indicators(
    inputs: Sequence[str | EventFile], config: BuildConfig = BuildConfig(), *, show_progress: bool = False
) -> BuildResult:
    """Compute every item's indicators from an events log, following the SPEC recipe.

    Parameters
    ----------
    inputs
        CSV or Parquet paths, globs or fsspec URLs (or files from :func:`~daskrec.ingest.expand_inputs`).
    config
        Event selection, recent rows, LLR table, top k and threshold.
    show_progress
        Show a progress bar for each stage's Dask work.

    Returns
    -------
    BuildResult

    Raises
    ------
    InputError
        Missing, empty or malformed input, or no events of the selected types.

    Examples
    --------
    >>> result = build_indicators(["events.csv"])  # doctest: +SKIP
    >>> result.table.to_pandas().head()  # doctest: +SKIP
    """
    timings: dict[str, float] = {}
    files = expand_inputs(list(inputs))
    id_kinds = IdKinds()
    with _stage("ingest", timings):
        while True:
            try:
                buckets, read_counts = _recent_rows(files, config, id_kinds, show_progress)
                break
            except StringIdsFound as found:
                log.info("ingest: %s holds text ids; reading it as strings", found.column)
                id_kinds = id_kinds.with_strings(found.column)
    if read_counts["events_kept"] == 0:
        wanted = "any type" if config.ingest.event_types is None else ", ".join(config.ingest.event_types)
        raise InputError(
            f"no rows of event type {wanted} in the input; check --event against the log's event column.",
            path=", ".join(f.url for f in files),
            column="event",
        )
    with _stage("occurrences", timings):
        vocabulary, occurrences, margins, popularity = _occurrences(buckets, config.indicators, show_progress)
        del buckets
        plan = compute(delayed(co.item_blocks)(occurrences, _BLOCKS_PER_THREAD * scheduler_threads()))[0]
    with _stage("indicators", timings):
        tasks = [
            delayed(indicator_block)(
                occurrences, margins, start, stop, config.indicators.top_k, config.indicators.min_llr
            )
            for start, stop in plan
        ]
        blocks: list[IndicatorBlock]
        blocks, vocabulary_values, users_per_item = compute(materialise(tasks, show_progress), vocabulary, popularity)
        table = indicator_table(vocabulary_values, blocks, users_per_item)
    counts = {
        **read_counts,
        "items": table.num_rows,
        "cooccurrence_nonzeros": sum(b.cooccurrence_nonzeros for b in blocks),
        "items_with_indicators": int(sum(int(np.count_nonzero(b.counts)) for b in blocks)),
        "indicators": int(sum(int(b.counts.sum()) for b in blocks)),
    }
    log.info("build: %s items, %s with indicators", counts["items"], counts["items_with_indicators"])
    return BuildResult(table=table, counts=counts, timings=timings)


# ------------------------------------------------------------------------------------- the graphs


def _recent_rows(
    files: list[EventFile], config: BuildConfig, id_kinds: IdKinds, show_progress: bool
) -> tuple[list[Delayed], dict[str, int]]:
    """Read, route rows to buckets by visitor, keep each visitor's recent rows; persisted."""
    parts = read_events(files, config.ingest, id_kinds).to_delayed()
    n_buckets = len(parts)
    routed = [delayed(_route_by_visitor, nout=n_buckets + 1)(part, n_buckets) for part in parts]
    buckets = [
        delayed(_recent_bucket)([pieces[b] for pieces in routed], config.ingest.recent) for b in range(n_buckets)
    ]
    sizes = [delayed(_bucket_sizes)(bucket) for bucket in buckets]
    buckets, sizes, stats = materialise((buckets, sizes, [pieces[n_buckets] for pieces in routed]), show_progress)
    sizes, stats = compute(sizes, stats)
    counts = {
        "events_read": sum(s["events_read"] for s in stats),
        "events_skipped": sum(s["events_skipped"] for s in stats),
        "events_kept": sum(rows for rows, _ in sizes),
        "users": sum(users for _, users in sizes),
        "partitions": len(parts),
    }
    for column in REQUIRED_COLUMNS:
        counts[f"skipped_bad_{column}"] = sum(s[f"skipped_bad_{column}"] for s in stats)
    if counts["events_skipped"]:
        by_column = {c: counts[f"skipped_bad_{c}"] for c in REQUIRED_COLUMNS if counts[f"skipped_bad_{c}"]}
        warnings.warn(
            f"skipped {counts['events_skipped']} malformed rows (by first bad column: {by_column}); "
            "the manifest counts them. Use on_bad_rows='error' to stop at the first one instead.",
            DataWarning,
            stacklevel=3,
        )
    return list(buckets), counts


def _occurrences(
    buckets: list[Delayed], config: IndicatorConfig, show_progress: bool
) -> tuple[Delayed, Delayed, Delayed, Delayed]:
    """Item vocabulary, occurrence matrix, marginals and users per item; persisted."""
    vocabulary = delayed(_item_vocabulary)([delayed(_bucket_items)(bucket) for bucket in buckets])
    blocks = [delayed(_occurrence_block)(bucket, vocabulary) for bucket in buckets]
    users_per_item = delayed(sum)([delayed(_users_per_item)(block) for block in blocks])
    if config.llr_table == "users":
        blocks = [delayed(co.binarise)(block) for block in blocks]
        if config.downsamples:
            blocks = [
                delayed(co.downsample)(
                    block,
                    delayed(_bucket_user_keys)(bucket),
                    users_per_item,
                    config.max_per_user,
                    config.max_per_item,
                    config.seed,
                )
                for block, bucket in zip(blocks, buckets)
            ]
    occurrences = delayed(co.stack_blocks)(blocks)
    margins = delayed(co.marginals)(occurrences, config.llr_table)
    persisted: tuple[Delayed, Delayed, Delayed, Delayed] = materialise(
        (vocabulary, occurrences, margins, users_per_item), show_progress
    )
    return persisted


# ------------------------------------------------------------------------- per-partition functions


def _route_by_visitor(frame: pd.DataFrame, n_buckets: int) -> tuple[Any, ...]:
    """Split a partition's good rows into ``n_buckets`` frames by a hash of the visitor id;
    the last element counts what was read and skipped."""
    bad = frame["bad_column"].to_numpy()
    stats = {"events_read": len(frame), "events_skipped": int(np.count_nonzero(bad))}
    for code, column in enumerate(REQUIRED_COLUMNS, start=1):
        stats[f"skipped_bad_{column}"] = int(np.count_nonzero(bad == code))
    good = frame[bad == 0].drop(columns="bad_column")
    hashes = pd.util.hash_pandas_object(good["visitorid"], index=False).to_numpy()
    bucket = (hashes % np.uint64(n_buckets)).astype(np.int16 if n_buckets < 2**15 else np.int64)
    order = np.argsort(bucket, kind="stable")  # a radix sort for int16
    bounds = np.searchsorted(bucket[order], np.arange(n_buckets + 1))
    pieces = tuple(good.iloc[order[bounds[b] : bounds[b + 1]]] for b in range(n_buckets))
    return (*pieces, stats)


def _recent_bucket(pieces: list[pd.DataFrame], recent: int) -> pd.DataFrame:
    """All rows of a bucket's visitors, cut to each visitor's recent rows."""
    return keep_recent(pd.concat(pieces, ignore_index=True), recent)


def _bucket_sizes(bucket: pd.DataFrame) -> tuple[int, int]:
    """Rows kept and visitors in a bucket."""
    return len(bucket), int(bucket["user"].max()) + 1 if len(bucket) else 0


def _bucket_items(bucket: pd.DataFrame) -> pd.Index:
    """The distinct item ids of a bucket."""
    items: pd.Index = pd.Index(bucket["itemid"]).unique()
    return items


def _item_vocabulary(item_sets: list[pd.Index]) -> pd.Index:
    """Every item id, sorted: an item's code is its position here."""
    items = item_sets[0].append(item_sets[1:]) if len(item_sets) > 1 else item_sets[0]
    vocabulary: pd.Index = items.unique().sort_values()
    return vocabulary


def _occurrence_block(bucket: pd.DataFrame, vocabulary: pd.Index) -> sp.csr_array:
    """The bucket's occurrence counts, users x all items."""
    n_users = int(bucket["user"].max()) + 1 if len(bucket) else 0
    item_code = vocabulary.get_indexer(pd.Index(bucket["itemid"]))
    return co.occurrence_block(bucket["user"].to_numpy(), item_code, n_users, len(vocabulary))


def _users_per_item(block: sp.csr_array) -> np.ndarray:
    """Users per item in a binarised block."""
    return np.bincount(block.indices, minlength=block.shape[1]).astype(co.COUNT_DTYPE)


def _bucket_user_keys(bucket: pd.DataFrame) -> np.ndarray:
    """A stable key per user of the bucket, in user order."""
    first_rows = bucket.drop_duplicates("user")
    return co.user_keys(first_rows.sort_values("user")["visitorid"])


# ------------------------------------------------------------------------------------ assembling


def indicator_table(vocabulary: pd.Index, blocks: list[IndicatorBlock], users_per_item: np.ndarray) -> pa.Table:
    """The indicators as an Arrow table in item code order (pure).

    Parameters
    ----------
    vocabulary
        Item ids by code.
    blocks
        Indicator blocks covering every item code exactly once.
    users_per_item
        Users whose kept history has the item, by code.

    Returns
    -------
    pyarrow.Table
        ``item``, ``indicators`` (list of item ids, best first), ``scores`` (list of float64)
        and ``popularity`` (users per item, int64).
    """
    blocks = sorted(blocks, key=lambda b: b.start)
    counts = np.concatenate([b.counts for b in blocks]) if blocks else np.zeros(0, np.int64)
    codes = np.concatenate([b.item_codes for b in blocks]) if blocks else np.zeros(0, np.int64)
    scores = np.concatenate([b.scores for b in blocks]) if blocks else np.zeros(0, np.float64)
    if len(counts) != len(vocabulary):
        raise AssertionError("indicator blocks do not cover the items")  # a bug, not bad input
    items = pa.array(vocabulary.to_numpy())
    offsets = pa.array(np.r_[0, np.cumsum(counts)].astype(np.int32))
    return pa.table(
        {
            "item": items,
            "indicators": pa.ListArray.from_arrays(offsets, items.take(pa.array(codes))),
            "scores": pa.ListArray.from_arrays(offsets, pa.array(scores, type=pa.float64())),
            "popularity": pa.array(np.asarray(users_per_item, dtype=np.int64)),
        }
    )


# --------------------------------------------------------------------------------------- helpers


@contextmanager
def _stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Time a stage into ``timings`` and log it."""
    started = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - started, 3)
    log.info("%s: done in %.2fs", name, timings[name])
