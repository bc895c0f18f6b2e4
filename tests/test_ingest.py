"""Reading events: id types, recent rows, formats, and every kind of bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SIMPLE_EVENTS, real_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from daskrec import BuildConfig, DataWarning, IngestConfig, InputError, build_indicators
from daskrec.ingest import IdKinds, expand_inputs, keep_recent, latest_pairs, read_events


@pytest.fixture(autouse=True)
def _sync() -> object:
    with dask.config.set(scheduler="sync"):
        yield


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def many_rows(n: int, visitor: object = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": np.arange(n) * 1000,
            "visitorid": visitor if visitor is not None else np.arange(n) % 7,
            "event": "transaction",
            "itemid": np.arange(n) % 11,
            "transactionid": np.arange(n),
        }
    )


def test_keep_recent_latest_first_and_later_rows_win_ties() -> None:
    frame = pd.DataFrame(
        {"visitorid": [1, 1, 1, 1, 2], "itemid": [10, 20, 30, 40, 50],
         "timestamp": [5, 7, 7, 1, 3], "position": [0, 1, 2, 3, 4]}
    )
    kept = keep_recent(frame, 2)
    assert kept[kept.visitorid == 1].itemid.tolist() == [20, 30]  # in input order
    assert kept[kept.visitorid == 2].itemid.tolist() == [50]
    assert sorted(kept.user.unique().tolist()) == [0, 1]
    assert keep_recent(frame, 1)[lambda k: k.visitorid == 1].itemid.tolist() == [30]  # the later of the two 7s


# deadline=None: the first example compiles the numbering and ranking kernels (numba).
@settings(deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 6), st.integers(0, 3), st.integers(0, 1)), max_size=60),
    st.integers(1, 4),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_keep_recent_equals_a_direct_sort(
    rows: list[tuple[int, int, int, int]], recent: int, text_ids: bool, matrices: bool, time_ordered: bool, shuffle: object
) -> None:
    frame = pd.DataFrame(rows, columns=["visitorid", "itemid", "timestamp", "matrix"], dtype=np.int64)
    if time_ordered:  # as most logs are written (a shortcut of the ranking)
        frame = frame.sort_values("timestamp", kind="stable", ignore_index=True)
    frame["position"] = np.arange(len(frame), dtype=np.int64)
    if text_ids:
        frame["visitorid"] = "v" + frame["visitorid"].astype(str)
    if not matrices:
        frame = frame.drop(columns="matrix")
    groups = ["visitorid", *(["matrix"] if matrices else [])]
    expected = (
        frame.sort_values([*groups, "timestamp", "position"], ascending=[True] * len(groups) + [False, False])
        .groupby(groups)
        .head(recent)
        .sort_values("position")
    )
    shuffled = frame.sample(frac=1.0, random_state=shuffle.randint(0, 2**31))  # type: ignore[attr-defined]
    kept = keep_recent(shuffled, recent)
    assert kept["itemid"].tolist() == expected["itemid"].tolist()
    assert kept["visitorid"].tolist() == expected["visitorid"].tolist()
    # Visitors are numbered by their last row, the latest first.
    last_rows = frame.groupby("visitorid")["position"].max().sort_values(ascending=False)
    numbers = dict(zip(last_rows.index, range(len(last_rows))))
    assert kept["user"].tolist() == [numbers[v] for v in kept["visitorid"]]


@settings(deadline=None)
@given(
    st.lists(st.tuples(st.integers(-3, 3), st.integers(0, 4), st.integers(-5, 5)), max_size=80),
    st.booleans(),
)
def test_latest_pairs_equals_a_groupby(rows: list[tuple[int, int, int]], text_ids: bool) -> None:
    frame = pd.DataFrame(rows, columns=["visitorid", "itemid", "timestamp"], dtype=np.int64)
    if text_ids:
        frame["itemid"] = "i" + frame["itemid"].astype(str)
    expected = frame.groupby(["visitorid", "itemid"], sort=False, as_index=False)["timestamp"].max()
    pd.testing.assert_frame_equal(latest_pairs(frame), expected, check_dtype=False)


def test_latest_pairs_numbers_many_keys_as_a_hash_table_grows() -> None:
    # 300k rows, ~190k distinct pairs: the table starts at 2**17 slots and doubles twice.
    rng = np.random.default_rng(7)
    visitors = rng.integers(-(2**62), 2**62, size=1000)
    frame = pd.DataFrame(
        {
            "visitorid": visitors[rng.integers(0, 1000, size=300_000)],
            "itemid": rng.integers(0, 300, size=300_000),
            "timestamp": rng.integers(0, 10**12, size=300_000),
        }
    )
    expected = frame.groupby(["visitorid", "itemid"], sort=False, as_index=False)["timestamp"].max()
    assert len(expected) > 150_000
    pd.testing.assert_frame_equal(latest_pairs(frame), expected)


def test_integer_and_string_ids(tmp_path: Path) -> None:
    ints = write_csv(tmp_path / "ints.csv", "timestamp,visitorid,event,itemid,transactionid\n1,7,transaction,3,\n")
    files = expand_inputs([str(ints)])
    frame = read_events(files, IngestConfig()).compute()
    assert frame.visitorid.dtype == np.int64 and frame.itemid.tolist() == [3]
    text = write_csv(tmp_path / "text.csv", "timestamp,visitorid,event,itemid,transactionid\n1,u-1,transaction,item 3,\n")
    result = build_indicators([str(text)])
    assert result.table.column("item").to_pylist() == ["item 3"]


def test_text_ids_after_integer_blocks_turn_the_column_to_strings(tmp_path: Path) -> None:
    frame = many_rows(400)
    frame["itemid"] = frame["itemid"].astype(str)
    frame.loc[399, "itemid"] = "x-1"  # only the last block has text
    path = tmp_path / "mixed.csv"
    frame.to_csv(path, index=False)
    result = build_indicators([str(path)], BuildConfig(ingest=IngestConfig(blocksize=1024)))
    assert result.counts["partitions"] > 3
    items = result.table.column("item").to_pylist()
    assert "x-1" in items and "10" in items and all(isinstance(i, str) for i in items)


def test_files_are_read_in_order_given_and_globs_sorted(tmp_path: Path) -> None:
    for name in ("b.csv", "a.csv"):
        many_rows(5).to_csv(tmp_path / name, index=False)
    files = expand_inputs([str(tmp_path / "*.csv"), str(tmp_path / "a.csv")])
    assert [Path(f.url).name for f in files] == ["a.csv", "b.csv", "a.csv"]


@pytest.mark.parametrize(
    ("text", "column", "row", "value"),
    [
        ("timestamp,visitorid,event,itemid\n1,1,transaction,2\nsoon,1,transaction,3\n", "timestamp", 2, "soon"),
        ("timestamp,visitorid,event,itemid\n1,1,transaction,2\n2,,transaction,3\n", "visitorid", 2, None),
        ("timestamp,visitorid,event,itemid\n1,1,transaction,\n", "itemid", 1, None),
        ("timestamp,visitorid,event,itemid\n1,1,transaction,2\n2,1,,3\n", "event", 2, None),
    ],
)
def test_malformed_rows_name_file_row_and_column(
    tmp_path: Path, text: str, column: str, row: int, value: object
) -> None:
    path = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(InputError) as caught:
        build_indicators([str(path)])
    error = caught.value
    assert (error.path, error.row, error.column, error.value) == (str(path), row, column, value)
    assert str(path) in str(error) and f"row {row}" in str(error) and "--on-bad-rows skip" in str(error)


def test_row_numbers_count_across_blocks(tmp_path: Path) -> None:
    frame = many_rows(500).astype({"timestamp": str})
    frame.loc[431, "timestamp"] = "12:00"
    path = tmp_path / "late.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(InputError) as caught:
        build_indicators([str(path)], BuildConfig(ingest=IngestConfig(blocksize=1024)))
    assert (caught.value.row, caught.value.column, caught.value.value) == (432, "timestamp", "12:00")


def test_skip_drops_and_counts_bad_rows(tmp_path: Path) -> None:
    frame = many_rows(60).astype({"timestamp": str})
    frame.loc[[3, 9], "timestamp"] = "never"
    frame.loc[12, "visitorid"] = None
    path = tmp_path / "some-bad.csv"
    frame.to_csv(path, index=False)
    with pytest.warns(DataWarning, match="skipped 3 malformed rows"):
        result = build_indicators([str(path)], BuildConfig(ingest=IngestConfig(on_bad_rows="skip")))
    assert result.counts["events_skipped"] == 3
    assert result.counts["skipped_bad_timestamp"] == 2 and result.counts["skipped_bad_visitorid"] == 1
    assert result.counts["events_kept"] == 57


def test_bad_rows_of_other_event_types_do_not_stop_the_build(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "views.csv", "timestamp,visitorid,event,itemid\n1,1,transaction,2\nsoon,1,view,3\n"
    )
    assert build_indicators([str(path)]).counts["events_kept"] == 1


def test_missing_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "nocol.csv", "timestamp,visitor,event,itemid\n1,1,transaction,2\n")
    with pytest.raises(InputError, match="missing column") as caught:
        build_indicators([str(path)])
    assert caught.value.column == "visitorid" and caught.value.path == str(path)


@pytest.mark.parametrize(("text", "message"), [("", "empty"), ("timestamp,visitorid,event,itemid\n", "no rows")])
def test_empty_files(tmp_path: Path, text: str, message: str) -> None:
    path = write_csv(tmp_path / "empty.csv", text)
    with pytest.raises(InputError, match=message):
        build_indicators([str(path)])


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file") as caught:
        build_indicators([str(tmp_path / "absent.csv")])
    assert caught.value.path == str(tmp_path / "absent.csv")
    with pytest.raises(InputError, match="no such file"):
        build_indicators([str(tmp_path / "*.csv")])


def test_no_rows_of_the_event_type(simple_events_csv: Path) -> None:
    with pytest.raises(InputError, match="no rows of event type purchase") as caught:
        build_indicators([str(simple_events_csv)], BuildConfig(ingest=IngestConfig(event_types=("purchase",))))
    assert caught.value.column == "event"


def test_parquet_with_pushdown_and_string_ids(tmp_path: Path) -> None:
    frame = SIMPLE_EVENTS.assign(itemid=SIMPLE_EVENTS.itemid.map(lambda i: f"item-{i}"))
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=5)
    files = expand_inputs([str(path)])
    events = read_events(files, IngestConfig(), IdKinds()).compute()
    assert len(events) == (SIMPLE_EVENTS.event == "transaction").sum()
    assert events.itemid.iloc[0] == "item-10"
    assert build_indicators([str(path)]).table.num_rows == 4


def test_parquet_bad_row_is_located_in_the_file(tmp_path: Path) -> None:
    frame = SIMPLE_EVENTS.copy()
    frame["timestamp"] = frame["timestamp"].astype("Int64")
    frame.loc[8, "timestamp"] = None  # data row 9, a transaction, in the second row group
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=5)
    with pytest.raises(InputError) as caught:
        build_indicators([str(path)])
    assert (caught.value.row, caught.value.column) == (9, "timestamp")


def test_parquet_float_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "floats.parquet"
    pq.write_table(pa.Table.from_pandas(SIMPLE_EVENTS.astype({"itemid": float}), preserve_index=False), path)
    with pytest.raises(InputError, match="integers or strings") as caught:
        build_indicators([str(path)])
    assert caught.value.column == "itemid"


def test_a_gzipped_real_log_gives_the_same_indicators(tmp_path: Path) -> None:
    plain = real_dataset("ml-latest-small")
    packed = tmp_path / "events.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    (file,) = expand_inputs([str(packed)])
    assert file.compression == "gzip"
    config = BuildConfig(ingest=IngestConfig(blocksize=1 << 20))  # the plain file splits, the packed one cannot
    expected = build_indicators([str(plain)], config)
    got = build_indicators([str(packed)], config)
    assert got.counts["partitions"] == 1 and expected.counts["partitions"] > 1
    assert got.table.equals(expected.table)


def test_rows_that_cannot_be_split_are_located_and_counted(tmp_path: Path) -> None:
    frame = many_rows(500).astype({"timestamp": str})
    frame.loc[431, "timestamp"] = "12:00"
    lines = frame.to_csv(index=False).splitlines()
    lines[100] = "99000,1,transaction"  # data row 100 has too few fields; row 432 a bad timestamp
    path = write_csv(tmp_path / "ragged.csv", "\n".join(lines) + "\n")
    with pytest.raises(InputError, match="3 fields where the header has 5") as caught:
        build_indicators([str(path)])  # one block: the first bad row is reported
    assert (caught.value.row, caught.value.column, caught.value.value) == (100, None, "99000,1,transaction")
    with pytest.warns(DataWarning, match="skipped 2 malformed rows"):
        skipped = build_indicators([str(path)], BuildConfig(ingest=IngestConfig(blocksize=1024, on_bad_rows="skip")))
    assert (skipped.counts["skipped_bad_fields"], skipped.counts["skipped_bad_timestamp"]) == (1, 1)
    assert skipped.counts["events_read"] == 500 and skipped.counts["events_kept"] == 498


def test_a_quoted_value_over_two_lines_is_a_bad_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "quoted.csv", 'timestamp,visitorid,event,itemid\n1,1,transaction,2\n2,"a\nb",transaction,3\n')
    with pytest.raises(InputError, match="a line break in a quoted value") as caught:
        build_indicators([str(path)])
    assert (caught.value.row, caught.value.column) == (2, "visitorid")


def test_text_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("timestamp,visitorid,event,itemid\n1,1,transaction,caf\u00e9\n2,1,transaction,tea\n".encode("latin-1"))
    with pytest.raises(InputError, match="not valid UTF-8") as caught:
        build_indicators([str(path)])
    assert (caught.value.row, caught.value.column, caught.value.value) == (1, "itemid", "caf\\xe9")
    with pytest.warns(DataWarning, match="skipped 1 malformed rows"):
        kept = build_indicators([str(path)], BuildConfig(ingest=IngestConfig(on_bad_rows="skip")))
    assert kept.table.column("item").to_pylist() == ["tea"]
