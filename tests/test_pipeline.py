"""The whole build on the hand-computed log and on generated data, under every scheduler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import SIMPLE_COOCCURRENCE, SIMPLE_ROW_SUM, SIMPLE_TOTAL
from spec_port import spec_cross_indicators, spec_indicators, spec_root_llr

from daskrec import (
    BuildConfig,
    IndicatorConfig,
    IngestConfig,
    build_indicators,
    generate_events,
)
from daskrec import pipeline
from daskrec.synth import SynthConfig

EVERYTHING = IndicatorConfig(top_k=50, min_llr=0.0, llr_table="cooccurrence")


def as_dict(table: pa.Table) -> dict[object, list[tuple[object, float]]]:
    return {row["item"]: list(zip(row["indicators"], row["scores"])) for row in table.to_pylist()}


def test_hand_computed_log(simple_events_csv: Path, scheduler: str) -> None:
    result = build_indicators([str(simple_events_csv)], BuildConfig(indicators=EVERYTHING))
    got = as_dict(result.table)
    assert list(got) == [10, 20, 30, 40]
    expected: dict[object, list[tuple[object, float]]] = {}
    for i in SIMPLE_ROW_SUM:
        scored = []
        for (a, b), v in SIMPLE_COOCCURRENCE.items():
            if i in (a, b):
                j = b if i == a else a
                k12, k21 = SIMPLE_ROW_SUM[i] - v, SIMPLE_ROW_SUM[j] - v
                scored.append((j, spec_root_llr(v, k12, k21, SIMPLE_TOTAL - v - k12 - k21)))
        expected[i] = sorted((p for p in scored if p[1] > 0), key=lambda p: (-p[1], p[0]))
    assert got.keys() == expected.keys()
    for item, pairs in expected.items():
        assert [j for j, _ in got[item]] == [j for j, _ in pairs]
        np.testing.assert_allclose([s for _, s in got[item]], [s for _, s in pairs], rtol=1e-12)
    assert got[40] == []
    assert result.counts == result.counts | {
        "events_read": 9, "events_kept": 9, "users": 4, "items": 4, "cooccurrence_nonzeros": 6,
    }


def test_threshold_and_top_k(simple_events_csv: Path) -> None:
    some = build_indicators([str(simple_events_csv)], BuildConfig(indicators=IndicatorConfig(top_k=1, min_llr=0.0, llr_table="cooccurrence")))
    assert all(len(v) <= 1 for v in as_dict(some.table).values())
    none = build_indicators([str(simple_events_csv)], BuildConfig(indicators=IndicatorConfig(min_llr=50.0)))
    assert all(v == [] for v in as_dict(none.table).values())
    assert none.counts["items_with_indicators"] == 0


@pytest.fixture(scope="module")
def generated_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("generated") / "events.csv"
    generate_events(str(path), SynthConfig(events=60_000, users=1_500, items=400, seed=5))
    return path


def config_for(blocksize: int, llr_table: str = "cooccurrence") -> BuildConfig:
    return BuildConfig(
        ingest=IngestConfig(event_types=None, recent=20, blocksize=blocksize),
        indicators=IndicatorConfig(top_k=10, min_llr=2.0, llr_table=llr_table),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("llr_table", ["cooccurrence", "users"])
def test_same_output_for_any_scheduler_and_partitioning(generated_csv: Path, scheduler: str, llr_table: str) -> None:
    one = build_indicators([str(generated_csv)], config_for(1 << 30, llr_table))
    many = build_indicators([str(generated_csv)], config_for(200_000, llr_table))
    assert many.counts["partitions"] > 5 and one.counts["partitions"] == 1
    assert one.table.equals(many.table)
    assert one.counts["items_with_indicators"] > 100
    expected = spec_indicators(
        str(generated_csv), event_types=None, recent=20, top_k=10, min_llr=2.0, llr_table=llr_table
    )
    got = as_dict(one.table)
    assert [j for j, _ in got[next(iter(got))]] == [j for j, _ in expected[next(iter(got))]]
    assert {k: [j for j, _ in v] for k, v in got.items()} == {k: [j for j, _ in v] for k, v in expected.items()}


def test_string_ids_give_the_same_indicators(generated_csv: Path, tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.read_csv(generated_csv)
    frame["itemid"] = frame["itemid"].map(lambda i: f"item {i:06d}")  # order-preserving, with a space
    frame["visitorid"] = frame["visitorid"].map(lambda u: f"visitor-{u}")
    text_path = tmp_path / "text-ids.csv"
    frame.to_csv(text_path, index=False)
    numeric = as_dict(build_indicators([str(generated_csv)], config_for(1 << 20)).table)
    text = as_dict(build_indicators([str(text_path)], config_for(1 << 20)).table)
    assert text == {f"item {k:06d}": [(f"item {j:06d}", s) for j, s in v] for k, v in numeric.items()}


def small_workers(monkeypatch: pytest.MonkeyPatch, bytes_per_entry: int) -> None:
    """Workers too small to share the matrix, and an entry a block gathers so costly that a
    4 MB task holds only a few items' rows: many item blocks."""
    monkeypatch.setattr(pipeline, "worker_memory_bytes", lambda: 1)
    monkeypatch.setattr(pipeline, "task_memory_bytes", lambda: 4_000_000)
    monkeypatch.setattr(pipeline, "_BYTES_PER_SUFFIX_ENTRY", bytes_per_entry)


@pytest.mark.parametrize("llr_table", ["cooccurrence", "users"])
def test_blocks_gathering_their_own_rows_equal_the_shared_matrix(
    generated_csv: Path, scheduler: str, llr_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = build_indicators([str(generated_csv)], config_for(200_000, llr_table))
    small_workers(monkeypatch, bytes_per_entry=2_000)
    gathered = build_indicators([str(generated_csv)], config_for(200_000, llr_table))
    assert gathered.counts["item_blocks"] > 4 * shared.counts["item_blocks"]
    assert gathered.table.equals(shared.table)
    assert gathered.counts["work"] == shared.counts["work"]


def test_downsampled_blocks_gathering_their_own_rows_equal_the_shared_matrix(
    generated_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BuildConfig(
        ingest=IngestConfig(event_types=None, recent=20, blocksize=200_000),
        indicators=IndicatorConfig(top_k=10, min_llr=2.0, llr_table="users", max_per_user=8, max_per_item=40),
    )
    shared = build_indicators([str(generated_csv)], config)
    small_workers(monkeypatch, bytes_per_entry=2_000)
    assert build_indicators([str(generated_csv)], config).table.equals(shared.table)


def cross_config(llr_table: str, blocksize: int = 200_000) -> BuildConfig:
    return BuildConfig(
        ingest=IngestConfig(event_types=("addtocart",), cross_event_types=("view", "transaction"), recent=20, blocksize=blocksize),
        indicators=IndicatorConfig(top_k=10, min_llr=1.0, llr_table=llr_table),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("llr_table", ["cooccurrence", "users"])
def test_cross_occurrence_matches_the_spec_on_both_paths(
    generated_csv: Path, llr_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = build_indicators([str(generated_csv)], cross_config(llr_table))
    table = shared.table
    assert table.column_names == [
        "item", "indicators", "scores", "view_indicators", "view_scores",
        "transaction_indicators", "transaction_scores", "popularity", "trending",
    ]
    for cross in ("view", "transaction"):
        expected = spec_cross_indicators(
            str(generated_csv), primary="addtocart", cross=cross, recent=20, top_k=10, min_llr=1.0, llr_table=llr_table
        )
        got = {row["item"]: list(zip(row[f"{cross}_indicators"], row[f"{cross}_scores"])) for row in table.to_pylist()}
        # every item of any of the three types has a row; those of neither type here have no indicators
        assert got.keys() >= expected.keys() and not any(got[k] for k in got.keys() - expected.keys())
        assert {k: [j for j, _ in got[k]] for k in expected} == {k: [j for j, _ in v] for k, v in expected.items()}
        np.testing.assert_allclose(
            [s for k in expected for _, s in got[k]], [s for v in expected.values() for _, s in v], rtol=1e-9
        )
    assert sum(1 for v in table.column("view_indicators").to_pylist() if v) > 50
    # The primary field is what a build without cross types gives (plus rows for items only crossed).
    alone = build_indicators([str(generated_csv)], BuildConfig(
        ingest=IngestConfig(event_types=("addtocart",), recent=20, blocksize=200_000),
        indicators=IndicatorConfig(top_k=10, min_llr=1.0, llr_table=llr_table),  # type: ignore[arg-type]
    ))
    primary = dict(zip(table.column("item").to_pylist(), table.column("indicators").to_pylist()))
    assert all(primary[k] == v for k, v in zip(alone.table.column("item").to_pylist(), alone.table.column("indicators").to_pylist()))
    small_workers(monkeypatch, bytes_per_entry=8_000)
    gathered = build_indicators([str(generated_csv)], cross_config(llr_table))
    assert gathered.counts["item_blocks"] > 4 * shared.counts["item_blocks"]
    assert gathered.table.equals(table)


@pytest.mark.parametrize("blocksize", [200_000, 10_000_000])
def test_trending_counts_visitors_per_item_in_the_window(generated_csv: Path, blocksize: int) -> None:
    import pandas as pd

    config = BuildConfig(ingest=IngestConfig(event_types=("addtocart", "transaction"), recent=5, trending_days=3.5, blocksize=blocksize))
    result = build_indicators([str(generated_csv)], config)
    events = pd.read_csv(generated_csv)
    primary = events[events.event.isin(["addtocart", "transaction"])]
    since = primary.timestamp.max() - round(3.5 * 86_400_000)
    recent = primary[primary.timestamp >= since].drop_duplicates(["visitorid", "itemid"])
    expected = recent.groupby("itemid").size()
    table = result.table.to_pandas().set_index("item")
    assert (table["trending"] == expected.reindex(table.index, fill_value=0)).all()
    assert 0 < table["trending"].sum() < table["popularity"].sum()  # a window, not the whole log
    assert result.counts["trending_since_ms"] == since


def test_distinct_items_are_pandas_unique_sorted_for_every_kind_of_id() -> None:
    # Dense non-negative integers take the marks in a table; the rest pandas' hash table.
    rng = np.random.default_rng(5)
    kinds = [
        rng.integers(0, 50, 300), rng.integers(0, 2**40, 300), rng.integers(-5, 50, 300),
        rng.integers(0, 50, 300).astype(np.uint64), rng.integers(0, 50, 300).astype(np.int32), np.zeros(0, np.int64),
    ]
    for ids in [pd.Series(k) for k in kinds] + [pd.Series([str(x) for x in kinds[0]]), pd.Series(["b", "a"], dtype="string")]:
        got, expected = pipeline._distinct_sorted(ids), pd.Index(ids.unique()).sort_values()
        assert got.equals(expected) and got.dtype == expected.dtype
