"""Indexing and serving against a real Elasticsearch node (started by cluster/elasticsearch/es.sh)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REAL_DATASETS, real_dataset
from elasticsearch import Elasticsearch, helpers

from daskrec import (
    BuildConfig,
    EsSettings,
    IndexConfig,
    IndexingError,
    IngestConfig,
    build_indicators,
    build_manifest,
    connect_es,
    generate_events,
    recommend,
    similar,
    write_index,
    write_output,
)
from daskrec.serve import ItemFilter
from daskrec.synth import SynthConfig

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
ES_SCRIPT = ROOT / "cluster" / "elasticsearch" / "es.sh"
SPARE_PORT = 9201


def build_into(out_dir: Path, events: Path, config: BuildConfig = BuildConfig()) -> pa.Table:
    result = build_indicators([str(events)], config)
    write_output(str(out_dir), result.table, build_manifest([str(events)], config, result.report))
    return result.table


def documents(settings: EsSettings, index: str) -> dict[object, list[object]]:
    with Elasticsearch(**settings.client_options()) as client:
        return {hit["_source"]["id"]: hit["_source"]["indicators"] for hit in helpers.scan(client, index=index)}


@pytest.mark.parametrize("dataset", REAL_DATASETS)
def test_every_item_indexed_exactly(tmp_path: Path, es_settings: EsSettings, alias: str, dataset: str) -> None:
    table = build_into(tmp_path / "out", real_dataset(dataset))
    report = write_index(str(tmp_path / "out"), es_settings, IndexConfig(alias=alias, replicas=0))
    assert report.documents == table.num_rows
    with connect_es(es_settings) as client:
        assert client.count(index=alias)["count"] == table.num_rows
    assert documents(es_settings, alias) == dict(zip(table.column("item").to_pylist(), table.column("indicators").to_pylist()))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("es") / "events.csv"
    generate_events(str(path), SynthConfig(events=150_000, seed=3))
    return path


ALL = BuildConfig(ingest=IngestConfig(event_types=None))


def test_queries_through_the_alias(tmp_path: Path, es_settings: EsSettings, alias: str, generated: Path) -> None:
    table = build_into(tmp_path / "out", generated, ALL)
    write_index(str(tmp_path / "out"), es_settings, IndexConfig(alias=alias, replicas=0))
    rows = table.to_pylist()
    item = next(r for r in rows if len(r["indicators"]) >= 3)
    with connect_es(es_settings) as client:
        assert similar(client, item["item"], index=alias) == item["indicators"]
        assert similar(client, "no-such-item", index=alias, missing="empty") == []
        history = item["indicators"][:3]
        found = recommend(client, history, 10, index=alias)
        assert len(found) == 10 and not {r.item for r in found} & set(history)
        assert found[0].reason == "indicators" and found[0].score >= found[-1].score
        only_popular = recommend(client, ["no-such-item"], 4, index=alias)
        popular = sorted(rows, key=lambda r: (-r["popularity"], str(r["item"])))[:4]
        assert [r.item for r in only_popular] == [r["item"] for r in popular]
        assert {r.reason for r in only_popular} == {"popularity"}
        only_trending = recommend(client, ["no-such-item"], 4, index=alias, backfill="trending")
        trending = sorted(rows, key=lambda r: (-r["trending"], -r["popularity"], str(r["item"])))[:4]
        assert [r.item for r in only_trending] == [r["item"] for r in trending]
        assert {r.reason for r in only_trending} == {"trending"}
        assert recommend(client, ["no-such-item"], 4, index=alias, backfill="off") == []


def test_reindex_while_querying(tmp_path: Path, es_settings: EsSettings, alias: str, generated: Path) -> None:
    table = build_into(tmp_path / "out", generated, ALL)
    config = IndexConfig(alias=alias, keep=1, replicas=0)
    first = write_index(str(tmp_path / "out"), es_settings, config)
    item = next(r for r in table.to_pylist() if r["indicators"])
    errors: list[BaseException] = []
    empty = 0
    queries = 0
    done = threading.Event()

    def query_loop() -> None:
        nonlocal empty, queries
        with connect_es(es_settings) as client:
            while not done.is_set():
                try:
                    empty += not similar(client, item["item"], index=alias)
                    empty += not recommend(client, item["indicators"][:2], 5, index=alias)
                    queries += 2
                except BaseException as err:  # noqa: BLE001
                    errors.append(err)

    loop = threading.Thread(target=query_loop)
    loop.start()
    try:
        second = write_index(str(tmp_path / "out"), es_settings, config)
    finally:
        done.set()
        loop.join()
    assert not errors and empty == 0 and queries > 10
    with connect_es(es_settings) as client:
        assert list(client.indices.get_alias(name=alias)) == [second.index]
        assert not client.indices.exists(index=first.index)
    assert second.deleted == (first.index,)


def test_rejected_documents_leave_the_alias_alone(
    tmp_path: Path, es_settings: EsSettings, alias: str, generated: Path
) -> None:
    build_into(tmp_path / "good", generated, ALL)
    live = write_index(str(tmp_path / "good"), es_settings, IndexConfig(alias=alias, replicas=0))
    bad = pa.table({"item": ["ok", "bad"], "indicators": [[], []], "scores": [[], []], "popularity": ["1", "lots"]})
    write_output(str(tmp_path / "bad"), bad, {"test": True})  # "lots" is no long: that document is refused
    with pytest.raises(IndexingError, match="1 documents were rejected") as caught:
        write_index(str(tmp_path / "bad"), es_settings, IndexConfig(alias=alias, replicas=0))
    assert "bad: " in str(caught.value) and "document_parsing_exception" in str(caught.value)
    with connect_es(es_settings) as client:
        assert list(client.indices.get_alias(name=alias)) == [live.index]
        assert list(client.indices.get(index=f"{alias}-*")) == [live.index]


# ------------------------------------------------------------------ a node of our own to break


def spare_node(extra: str = "") -> str:
    env = {**os.environ, "ES_PORT": str(SPARE_PORT), "ES_EXTRA": extra, "ES_HEAP": "384m"}
    started = subprocess.run([str(ES_SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    return started.stdout.strip()


@pytest.fixture(scope="module")
def spare() -> Iterator[EsSettings]:
    """A second node on port 9201 with a one-slot write queue (so bulk loads meet 429s)."""
    url = spare_node("-Ethread_pool.write.size=1 -Ethread_pool.write.queue_size=1")
    yield EsSettings(url=url, max_retries=8, request_timeout=10)
    subprocess.run([str(ES_SCRIPT), "down"], env={**os.environ, "ES_PORT": str(SPARE_PORT)}, timeout=120)


@pytest.fixture(scope="module")
def many_items(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("many") / "out"
    n = 70_000
    table = pa.table(
        {
            "item": pa.array(range(n), pa.int64()),
            "indicators": [[(i + d) % n for d in range(1, 11)] for i in range(n)],
            "scores": [[10.0 - d for d in range(10)] for _ in range(n)],
            "popularity": pa.array([n - i for i in range(n)], pa.int64()),
        }
    )
    write_output(str(out), table, {"test": True})
    return out


def test_429s_are_retried_and_nothing_is_lost(spare: EsSettings, many_items: Path) -> None:
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=4, dashboard_address=":0"):
        write_index(str(many_items), spare, IndexConfig(alias="retry", replicas=0, chunk_size=200))
    with connect_es(spare) as client:
        assert client.count(index="retry")["count"] == 70_000
        stats = client.nodes.stats(metric="thread_pool")["nodes"]
        rejected = sum(node["thread_pool"]["write"]["rejected"] for node in stats.values())
    assert rejected > 0, "the node never refused a bulk request: the test did not exercise retries"


def test_node_killed_mid_load(spare: EsSettings, many_items: Path, tmp_path: Path) -> None:
    small = pa.table({"item": [1, 2], "indicators": [[2], [1]], "scores": [[6.0], [6.0]], "popularity": [2, 1]})
    write_output(str(tmp_path / "small"), small, {"test": True})
    config = IndexConfig(alias="killed", replicas=0, chunk_size=100)
    live = write_index(str(tmp_path / "small"), spare, config)
    pid = int((ROOT / ".cache" / "elasticsearch" / f"run-{SPARE_PORT}" / "es.pid").read_text())
    failure: list[BaseException] = []

    def load() -> None:
        try:
            write_index(str(many_items), EsSettings(url=spare.url, max_retries=1, request_timeout=5), config)
        except BaseException as err:  # noqa: BLE001
            failure.append(err)

    loader = threading.Thread(target=load)
    loader.start()
    with connect_es(spare) as client:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(client.indices.get(index="killed-*")) < 2:
            time.sleep(0.05)
    time.sleep(0.5)  # well inside the bulk load
    os.kill(pid, signal.SIGKILL)
    loader.join(timeout=120)
    assert failure and isinstance(failure[0], IndexingError), failure
    assert "was not moved" in str(failure[0])
    spare_node("-Ethread_pool.write.size=1 -Ethread_pool.write.queue_size=1")
    with connect_es(spare) as client:
        assert list(client.indices.get_alias(name="killed")) == [live.index]
        assert similar(client, 1, index="killed") == [2]
    rerun = write_index(str(many_items), spare, config)
    with connect_es(spare) as client:
        assert list(client.indices.get(index="killed-*")) == sorted([live.index, rerun.index])
        assert client.count(index="killed")["count"] == 70_000


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


def test_cross_fields_properties_filters_and_boosts(tmp_path: Path, es_settings: EsSettings, alias: str) -> None:
    def daskrec(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "daskrec", *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "DASKREC_ES_URL": es_settings.url})

    folder = real_dataset("ml-latest-small").parent
    movies = pd.read_csv(folder / "movies.csv").rename(columns={"movieId": "item"})
    movies[["item", "genres"]].to_csv(tmp_path / "movies.csv", index=False)
    built = daskrec("build", str(folder / "events.csv"), "--out", "out", "--cross", "view", "--no-progress",
                    "--dashboard-address", ":0")
    assert built.returncode == 0, built.stderr
    indexed = daskrec("index", "out", "--index", alias, "--properties", "movies.csv", "--list-columns", "genres",
                      "--replicas", "0", "--no-progress", "--dashboard-address", ":0")
    assert indexed.returncode == 0, indexed.stderr
    table = pq.read_table(tmp_path / "out" / "indicators.parquet")
    assert {"view_indicators", "view_scores"} <= set(table.column_names)
    with connect_es(es_settings) as client:
        source = client.get(index=alias, id="1")["_source"]
        assert "Comedy" in source["properties"]["genres"]
        assert source["weighted_indicators"].split()[0] == str(source["indicators"][0])
        assert source["view_indicators"] == table.to_pandas().set_index("item").loc[1, "view_indicators"].tolist()
        history, views = [1, 260, 1196], [2571, 2959]
        comedies = recommend(client, history, 10, index=alias, cross_histories={"view": views},
                             item_filter=ItemFilter(include={"genres": ["Comedy"]}, exclude=(2,)))
        genres = movies.set_index("item")["genres"]
        assert len(comedies) == 10 and all("Comedy" in genres[r.item] for r in comedies)
        assert not {r.item for r in comedies} & {1, 260, 1196, 2}
        no_drama = recommend(client, history, 30, index=alias, item_filter=ItemFilter(exclude_where={"genres": ["Drama"]}))
        assert all("Drama" not in genres[r.item] for r in no_drama)
        plain = recommend(client, history, 10, index=alias)
        boosted = recommend(client, history, 10, index=alias, item_filter=ItemFilter(boosts=[("genres", "Animation", 50.0)]))
        assert sum("Animation" in genres[r.item] for r in boosted) > sum("Animation" in genres[r.item] for r in plain)
        only_views = recommend(client, [], 5, index=alias, cross_histories={"view": views}, backfill="off")
        assert only_views and all(r.reason == "indicators" for r in only_views)
    shown = daskrec("recommend", "--history", "1,260", "--cross-history", "view=2571,2959", "--field-boost", "view=0.5",
                    "--include", "genres=Comedy", "-k", "3", "--index", alias)
    assert shown.returncode == 0, shown.stderr
    assert all("Comedy" in genres[int(line.split()[0])] for line in shown.stdout.splitlines())
