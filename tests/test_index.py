"""Indexing: the bodies sent (pure, no server), then loads into a real node (integration): every
item exact, swaps under queries, rejected documents, 429s, a node killed mid-load."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import EVERY_TYPE, REAL_DATASETS, build_into, real_dataset
from elasticsearch import Elasticsearch, helpers
from hypothesis import given, settings
from hypothesis import strategies as st

from daskrec import IndexConfig, IndexingError, InputError, recommend, similar, write_index, write_output
from daskrec import index as index_module
from daskrec.es import EsSettings, connect_es
from daskrec.index import (
    alias_actions,
    bulk_actions,
    changed_documents,
    delete_actions,
    generation_name,
    index_template,
    indicator_documents,
    read_item_properties,
    stale_generations,
)
from daskrec.schema import search_token, term_frequencies


def test_documents_and_actions_keep_ids_exact() -> None:
    table = pa.table(
        {"item": ["a b", "x-1"], "indicators": [["x-1"], []], "scores": [[7.5], []], "popularity": [3, 1]}
    )
    documents = list(indicator_documents(table, "keyword"))
    assert documents == [
        {"id": "a b", "indicators": ["x-1"], "scores": [7.5], "popularity": 3},
        {"id": "x-1", "indicators": [], "scores": [], "popularity": 1},
    ]
    actions = list(bulk_actions(documents, "items2-1"))
    assert [a["index"]["_id"] for a, _ in actions] == ["a b", "x-1"] and actions[0][0]["index"]["_index"] == "items2-1"
    assert json.loads(actions[0][1]) == documents[0]
    integers = pa.table({"item": [5], "indicators": [[6]], "scores": [[5.0]], "popularity": [1]})
    actions = list(bulk_actions(indicator_documents(integers), "i"))
    assert actions[0][0]["index"]["_id"] == "5" and json.loads(actions[0][1])["id"] == 5


@st.composite
def indicator_tables(draw: st.DrawFn, items: list[object]) -> pa.Table:
    """A table over some of ``items`` in any order, with lists, scores, popularity and trending
    drawn from small pools (so that equal rows are common); nulls in trending."""
    chosen = draw(st.lists(st.sampled_from(items), unique=True, max_size=len(items)))
    lists = [draw(st.lists(st.sampled_from(items), max_size=3)) for _ in chosen]
    return pa.table({
        "item": pa.array(chosen, pa.string() if items and isinstance(items[0], str) else pa.int64()),
        "indicators": pa.array(lists, pa.list_(pa.string() if items and isinstance(items[0], str) else pa.int64())),
        "scores": pa.array([[draw(st.sampled_from([1.0, 2.5, 2.5000000000000004])) for _ in row] for row in lists], pa.list_(pa.float64())),
        "popularity": pa.array([draw(st.integers(0, 2)) for _ in chosen], pa.int64()),
        "trending": pa.array([draw(st.one_of(st.none(), st.integers(0, 1))) for _ in chosen], pa.int64()),
    })


ITEM_POOLS: list[list[object]] = [[1, 2, 3, 4, 5], ["a", "b c", "d"]]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ITEM_POOLS).flatmap(lambda items: st.tuples(indicator_tables(items), indicator_tables(items))))
def test_changed_documents_are_those_whose_document_differs(tables: tuple[pa.Table, pa.Table]) -> None:
    previous, table = tables
    changed, removed = changed_documents(previous, table)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(index_module, "_ELEMENTS_PER_STEP", 2)  # lists compared a few elements at a time
        in_steps, _ = changed_documents(previous, table)
    assert in_steps.tolist() == changed.tolist()
    in_chunks = [pa.Table.from_batches(t.to_batches(max_chunksize=size), t.schema) for t, size in ((previous, 2), (table, 3))]
    assert changed_documents(*in_chunks)[0].tolist() == changed.tolist()  # as tables read back in row groups
    for layout in ("weighted", "keyword"):
        before = {d["id"]: d for d in indicator_documents(previous, layout)}
        after = list(indicator_documents(table, layout))
        assert changed.tolist() == [before.get(d["id"]) != d for d in after]
    assert removed.to_pylist() == [i for i in previous.column("item").to_pylist() if i not in set(table.column("item").to_pylist())]
    with pytest.raises(ValueError, match="columns differ"):
        changed_documents(previous.drop_columns(["trending"]), table)


def test_partial_and_delete_actions() -> None:
    (action, body), = bulk_actions([{"id": "a b", "indicators": ["c"]}], "g-1", partial=True)
    assert action == {"update": {"_index": "g-1", "_id": "a b", "retry_on_conflict": 3}}
    assert json.loads(body) == {"doc": {"id": "a b", "indicators": ["c"]}, "doc_as_upsert": True}
    assert list(delete_actions(["a b", 5], "g-1")) == [
        ({"delete": {"_index": "g-1", "_id": "a b"}}, None), ({"delete": {"_index": "g-1", "_id": "5"}}, None)]


ids = st.one_of(
    st.lists(st.lists(st.integers(-(2**40), 2**40), max_size=6), max_size=5),
    st.lists(st.lists(st.text(st.sampled_from("ab %\t\u2003\u00e9-"), min_size=1, max_size=300), max_size=6), max_size=5),
)


@settings(max_examples=60, deadline=None)
@given(rows=ids, seed=st.integers(0, 2**16))
def test_weighted_text_equals_the_token_by_token_recipe(rows: list[list[object]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = [rng.uniform(0, 40, len(row)).tolist() for row in rows]
    table = pa.table({"item": list(range(len(rows))), "indicators": rows, "scores": scores})
    expected = [
        " ".join(" ".join([search_token(item)] * count) for item, count in zip(row, term_frequencies(np.asarray(row_scores), "weighted").tolist()))
        for row, row_scores in zip(rows, scores)
    ]
    assert [document["weighted_indicators"] for document in indicator_documents(table)] == expected


def test_weighted_documents_repeat_each_indicator_by_its_rounded_score_in_steps() -> None:
    table = pa.table({"item": [1], "indicators": [[2, 3, 4, 5]], "scores": [[10.2, 7.5, 0.2, 999.0]], "popularity": [9]})
    document = next(indicator_documents(table, "weighted", {1: {"genre": ["a", "b"]}, 7: {"genre": "c"}}))
    # score / 3, half to even, at least once, at most MAX_TERM_FREQUENCY (11) times
    assert document["weighted_indicators"].split() == ["2"] * 3 + ["3"] * 2 + ["4"] + ["5"] * 11
    text = pa.table({"item": ["a"], "indicators": [["b c", "d%"]], "scores": [[1.0, 6.0]], "popularity": [1]})
    assert next(indicator_documents(text, "weighted"))["weighted_indicators"] == "b%20c d%25 d%25"
    assert document["indicators"] == [2, 3, 4, 5] and document["properties"] == {"genre": ["a", "b"]}


@pytest.mark.parametrize("layout", ["weighted", "keyword"])
def test_template_maps_ids_as_keywords_and_forbids_dynamic_fields(layout: str) -> None:
    template = index_template("items2", layout)  # type: ignore[arg-type]
    assert template["index_patterns"] == ["items2-*"]
    mappings = template["template"]["mappings"]
    assert mappings["dynamic"] == "strict" and mappings["_meta"]["daskrec_layout"] == layout
    assert mappings["properties"]["id"] == {"type": "keyword"}
    searched = {"type": "keyword", "doc_values": False, "similarity": "daskrec_linear"}
    unparsed = {"type": "object", "enabled": False}
    assert mappings["properties"]["scores"] == unparsed
    assert template["template"]["settings"]["similarity"]["daskrec_linear"]["b"] == 0.0
    if layout == "weighted":
        weighted = mappings["properties"]["weighted_indicators"]
        assert weighted["type"] == "text" and weighted["analyzer"] == "whitespace"
        assert weighted["index_options"] == "freqs" and weighted["similarity"] == "daskrec_linear"
        assert mappings["properties"]["indicators"] == unparsed
    else:
        assert mappings["properties"]["indicators"] == searched
        assert "weighted_indicators" not in mappings["properties"]


def test_generations_sort_in_time_order_and_old_ones_go() -> None:
    first = generation_name("items2", dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc))
    assert first == "items2-20260102030405000006"
    names = [f"items2-2026010{d}000000000000" for d in range(1, 6)] + ["items2-other", "items3-20260101000000000000"]
    assert stale_generations("items2", names, keep=2, live="items2-20260105000000000000") == [
        "items2-20260103000000000000",
        "items2-20260102000000000000",
        "items2-20260101000000000000",
    ]


def test_alias_moves_in_one_call() -> None:
    body = alias_actions("items2", "items2-new", ["items2-old"])
    assert body["actions"] == [
        {"remove": {"index": "items2-old", "alias": "items2"}},
        {"add": {"index": "items2-new", "alias": "items2", "is_write_index": True}},
    ]


def test_item_properties_are_read_with_clear_errors(tmp_path: Path) -> None:
    good = tmp_path / "items.csv"
    good.write_text("item,genres,year\n1,Comedy|Drama,1995\n2,,1996\n")
    assert read_item_properties(str(good), pa.int64(), ["genres"]) == {
        1: {"genres": ["Comedy", "Drama"], "year": 1995},
        2: {"year": 1996},
    }
    texts = read_item_properties(str(good), pa.string())
    assert list(texts) == ["1", "2"] and texts["1"]["genres"] == "Comedy|Drama"
    twice = tmp_path / "twice.csv"
    twice.write_text("item,genre\n1,a\n2,b\n1,c\n")
    with pytest.raises(InputError, match=r"twice\.csv.*row 3.*item") as caught:
        read_item_properties(str(twice), pa.int64())
    assert "appears twice" in str(caught.value)
    nameless = tmp_path / "nameless.csv"
    nameless.write_text("id,genre\n1,a\n")
    with pytest.raises(InputError, match="'item' column"):
        read_item_properties(str(nameless), pa.int64())
    with pytest.raises(InputError, match="list columns"):
        read_item_properties(str(good), pa.int64(), ["tags"])
    text_ids = tmp_path / "text.csv"
    text_ids.write_text("item,genre\nx1,a\n")
    with pytest.raises(InputError, match="integers"):
        read_item_properties(str(text_ids), pa.int64())


# ------------------------------------------------------------------- against a real node

ROOT = Path(__file__).resolve().parents[1]
ES_SCRIPT = ROOT / "cluster" / "elasticsearch" / "es.sh"
SPARE_PORT = 9201


def documents(settings: EsSettings, index: str) -> dict[object, list[object]]:
    with Elasticsearch(**settings.client_options()) as client:
        return {hit["_source"]["id"]: hit["_source"]["indicators"] for hit in helpers.scan(client, index=index)}


@pytest.mark.integration
@pytest.mark.parametrize("dataset", REAL_DATASETS)
def test_every_item_indexed_exactly(tmp_path: Path, es_settings: EsSettings, alias: str, dataset: str) -> None:
    table = build_into(tmp_path / "out", real_dataset(dataset))
    report = write_index(str(tmp_path / "out"), es_settings, IndexConfig(alias=alias, replicas=0))
    assert report.documents == table.num_rows
    with connect_es(es_settings) as client:
        assert client.count(index=alias)["count"] == table.num_rows
    assert documents(es_settings, alias) == dict(zip(table.column("item").to_pylist(), table.column("indicators").to_pylist()))



@pytest.mark.integration
def test_reindex_while_querying(tmp_path: Path, es_settings: EsSettings, alias: str, generated: Path) -> None:
    table = build_into(tmp_path / "out", generated, EVERY_TYPE)
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


@pytest.mark.integration
def test_properties_set_during_a_load_are_carried_over(
    tmp_path: Path, es_settings: EsSettings, alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = pa.table({"item": pa.array([1, 2, 3, 4], pa.int64()), "indicators": [[2], [1], [], []], "scores": [[6.0], [6.0], [], []],
                      "popularity": pa.array([2, 2, 1, 1], pa.int64())})
    write_output(str(tmp_path / "out"), table, {"test": True})
    config = IndexConfig(alias=alias, replicas=0)
    first = write_index(str(tmp_path / "out"), es_settings, config).index
    with connect_es(es_settings) as client:
        client.update(index=alias, id="1", doc={"properties": {"genre": "jazz", "year": 1990}}, refresh="wait_for")
        client.update(index=alias, id="4", doc={"properties": {"genre": "folk"}}, refresh="wait_for")
        moving = index_module.alias_actions
        reading = index_module._properties_in

        def set_while_loading(name: str, new_index: str, current: list[str]) -> dict[str, object]:
            """$sets that reach the old generation after the load copied its properties."""
            for item, properties in {"1": {"genre": "rock"}, "2": {"genre": "soul"}, "3": {"genre": "funk"}}.items():
                client.update(index=alias, id=item, doc={"properties": properties}, refresh="wait_for")
            return moving(name, new_index, current)

        def set_after_the_swap(node: Elasticsearch, target: str, after: int = -1) -> dict[object, dict[str, object]]:
            """A $set through the moved alias before the old generation is read: it is the later one."""
            if target != alias:
                client.update(index=alias, id="3", doc={"properties": {"genre": "disco"}}, refresh="wait_for")
            found = reading(node, target, after)
            if target != alias:
                assert sorted(found) == [1, 2, 3]  # only the documents written since the copy are read again
            return found

        monkeypatch.setattr(index_module, "alias_actions", set_while_loading)
        monkeypatch.setattr(index_module, "_properties_in", set_after_the_swap)
        second = write_index(str(tmp_path / "out"), es_settings, config).index
        held = {hit["_id"]: hit["_source"]["properties"] for hit in helpers.scan(client, index=alias) if "properties" in hit["_source"]}
        assert held == {"1": {"genre": "rock", "year": 1990}, "2": {"genre": "soul"}, "3": {"genre": "disco"}, "4": {"genre": "folk"}}
        assert list(client.indices.get_alias(name=alias)) == [second]
        with pytest.raises(Exception, match="cluster_block_exception"):  # the replaced generation takes no more writes
            client.update(index=first, id="1", doc={"properties": {"genre": "pop"}})


@pytest.mark.integration
def test_rejected_documents_leave_the_alias_alone(
    tmp_path: Path, es_settings: EsSettings, alias: str, generated: Path
) -> None:
    build_into(tmp_path / "good", generated, EVERY_TYPE)
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


@pytest.mark.integration
def test_429s_are_retried_and_nothing_is_lost(spare: EsSettings, many_items: Path) -> None:
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=4, dashboard_address=":0"):
        write_index(str(many_items), spare, IndexConfig(alias="retry", replicas=0, chunk_size=200))
    with connect_es(spare) as client:
        assert client.count(index="retry")["count"] == 70_000
        stats = client.nodes.stats(metric="thread_pool")["nodes"]
        rejected = sum(node["thread_pool"]["write"]["rejected"] for node in stats.values())
    assert rejected > 0, "the node never refused a bulk request: the test did not exercise retries"


@pytest.mark.integration
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


