"""The synthetic generator: layout, mix, skew, determinism and chunking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daskrec import ConfigError, SynthConfig, generate_events
from daskrec.synth import EVENT_MIX, event_chunks


def whole(config: SynthConfig) -> pa.Table:
    return pa.concat_tables(event_chunks(config))


def test_layout_mix_and_skew() -> None:
    table = whole(SynthConfig(events=200_000, seed=1))
    assert table.column_names == ["timestamp", "visitorid", "event", "itemid", "transactionid"]
    events = np.asarray(table.column("event").to_pylist())
    for name, share in EVENT_MIX.items():
        assert abs((events == name).mean() - share) < 0.003
    assert table.column("transactionid").null_count == (events != "transaction").sum()
    assert np.all(np.diff(table.column("timestamp").to_numpy()) >= 0)
    item_counts = np.sort(np.bincount(table.column("itemid").to_numpy()))[::-1]
    assert item_counts[: len(item_counts) // 100].sum() > 0.1 * len(events)  # top 1% of items: >10% of events
    user_counts = np.bincount(table.column("visitorid").to_numpy())
    assert np.median(user_counts[user_counts > 0]) < user_counts.mean()  # heavy tail


def test_same_seed_same_rows_whatever_the_chunks() -> None:
    assert whole(SynthConfig(events=30_000, seed=4)).equals(whole(SynthConfig(events=30_000, seed=4)))
    assert not whole(SynthConfig(events=30_000, seed=4)).equals(whole(SynthConfig(events=30_000, seed=5)))
    chunks = list(event_chunks(SynthConfig(events=25_000, chunk_events=10_000)))
    assert [c.num_rows for c in chunks] == [10_000, 10_000, 5_000]


def test_writes_csv_and_parquet(tmp_path: Path) -> None:
    config = SynthConfig(events=12_345, users=100, items=50, seed=2, chunk_events=5_000)
    assert generate_events(str(tmp_path / "e.csv"), config) == 12_345
    assert (tmp_path / "e.csv").read_text().splitlines()[0] == "timestamp,visitorid,event,itemid,transactionid"
    generate_events(str(tmp_path / "e.parquet"), config)
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.num_rows == 12_345 and table.column("visitorid").to_numpy().max() < 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.csv", "e.parquet"]


def test_rejects_nonsense_sizes() -> None:
    with pytest.raises(ConfigError, match="events"):
        SynthConfig(events=0)
