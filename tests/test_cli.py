"""The command line, run as a user runs it: ``python -m daskrec`` in a subprocess."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq


def daskrec(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daskrec", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_generate_build_show(tmp_path: Path) -> None:
    generated = daskrec("generate", "events.csv", "--events", "40000", "--seed", "3", cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
    built = daskrec(
        "build", "events.csv", "--out", "out", "--event", "view,addtocart", "--recent", "30",
        "--workers", "1", "--threads", "2", "--memory-limit", "2GB", "--dashboard-address", ":0", "--no-progress",
        "--report", "report.html", cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    assert "Dask dashboard: http://" in built.stderr
    assert "Dask performance report: report.html" in built.stderr
    assert "Dask Performance Report" in (tmp_path / "report.html").read_text()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["options"]["ingest"]["event_types"] == ["view", "addtocart"]
    assert manifest["options"]["ingest"]["recent"] == 30
    assert set(manifest["counts"]) >= {
        "events_read", "events_kept", "users", "items", "cooccurrence_nonzeros", "items_with_indicators"
    }
    assert set(manifest["timings_s"]) == {"ingest", "occurrences", "indicators", "output"}
    assert manifest["counts"]["work"] > 0 and manifest["counts"]["item_blocks"] >= 1
    table = pq.read_table(tmp_path / "out" / "indicators.parquet")
    assert table.column_names == ["item", "indicators", "scores", "popularity", "trending"]
    assert table.num_rows == manifest["counts"]["items"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["indicators.parquet", "manifest.json"]
    shown = daskrec("show", "out", "-n", "2", cwd=tmp_path)
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) == 2


def test_generate_is_reproducible(tmp_path: Path) -> None:
    for name in ("a.csv", "b.csv"):
        assert daskrec("generate", name, "--events", "5000", "--seed", "9", cwd=tmp_path).returncode == 0
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.csv", "b.csv")]
    assert digest[0] == digest[1]


def test_bad_input_exits_2_with_file_row_and_column(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("timestamp,visitorid,event,itemid\n1,1,transaction,2\nx,1,transaction,3\n")
    failed = daskrec("build", "bad.csv", "--out", "out", "--dashboard-address", ":0", cwd=tmp_path)
    assert failed.returncode == 2
    assert "bad.csv, row 2, column 'timestamp', value 'x'" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not list((tmp_path / "out").glob(".scratch-*"))  # a failed build leaves no intermediates
    missing = daskrec("build", "nope.csv", "--out", "out", cwd=tmp_path)
    assert missing.returncode == 2 and "nope.csv: no such file" in missing.stderr
    usage = daskrec("build", "bad.csv", "--out", "out", "--top-k", "0", cwd=tmp_path)
    assert usage.returncode == 2
    debug = daskrec("--debug", "build", "bad.csv", "--out", "out", "--dashboard-address", ":0", cwd=tmp_path)
    assert debug.returncode == 2 and "Traceback" in debug.stderr
