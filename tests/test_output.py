"""Atomic output: a folder holds a complete build or visibly none."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from daskrec import (
    BuildConfig,
    InputError,
    build_indicators,
    build_manifest,
    output,
    read_indicators,
    write_output,
)


def test_round_trip_and_manifest(simple_events_csv: Path, tmp_path: Path) -> None:
    result = build_indicators([str(simple_events_csv)])
    manifest = build_manifest([str(simple_events_csv)], BuildConfig(), result.report)
    write_output(str(tmp_path / "out"), result.table, manifest)
    assert read_indicators(str(tmp_path / "out")).equals(result.table)
    assert manifest["options"]["indicators"]["min_llr"] == BuildConfig().indicators.min_llr and manifest["item_id_type"] == "int64"


def test_a_failed_write_leaves_no_complete_looking_output(
    simple_events_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = build_indicators([str(simple_events_csv)])
    out = tmp_path / "out"
    write_output(str(out), result.table, {"run": 1})

    def disk_full(table: pa.Table, where: object, **options: object) -> None:
        where.write(b"PAR1 half a file")  # type: ignore[attr-defined]
        raise OSError("No space left on device")

    monkeypatch.setattr(output.pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_output(str(out), result.table, {"run": 2})
    assert sorted(p.name for p in out.iterdir()) == ["indicators.parquet"]  # no manifest, no temp file
    with pytest.raises(InputError, match="no complete build"):
        read_indicators(str(out))
