"""Atomic output: a folder holds a complete build or visibly none."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daskrec import (
    BuildConfig,
    build_indicators,
    build_manifest,
    output,
    read_indicators,
    write_output,
)
from daskrec.output import read_manifest


def test_round_trip_and_manifest(simple_events_csv: Path, tmp_path: Path) -> None:
    result = build_indicators([str(simple_events_csv)])
    manifest = build_manifest([str(simple_events_csv)], BuildConfig(), result.report)
    write_output(str(tmp_path / "out"), result.table, manifest)
    assert read_indicators(str(tmp_path / "out")).equals(result.table)
    assert manifest["options"]["indicators"]["min_llr"] == BuildConfig().indicators.min_llr and manifest["item_id_type"] == "int64"


@pytest.mark.parametrize("sliced", [False, True])
def test_the_table_is_written_without_dictionaries(simple_events_csv: Path, tmp_path: Path, sliced: bool) -> None:
    """Ids are unique per row: a dictionary per row group made the table slower to write and larger."""
    table = build_indicators([str(simple_events_csv)]).table
    source: pa.Table | list[str] = table
    if sliced:
        source = [str(tmp_path / "slice-0.parquet"), str(tmp_path / "slice-1.parquet")]
        pq.write_table(table.slice(0, 2), source[0])
        pq.write_table(table.slice(2), source[1])
    write_output(str(tmp_path / "out"), source, {"run": 1})
    written = pq.ParquetFile(tmp_path / "out" / "indicators.parquet").metadata
    chunks = [written.row_group(g).column(c) for g in range(written.num_row_groups) for c in range(written.num_columns)]
    assert all(chunk.compression == "ZSTD" and not any("DICTIONARY" in e for e in chunk.encodings) for chunk in chunks)
    assert read_indicators(str(tmp_path / "out")).equals(table)


def test_a_failed_write_leaves_the_previous_build_whole(
    simple_events_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = build_indicators([str(simple_events_csv)])
    out = tmp_path / "out"
    write_output(str(out), result.table, {"run": 1})
    before = (out / "indicators.parquet").read_bytes()

    def disk_full(table: pa.Table, where: object, **options: object) -> None:
        where.write(b"PAR1 half a file")  # type: ignore[attr-defined]
        raise OSError("No space left on device")

    monkeypatch.setattr(output.pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_output(str(out), result.table, {"run": 2})
    assert sorted(p.name for p in out.iterdir()) == ["indicators.parquet", "manifest.json"]  # no temp file
    assert read_manifest(str(out)) == {"run": 1}
    assert (out / "indicators.parquet").read_bytes() == before


def test_a_write_stopped_after_its_commit_is_completed(simple_events_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = build_indicators([str(simple_events_csv)])
    out = tmp_path / "out"
    write_output(str(out), result.table, {"run": 1})
    finish = output.complete_pending
    calls = []

    def stopped(out_dir: str) -> bool:
        calls.append(out_dir)
        if len(calls) == 2:  # the call after the commit: the process dies before its renames
            raise KeyboardInterrupt
        return finish(out_dir)

    monkeypatch.setattr(output, "complete_pending", stopped)
    with pytest.raises(KeyboardInterrupt):
        write_output(str(out), result.table.slice(0, 1), {"run": 2})
    monkeypatch.undo()
    assert read_manifest(str(out)) == {"run": 1}  # the renames are not done yet
    assert output.complete_pending(str(out))
    assert read_manifest(str(out)) == {"run": 2}
    assert read_indicators(str(out)).num_rows == 1
    assert sorted(p.name for p in out.iterdir()) == ["indicators.parquet", "manifest.json"]


def test_an_update_keeps_the_table_it_replaces_even_through_a_crash_mid_renames(
    simple_events_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = build_indicators([str(simple_events_csv)]).table
    out = tmp_path / "out"
    write_output(str(out), table, {"run": 1})
    moves = []
    fs_class = type(output.fsspec.core.url_to_fs(str(out))[0])
    move = fs_class.mv

    def dies_after_the_first_move(self: object, source: str, target: str, **options: object) -> None:
        move(self, source, target, **options)
        moves.append(target)
        if target.endswith(output.PREVIOUS_FILE):
            raise KeyboardInterrupt  # the old table moved aside, the new one not yet in place

    monkeypatch.setattr(fs_class, "mv", dies_after_the_first_move)
    with pytest.raises(KeyboardInterrupt):
        write_output(str(out), table.slice(0, 1), {"run": 2}, keep_previous=True)
    monkeypatch.undo()
    assert not (out / "indicators.parquet").exists() and not (out / "manifest.json").exists()  # committed, not live yet
    assert output.complete_pending(str(out))
    assert read_manifest(str(out)) == {"run": 2} and read_indicators(str(out)).num_rows == 1
    assert pq.read_table(out / output.PREVIOUS_FILE).equals(table)
    write_output(str(out), table, {"run": 3})  # a full build's write: nothing to keep
    assert sorted(p.name for p in out.iterdir()) == ["indicators.parquet", "manifest.json"]
