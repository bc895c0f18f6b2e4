"""The command line, run as a user runs it: ``python -m daskrec`` in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import real_dataset

from daskrec import DataWarning
from daskrec.cli import main
from daskrec.es import EsSettings

pytestmark = pytest.mark.slow  # starts processes


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
    # no scratch left behind: the table, the manifest and the state an update starts from
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["indicators.parquet", "manifest.json", "state"]
    shown = daskrec("show", "out", "-n", "2", cwd=tmp_path)
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) == 2


def test_a_small_input_runs_in_process_unless_the_dashboard_is_asked_for(tmp_path: Path) -> None:
    assert daskrec("generate", "events.csv", "--events", "20000", "--seed", "5", cwd=tmp_path).returncode == 0
    alone = daskrec("build", "events.csv", "--out", "alone", "--event", "all", "--no-progress", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    assert "Dask's threaded scheduler" in alone.stderr and "Dask dashboard" not in alone.stderr
    clustered = daskrec("build", "events.csv", "--out", "clustered", "--event", "all", "--no-progress",
                        "--dashboard", "--dashboard-address", ":0", cwd=tmp_path)
    assert clustered.returncode == 0, clustered.stderr
    assert "Dask dashboard: http://" in clustered.stderr and "threaded scheduler" not in clustered.stderr
    assert pq.read_table(tmp_path / "alone" / "indicators.parquet").equals(pq.read_table(tmp_path / "clustered" / "indicators.parquet"))
    for clash in (["--workers", "2"], ["--report", "report.html"]):
        refused = daskrec("build", "events.csv", "--out", "never", "--no-dashboard", *clash, cwd=tmp_path)
        assert refused.returncode == 2 and "dashboard" in refused.stderr and not (tmp_path / "never").exists()


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


# ------------------------------------------------------------------------------- inputs people have

CORPUS_DIR = Path(__file__).resolve().parent / "data" / "bad-inputs"
CORPUS = [
    # file, exit code, what stderr says (the file's name precedes it)
    ("empty.csv", 2, "empty.csv: the file is empty"),
    ("header-only.csv", 2, "header-only.csv: the file has a header but no rows"),
    ("missing-column.csv", 2, "missing-column.csv, column 'itemid': missing column"),
    ("bad-timestamp.csv", 2, "bad-timestamp.csv, row 2, column 'timestamp', value 'yesterday': not an integer"),
    ("not-utf8.csv", 2, "not-utf8.csv, row 2, column 'itemid', value 'caf\\\\xe9': not valid UTF-8 text"),
    ("too-few-fields.csv", 2, "too-few-fields.csv, row 2, value '2000,1,transaction': 3 fields where the header has 5"),
    ("too-many-fields.csv", 2, "too-many-fields.csv, row 2, value '2000,1,transaction,20,2,x,y': 7 fields where the header has 5"),
    ("unclosed-quote.csv", 2, "unclosed-quote.csv, row 2, value '2000,\"1,transaction,20,2': an unclosed quote (its value runs over 5 lines)"),
    ("not-gzip.csv.gz", 2, "not-gzip.csv.gz: cannot be read as gzip"),
    ("id-longer-than-int64.csv", 0, "3 items"),
    ("ids-with-spaces-and-dashes.csv", 0, "2 items"),
    ("good.csv.bz2", 0, "2 items"),
    ("good.csv.zst", 0, "2 items"),
]


@pytest.fixture(scope="module")
def scheduler_address() -> Iterator[str]:
    """One in-process cluster for the in-process CLI runs (a LocalCluster per run costs seconds)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


@pytest.mark.parametrize(("name", "code", "said"), CORPUS, ids=[c[0] for c in CORPUS])
def test_inputs_people_have(
    name: str, code: int, said: str, tmp_path: Path, scheduler_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["build", str(CORPUS_DIR / name), "--out", str(tmp_path / "out"), "--event", "all", "--min-llr", "0"]
    assert main([*argv, "--scheduler", scheduler_address, "--no-progress"]) == code
    captured = capsys.readouterr()
    assert said in (captured.err if code else captured.out)
    assert "unexpected" not in captured.err


def test_bad_rows_of_every_kind_are_skipped_and_counted(tmp_path: Path, scheduler_address: str) -> None:
    broken = ["bad-timestamp.csv", "not-utf8.csv", "too-few-fields.csv", "too-many-fields.csv", "unclosed-quote.csv"]
    argv = ["build", *(str(CORPUS_DIR / name) for name in broken), "--out", str(tmp_path / "out"), "--on-bad-rows", "skip"]
    # the unclosed quote's value runs over the 4 lines after it: they cannot be read and count too
    with pytest.warns(DataWarning, match="skipped 9 malformed rows"):
        assert main([*argv, "--scheduler", scheduler_address, "--no-progress"]) == 0
    counts = json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]
    assert counts["events_skipped"] == 9
    assert (counts["skipped_bad_timestamp"], counts["skipped_bad_itemid"], counts["skipped_bad_fields"]) == (1, 1, 7)
    assert counts["events_read"] == sum(len((CORPUS_DIR / n).read_text("latin-1").splitlines()) - 1 for n in broken)


def test_a_folder_without_a_build_is_a_daskrec_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["show", str(tmp_path)], ["index", str(tmp_path), "--es-url", "http://127.0.0.1:1"]):
        assert main(argv) == 2
        assert "holds no complete build" in capsys.readouterr().err


def test_update_takes_files_or_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASKREC_ES_URL", raising=False)
    build = ["update", "--build", str(tmp_path)]
    for argv, says in (
        (build, "give the new EVENTS files, or --from-store"),
        ([*build, "x.csv", "--from-store"], "(not both)"),
        ([*build, "x.csv", "--after", "3"], "--after goes with --from-store"),
        ([*build, "--from-store"], "give --es-url"),
    ):
        assert main(argv) == 2
        assert says in capsys.readouterr().err


def test_an_unknown_field_boost_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = CORPUS_DIR / "good.csv.bz2"
    argv = ["evaluate", str(events), "--event", "all", "--no-es", "--no-baselines", "--field-boost", "view=0.5", "--no-progress"]
    assert main([*argv, "--dashboard-address", ":0"]) == 2
    assert "'view_indicators'" in capsys.readouterr().err


@pytest.mark.integration
def test_command_line_build_index_and_query(tmp_path: Path, es_settings: EsSettings, alias: str) -> None:
    def daskrec(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DASKREC_ES_URL": es_settings.url}
        return subprocess.run([sys.executable, "-m", "daskrec", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    dataset = str(real_dataset("ml-latest-small"))
    built = daskrec("build", dataset, "--out", "out", "--es-url", es_settings.url, "--index", alias,
                    "--no-progress", "--dashboard-address", ":0")
    assert built.returncode == 0, built.stderr
    assert f"now behind alias {alias!r}" in built.stderr
    table = pq.read_table(tmp_path / "out" / "indicators.parquet").to_pylist()
    item = next(r for r in table if len(r["indicators"]) >= 2)
    shown = daskrec("similar", str(item["item"]), "--index", alias)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == [str(i) for i in item["indicators"]]
    recommended = daskrec("recommend", "--history", ",".join(map(str, item["indicators"][:2])), "-k", "5",
                          "--index", alias)
    assert recommended.returncode == 0 and len(recommended.stdout.splitlines()) == 5
    unknown = daskrec("similar", "no-such-item", "--index", alias)
    assert unknown.returncode == 2 and "not in index" in unknown.stderr
    down = daskrec("build", dataset, "--out", "out2", "--es-url", "http://127.0.0.1:9", "--no-progress")
    assert down.returncode == 2 and "unreachable" in down.stderr
    assert not (tmp_path / "out2").exists()  # it failed before building anything
