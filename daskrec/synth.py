"""A seeded synthetic events log in the RetailRocket layout, written in chunks.

The log has the skew of real e-commerce logs:

* item popularity is Zipf-like (weight ``1 / rank**0.9``), item ids shuffled against popularity;
* user activity is heavy-tailed (log-normal weights, sigma 1.5): most visitors do little,
  a few a lot;
* each user leans to one "topic" of items (70% of their events), so real co-occurrence
  structure exists for LLR to find;
* the event mix follows RetailRocket's published one: 96.7% ``view``, 2.5% ``addtocart``,
  0.8% ``transaction`` (with a ``transactionid``);
* timestamps (epoch ms) rise through the file from RetailRocket's first day, 4.5 months in all.

The same arguments give the same bytes. Files may exceed memory: rows are made and written
``chunk_events`` at a time.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["SynthConfig", "generate_events", "event_chunks"]

EVENT_MIX = {"view": 0.967, "addtocart": 0.025, "transaction": 0.008}
"""Share of each event type (RetailRocket's published mix)."""

_START_MS = 1_430_622_004_384  # RetailRocket's first event, 2015-05-03
_SPAN_MS = 139 * 24 * 3600 * 1000
_TOPIC_SHARE = 0.7
_ITEMS_PER_TOPIC = 200


@dataclass(frozen=True)
class SynthConfig:
    """Size and seed of a synthetic log."""

    events: int
    """Rows to write."""

    users: int | None = None
    """Distinct visitors; ``None`` means ``max(10, events // 20)``."""

    items: int | None = None
    """Distinct items; ``None`` means ``max(10, events // 100)``."""

    seed: int = 0
    """Seed: the same config gives the same file."""

    chunk_events: int = 2_000_000
    """Rows generated and written at a time (bounds memory)."""

    def __post_init__(self) -> None:
        if self.events < 1:
            raise ConfigError(f"events: must be at least 1, got {self.events}.")
        for name in ("users", "items", "chunk_events"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}: must be at least 1, got {value}.")

    @property
    def n_users(self) -> int:
        """Distinct visitors."""
        return self.users if self.users is not None else max(10, self.events // 20)

    @property
    def n_items(self) -> int:
        """Distinct items."""
        return self.items if self.items is not None else max(10, self.events // 100)


def event_chunks(config: SynthConfig) -> Iterator[pa.Table]:
    """The synthetic log as Arrow tables of at most ``config.chunk_events`` rows (pure, seeded)."""
    rng = np.random.default_rng(config.seed)
    n_users, n_items = config.n_users, config.n_items
    item_ids = rng.permutation(n_items).astype(np.int64) + 1
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    topic_of_item = rng.integers(0, max(1, n_items // _ITEMS_PER_TOPIC), n_items)
    n_topics = int(topic_of_item.max()) + 1
    # Global draw: by popularity. Topic draw: by popularity within the topic, via one cdf whose
    # topic t occupies [t, t + 1).
    global_cdf = np.cumsum(popularity) / popularity.sum()
    by_topic = np.argsort(topic_of_item, kind="stable")
    topic_sorted = topic_of_item[by_topic]
    weights = popularity[by_topic]
    topic_totals = np.bincount(topic_sorted, weights=weights, minlength=n_topics)
    cumulative = np.cumsum(weights)
    topic_start = np.r_[0.0, np.cumsum(topic_totals)[:-1]]
    topic_cdf = topic_sorted + (cumulative - topic_start[topic_sorted]) / topic_totals[topic_sorted]
    user_weights = rng.lognormal(0.0, 1.5, n_users)
    user_cdf = np.cumsum(user_weights) / user_weights.sum()
    user_topic = rng.integers(0, n_topics, n_users)
    event_names = np.array(list(EVENT_MIX), dtype=object)
    event_cdf = np.cumsum(list(EVENT_MIX.values()))
    transactions = 0
    for start in range(0, config.events, config.chunk_events):
        n = min(config.chunk_events, config.events - start)
        users = np.minimum(np.searchsorted(user_cdf, rng.random(n), side="right"), n_users - 1)
        in_topic = rng.random(n) < _TOPIC_SHARE
        items = np.minimum(np.searchsorted(global_cdf, rng.random(n), side="right"), n_items - 1)
        topic_draw = user_topic[users] + rng.random(n)
        topic_items = by_topic[np.minimum(np.searchsorted(topic_cdf, topic_draw, side="right"), n_items - 1)]
        items = np.where(in_topic, topic_items, items)
        event_code = np.minimum(np.searchsorted(event_cdf, rng.random(n) * event_cdf[-1], side="right"), 2)
        times = _START_MS + (start + np.sort(rng.random(n)) * n) * (_SPAN_MS / config.events)
        is_transaction = event_code == 2
        transaction_ids = np.full(n, -1, dtype=np.int64)
        transaction_ids[is_transaction] = transactions + np.arange(int(is_transaction.sum()))
        transactions += int(is_transaction.sum())
        yield pa.table(
            {
                "timestamp": pa.array(times.astype(np.int64)),
                "visitorid": pa.array(users.astype(np.int64)),
                "event": pa.array(event_names[event_code], type=pa.string()),
                "itemid": pa.array(item_ids[items]),
                "transactionid": pa.array(transaction_ids, mask=~is_transaction),
            }
        )


def generate_events(out: str, config: SynthConfig) -> int:
    """Write the synthetic log to ``out`` (``.parquet`` for Parquet, else CSV), atomically.

    Parameters
    ----------
    out
        Path or fsspec URL of the file to write.
    config
        Size and seed.

    Returns
    -------
    int
        Rows written.
    """
    fs, path = fsspec.core.url_to_fs(out)
    parent = os.path.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
    written = 0
    try:
        with fs.open(tmp, "wb") as f:
            writer: pq.ParquetWriter | pacsv.CSVWriter | None = None
            for chunk in event_chunks(config):
                if writer is None:
                    if path.endswith((".parquet", ".pq")):
                        writer = pq.ParquetWriter(f, chunk.schema, compression="zstd")
                    else:
                        f.write((",".join(chunk.schema.names) + "\n").encode())
                        options = pacsv.WriteOptions(include_header=False, quoting_style="none")
                        writer = pacsv.CSVWriter(f, chunk.schema, write_options=options)
                writer.write_table(chunk)
                written += chunk.num_rows
            if writer is not None:
                writer.close()
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)
    log.info("generate: %d events written to %s", written, out)
    return written
