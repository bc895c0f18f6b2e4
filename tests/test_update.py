"""Incremental updates: a build brought up to date with new events equals a full build of all of
them, whatever the split, through reruns and interruptions."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import EVERY_TYPE, build_into, real_dataset
from elasticsearch import Elasticsearch, helpers
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daskrec import BuildConfig, IndexConfig, IndicatorConfig, IngestConfig, InputError, generate_events
from daskrec import index as index_module
from daskrec import output as output_module
from daskrec import pipeline
from daskrec.config import ServiceConfig
from daskrec.es import EsSettings
from daskrec.events import events_index
from daskrec.index import indicator_documents, live_layout, update_index, write_index
from daskrec.output import PREVIOUS_FILE, write_output
from daskrec.pipeline import update_build, write_build
from daskrec.schema import UPDATING, Layout, state_of, table_of
from daskrec.service import create_app
from daskrec.synth import SynthConfig

CONFIGS = {
    "users table, recent 5": BuildConfig(ingest=IngestConfig(event_types=None, recent=5, trending_days=0.5)),
    "cooccurrence table": BuildConfig(
        ingest=IngestConfig(event_types=None, recent=8), indicators=IndicatorConfig(llr_table="cooccurrence", top_k=10, min_llr=0.0)
    ),
    "cross types": BuildConfig(ingest=IngestConfig(event_types=("view",), cross_event_types=("addtocart", "transaction"), recent=4)),
}


@pytest.fixture(scope="module")
def log_rows(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """A seeded 12k-event log, as rows."""
    path = tmp_path_factory.mktemp("update") / "events.csv"
    generate_events(str(path), SynthConfig(events=12_000, seed=5))
    return pd.read_csv(path)


def write_batches(rows: pd.DataFrame, cuts: list[int], folder: Path) -> list[str]:
    """``rows`` cut at ``cuts`` into CSV files, in order."""
    bounds = [0, *cuts, len(rows)]
    paths = []
    for n, (start, stop) in enumerate(zip(bounds, bounds[1:])):
        path = folder / f"batch-{n}.csv"
        rows.iloc[start:stop].to_csv(path, index=False)
        paths.append(str(path))
    return paths


def assert_same_indicators(updated: pa.Table, full: pa.Table) -> None:
    """Same rows and lists; scores within 1e-9 relative."""
    assert updated.column_names == full.column_names
    for name in updated.column_names:
        if name.endswith("scores"):
            for got, want in zip(updated.column(name).to_pylist(), full.column(name).to_pylist()):
                np.testing.assert_allclose(got, want, rtol=1e-9)
        else:
            assert updated.column(name).equals(full.column(name)), name


def updated_and_full(batches: list[str], config: BuildConfig, folder: Path) -> tuple[pa.Table, pa.Table]:
    write_build(batches[:1], str(folder / "updated"), config)
    for batch in batches[1:]:
        update_build([batch], str(folder / "updated"))
    write_build(batches, str(folder / "full"), config)
    return pq.read_table(folder / "updated" / "indicators.parquet"), pq.read_table(folder / "full" / "indicators.parquet")


@pytest.mark.parametrize("name", CONFIGS)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_updates_equal_a_full_build(name: str, log_rows: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(1, len(log_rows) - 1), min_size=1, max_size=3, unique=True), label="cuts"))
    folder = tmp_path_factory.mktemp("split")
    updated, full = updated_and_full(write_batches(log_rows, cuts, folder), CONFIGS[name], folder)
    assert_same_indicators(updated, full)
    manifest = json.loads((folder / "updated" / "manifest.json").read_text())
    assert [u["counts"]["events_read"] for u in manifest["updates"]] == np.diff([*cuts, len(log_rows)]).tolist()
    assert manifest["counts"]["events_read"] == len(log_rows)
    assert len(list((folder / "updated" / "state").iterdir())) == 1  # earlier states are removed


def test_an_update_equals_a_full_build_on_real_data(tmp_path: Path) -> None:
    rows = pd.read_csv(real_dataset("ml-latest-small"))
    updated, full = updated_and_full(write_batches(rows, [int(len(rows) * 0.9), int(len(rows) * 0.99)], tmp_path), EVERY_TYPE, tmp_path)
    assert_same_indicators(updated, full)


def test_new_users_items_and_event_types_with_text_ids(tmp_path: Path) -> None:
    base = pd.DataFrame({"timestamp": [1, 2, 3, 4, 5, 6], "visitorid": ["u1", "u1", "u2", "u2", "u3", "u3"],
                         "event": ["buy"] * 6, "itemid": ["b", "c", "b", "c", "c", "d"], "transactionid": [None] * 6})
    # A new item that sorts first (every item code moves), a new visitor, a new event type, and
    # u1's window (recent=2) pushing out its older rows, one with an equal timestamp.
    new = pd.DataFrame({"timestamp": [7, 2, 8, 9, 9, 10], "visitorid": ["u1", "u1", "u4", "u4", "u2", "u4"],
                        "event": ["like", "buy", "buy", "like", "buy", "buy"], "itemid": ["a", "a", "a", "b", "a", "c"],
                        "transactionid": [None] * 6})
    base.to_csv(tmp_path / "base.csv", index=False)
    new.to_csv(tmp_path / "new.csv", index=False)
    config = BuildConfig(ingest=IngestConfig(event_types=None, recent=2), indicators=IndicatorConfig(min_llr=0.0))
    updated, full = updated_and_full([str(tmp_path / "base.csv"), str(tmp_path / "new.csv")], config, tmp_path)
    assert_same_indicators(updated, full)
    assert updated.column("item").to_pylist() == ["a", "b", "c", "d"]


def test_text_ids_after_integer_ids_ask_for_a_full_build(tmp_path: Path, simple_events_csv: Path) -> None:
    write_build([str(simple_events_csv)], str(tmp_path / "out"))
    (tmp_path / "new.csv").write_text("timestamp,visitorid,event,itemid,transactionid\n20000,1,transaction,x-1,\n")
    with pytest.raises(InputError, match="text ids") as raised:
        update_build([str(tmp_path / "new.csv")], str(tmp_path / "out"))
    assert raised.value.column == "itemid"


def test_a_build_without_state_asks_for_a_rebuild(tmp_path: Path, simple_events_csv: Path) -> None:
    build_into(tmp_path / "out", simple_events_csv)  # written as builds before updates were
    with pytest.raises(InputError, match="run `daskrec build` over all events once"):
        update_build([str(simple_events_csv)], str(tmp_path / "out"))


def test_the_same_files_again_are_a_rerun(tmp_path: Path, log_rows: pd.DataFrame) -> None:
    batches = write_batches(log_rows, [8_000], tmp_path)
    write_build(batches[:1], str(tmp_path / "out"), EVERY_TYPE)
    update_build(batches[1:], str(tmp_path / "out"))
    before = (tmp_path / "out" / "manifest.json").read_text()
    update_build(batches[1:], str(tmp_path / "out"))
    assert (tmp_path / "out" / "manifest.json").read_text() == before


def test_a_failed_update_leaves_the_build_as_it_was(tmp_path: Path, log_rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = write_batches(log_rows, [6_000], tmp_path)
    write_build(batches[:1], str(tmp_path / "updated"), EVERY_TYPE)
    files = {p.name: p.read_bytes() for p in (tmp_path / "updated").iterdir() if p.is_file()}

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a worker died")

    monkeypatch.setattr(pipeline, "_indicator_stages", broken)
    with pytest.raises(RuntimeError):
        update_build(batches[1:], str(tmp_path / "updated"))
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (tmp_path / "updated").iterdir() if p.is_file()} == files
    assert [p.name for p in (tmp_path / "updated").iterdir() if p.name.startswith(".scratch")] == []
    update_build(batches[1:], str(tmp_path / "updated"))
    write_build(batches, str(tmp_path / "full"), EVERY_TYPE)
    assert_same_indicators(pq.read_table(tmp_path / "updated" / "indicators.parquet"), pq.read_table(tmp_path / "full" / "indicators.parquet"))


def test_an_update_that_died_after_its_commit_is_completed_not_repeated(
    tmp_path: Path, log_rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = write_batches(log_rows, [6_000], tmp_path)
    write_build(batches[:1], str(tmp_path / "updated"), EVERY_TYPE)
    finish = output_module.complete_pending

    def dies_after_commit(out_dir: str) -> bool:
        if (Path(out_dir) / ".manifest-pending.json").exists():
            raise KeyboardInterrupt  # the process stops between the commit and the renames
        return finish(out_dir)

    monkeypatch.setattr(output_module, "complete_pending", dies_after_commit)
    with pytest.raises(KeyboardInterrupt):
        update_build(batches[1:], str(tmp_path / "updated"))
    monkeypatch.undo()
    base = pq.read_table(tmp_path / "updated" / "indicators.parquet")
    update_build(batches[1:], str(tmp_path / "updated"))  # completes the commit, then sees a rerun
    manifest = json.loads((tmp_path / "updated" / "manifest.json").read_text())
    assert len(manifest["updates"]) == 1
    assert pq.read_table(tmp_path / "updated" / PREVIOUS_FILE).equals(base)  # kept for the index
    write_build(batches, str(tmp_path / "full"), EVERY_TYPE)
    assert_same_indicators(pq.read_table(tmp_path / "updated" / "indicators.parquet"), pq.read_table(tmp_path / "full" / "indicators.parquet"))


@pytest.mark.slow
@pytest.mark.parametrize("after_s", [1.0, 2.0, 3.0])
def test_a_killed_update_process_then_rerun_equals_a_full_build(tmp_path: Path, after_s: float) -> None:
    generate_events(str(tmp_path / "events.csv"), SynthConfig(events=300_000, seed=9))
    rows = pd.read_csv(tmp_path / "events.csv")
    batches = write_batches(rows, [200_000, 250_000], tmp_path)
    write_build(batches[:2], str(tmp_path / "updated"), EVERY_TYPE)
    command = [sys.executable, "-m", "daskrec", "update", batches[2], "--build", str(tmp_path / "updated"), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(after_s)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    write_build(batches, str(tmp_path / "full"), EVERY_TYPE)
    assert_same_indicators(pq.read_table(tmp_path / "updated" / "indicators.parquet"), pq.read_table(tmp_path / "full" / "indicators.parquet"))


@pytest.mark.slow
def test_command_line_update_reindexes(tmp_path: Path, log_rows: pd.DataFrame, es_settings: EsSettings, alias: str) -> None:
    batches = write_batches(log_rows, [9_000], tmp_path)

    def daskrec(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "daskrec", *args, "--es-url", es_settings.url, "--index", alias, "--no-progress"],
                              capture_output=True, text=True, timeout=300)

    built = daskrec("build", batches[0], "--event", "all", "--layout", "keyword", "--out", str(tmp_path / "out"))
    assert built.returncode == 0, built.stderr
    updated = daskrec("update", batches[1], "--build", str(tmp_path / "out"))
    assert updated.returncode == 0, updated.stderr
    assert "users changed" in updated.stdout and f"now behind alias {alias!r}" in updated.stderr
    table = pq.read_table(tmp_path / "out" / "indicators.parquet")
    with Elasticsearch(**es_settings.client_options()) as client:
        client.indices.refresh(index=alias)
        assert client.count(index=alias)["count"] == table.num_rows
        assert live_layout(client, alias) == "keyword"  # as the build was indexed
        first = table.slice(0, 1).to_pylist()[0]
        hit = client.search(index=alias, query={"ids": {"values": [str(first["item"])]}})["hits"]["hits"][0]["_source"]
        assert str(first["indicators"][0]) in json.dumps(hit)
        client.update(index=alias, id=str(first["item"]), doc={"properties": {"genre": "jazz"}}, refresh="wait_for")

        # The lightest visitor takes up the rarest item: few documents change, and go into the live generation.
        rare = log_rows[log_rows.visitorid == log_rows.visitorid.value_counts().index[-1]].head(1).assign(
            itemid=log_rows.itemid.value_counts().index[-1], timestamp=log_rows.timestamp.max())
        rare.to_csv(tmp_path / "rare.csv", index=False)
        live = list(client.indices.get_alias(name=alias))
        updated = daskrec("update", str(tmp_path / "rare.csv"), "--build", str(tmp_path / "out"))
        assert updated.returncode == 0, updated.stderr
        assert "changed documents sent into" in updated.stderr and list(client.indices.get_alias(name=alias)) == live
        assert_index_holds(client, alias, pq.read_table(tmp_path / "out" / "indicators.parquet"), {str(first["item"]): {"genre": "jazz"}}, "keyword")


def posted(rows: pd.DataFrame) -> list[dict[str, object]]:
    """``rows`` as the service's events (ids and times as integers, a transaction id where there is one)."""
    events = rows.astype({"timestamp": "int64", "visitorid": "int64", "itemid": "int64"}).to_dict("records")
    return [{k: int(v) if k == "transactionid" else v for k, v in event.items() if not (k == "transactionid" and pd.isna(v))}
            for event in events]


@pytest.mark.integration
def test_updates_from_the_event_store_read_each_event_once(
    tmp_path: Path, log_rows: pd.DataFrame, es_settings: EsSettings, alias: str
) -> None:
    batches = write_batches(log_rows, [9_000, 11_900], tmp_path)
    out = str(tmp_path / "out")

    def daskrec(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "daskrec", *args, "--build", out, "--es-url", es_settings.url, "--index", alias,
                               "--no-progress"], capture_output=True, text=True, timeout=300)

    def post(rows: pd.DataFrame) -> None:
        with TestClient(create_app(es_settings, ServiceConfig(alias=alias))) as service:
            for start in range(0, len(rows), 1000):
                assert service.post("/events", json=posted(rows.iloc[start : start + 1000])).status_code == 200

    write_build(batches[:1], out, EVERY_TYPE)
    write_index(out, es_settings, IndexConfig(alias=alias, replicas=0))
    post(log_rows.iloc[9_000:11_900])
    unknown = daskrec("update", "--from-store")
    assert unknown.returncode == 2 and "does not record which events" in unknown.stderr
    killed = subprocess.Popen([sys.executable, "-m", "daskrec", "update", "--from-store", "--after", "-1", "--build", out, "--es-url",
                               es_settings.url, "--index", alias, "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    while not (tmp_path / "out" / "events-store" / "after--1.csv").exists():  # killed once it has read the store
        assert killed.poll() is None
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    first = daskrec("update", "--from-store", "--after", "-1")
    assert first.returncode == 0, first.stderr
    assert "2900 events stored" in first.stderr
    write_build(batches[:2], str(tmp_path / "full"), EVERY_TYPE)
    assert_same_indicators(pq.read_table(tmp_path / "out" / "indicators.parquet"), pq.read_table(tmp_path / "full" / "indicators.parquet"))

    again = daskrec("update", "--from-store")  # nothing new: nothing read twice
    assert again.returncode == 0 and "the build is up to date" in again.stderr, again.stderr
    post(log_rows.iloc[11_900:])
    second = daskrec("update", "--from-store")
    assert second.returncode == 0 and "100 events stored" in second.stderr, second.stderr
    write_build(batches, str(tmp_path / "full"), EVERY_TYPE)
    table = pq.read_table(tmp_path / "out" / "indicators.parquet")
    assert_same_indicators(table, pq.read_table(tmp_path / "full" / "indicators.parquet"))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [u["counts"]["events_read"] for u in manifest["updates"]] == [2_900, 100]
    assert manifest["events_store"]["index"] == events_index(alias)
    with Elasticsearch(**es_settings.client_options()) as client:
        client.indices.refresh(index=alias)
        assert client.count(index=alias)["count"] == table.num_rows  # the index follows the build


def assert_index_holds(
    client: Elasticsearch, alias: str, table: pa.Table, properties: dict[str, dict[str, object]], layout: Layout = "weighted"
) -> None:
    """The documents behind ``alias`` are those of ``table``, each with the given properties,
    and no others."""
    client.indices.refresh(index=alias)
    hits = {h["_id"]: h["_source"] for h in helpers.scan(client, index=alias, query={"query": {"match_all": {}}})}
    expected = {str(d["id"]): d for d in indicator_documents(table, layout)}
    for item, values in properties.items():
        expected[item]["properties"] = values
    assert hits == expected


def tables_of(versions: list[dict[str, list[object]]]) -> list[pa.Table]:
    return [pa.table({"item": pa.array(v["item"], pa.int64()), "indicators": pa.array(v["indicators"], pa.list_(pa.int64())),
                      "scores": pa.array(v["scores"], pa.list_(pa.float64())), "popularity": pa.array(v["popularity"], pa.int64())})
            for v in versions]


@pytest.mark.integration
def test_few_changed_documents_go_into_the_live_generation(
    tmp_path: Path, es_settings: EsSettings, alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, third = tables_of([
        {"item": [1, 2, 3, 4, 5, 6, 7, 8], "indicators": [[2], [1], [4], [3], [], [], [], []],
         "scores": [[6.0], [6.0], [9.0], [9.0], [], [], [], []], "popularity": [3, 3, 2, 2, 1, 1, 1, 1]},
        # item 3 gone, 9 new, 1 and 4 changed: 4 of 8 documents
        {"item": [1, 2, 4, 5, 6, 7, 8, 9], "indicators": [[2, 9], [1], [], [], [], [], [], [1]],
         "scores": [[6.5, 4.0], [6.0], [], [], [], [], [], [4.0]], "popularity": [4, 3, 2, 1, 1, 1, 1, 1]},
        {"item": [1, 2, 4, 5, 6, 7, 8, 9], "indicators": [[9], [9], [], [], [], [], [], [1]],
         "scores": [[7.0], [5.0], [], [], [], [], [], [4.0]], "popularity": [5, 3, 2, 1, 1, 1, 1, 1]},
    ])
    out = str(tmp_path / "out")
    config = IndexConfig(alias=alias, replicas=0, in_place_max=0.5)
    write_output(out, first, {"table_id": "t1"})
    generation = write_index(out, es_settings, config).index
    with Elasticsearch(**es_settings.client_options()) as client:
        client.update(index=alias, id="1", doc={"properties": {"genre": "jazz"}}, refresh="wait_for")  # as the service's $set
        write_output(out, second, {"table_id": "t2", "previous_table_id": "t1"}, keep_previous=True)
        report = update_index(out, es_settings, config)
        assert (report.in_place, report.index, report.documents, report.removed) == (True, generation, 3, 1)
        assert_index_holds(client, alias, second, {"1": {"genre": "jazz"}})
        segments = client.indices.stats(index=generation)["indices"][generation]["primaries"]
        assert (segments["segments"]["count"], segments["docs"]["deleted"]) == (1, 0)  # ranks as a fresh load
        assert table_of(client.indices.get_mapping(index=generation)[generation]["mappings"]["_meta"]) == "t2"
        assert update_index(out, es_settings, config).documents == 0  # a rerun: the live generation holds it already

        # Killed mid-way: every document whole, the generation marked; the next update loads a new one.
        write_output(out, third, {"table_id": "t3", "previous_table_id": "t2"}, keep_previous=True)
        monkeypatch.setattr(index_module, "delete_actions", killed)
        with pytest.raises(KeyboardInterrupt):  # one document per request: the changed ones are sent, then it dies
            update_index(out, es_settings, dataclasses.replace(config, chunk_size=1))
        monkeypatch.undo()
        meta = client.indices.get_mapping(index=generation)[generation]["mappings"]["_meta"]
        assert (state_of(meta), table_of(meta)) == (UPDATING, None)
        client.indices.refresh(index=alias)
        assert client.get(index=alias, id="1")["_source"]["indicators"] == [9]  # sent, whole
        assert client.get(index=alias, id="2")["_source"]["indicators"] == [1]  # not sent
        report = update_index(out, es_settings, config)
        assert not report.in_place and report.index != generation
        assert_index_holds(client, alias, third, {"1": {"genre": "jazz"}})  # properties carried over


def killed(items: object, index: str) -> Iterator[tuple[dict[str, object], None]]:
    """Dies where the deletes would start."""
    raise KeyboardInterrupt
    yield  # a generator, as delete_actions is


@pytest.mark.integration
def test_many_changed_documents_make_a_new_generation(tmp_path: Path, es_settings: EsSettings, alias: str) -> None:
    first, second, _ = tables_of([
        {"item": [1, 2], "indicators": [[2], [1]], "scores": [[6.0], [6.0]], "popularity": [3, 3]},
        {"item": [1, 2], "indicators": [[2], [1]], "scores": [[6.5], [6.5]], "popularity": [3, 3]},
        {"item": [], "indicators": [], "scores": [], "popularity": []},
    ])
    out = str(tmp_path / "out")
    config = IndexConfig(alias=alias, replicas=0)
    write_output(out, first, {"table_id": "t1"})
    generation = write_index(out, es_settings, config).index
    write_output(out, second, {"table_id": "t2", "previous_table_id": "t1"}, keep_previous=True)
    report = update_index(out, es_settings, config)
    assert not report.in_place and report.index != generation
    with Elasticsearch(**es_settings.client_options()) as client:
        assert_index_holds(client, alias, second, {})
        write_output(out, first, {"table_id": "t3"})  # a full build: no previous table kept
        assert not (tmp_path / "out" / PREVIOUS_FILE).exists()
        assert not update_index(out, es_settings, IndexConfig(alias=alias, replicas=0, in_place_max=1.0)).in_place
        assert_index_holds(client, alias, first, {})
