"""The bodies sent to Elasticsearch and the connection settings (no server needed)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskrec import ConfigError, IndexConfig, InputError, ServiceError
from daskrec.es import EsSettings, connect_es
from daskrec.index import (
    alias_actions,
    bulk_actions,
    generation_name,
    index_template,
    indicator_documents,
    read_item_properties,
    search_token,
    stale_generations,
)
from daskrec.ranking import term_frequencies
from daskrec.serve import ItemFilter, history_query, popularity_query


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


def test_weighted_documents_repeat_each_indicator_by_its_rounded_score() -> None:
    table = pa.table({"item": [1], "indicators": [[2, 3, 4, 5]], "scores": [[3.4, 2.5, 0.2, 99.0]], "popularity": [9]})
    document = next(indicator_documents(table, "weighted", {1: {"genre": ["a", "b"]}, 7: {"genre": "c"}}))
    # round half to even, at least once, at most 32 times
    assert document["weighted_indicators"].split() == ["2"] * 3 + ["3"] * 2 + ["4"] + ["5"] * 32
    text = pa.table({"item": ["a"], "indicators": [["b c", "d%"]], "scores": [[1.0, 2.0]], "popularity": [1]})
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


def test_history_query_has_a_term_clause_per_item_and_excludes_the_history() -> None:
    history = [1, "b c", 1]
    body = history_query({"indicators": history, "view_indicators": ["v"]}, 5, {"view_indicators": 0.5}, exclude=history)
    clauses = body["query"]["bool"]["should"]
    assert {"term": {"indicators": {"value": "b c", "boost": 1.0}}} in clauses
    assert {"term": {"view_indicators": {"value": "v", "boost": 0.5}}} in clauses
    assert len(clauses) == 3 and body["size"] == 5  # a repeated history item counts once
    assert body["query"]["bool"]["must_not"] == [{"ids": {"values": ["1", "b c"]}}]
    assert body["sort"] == ["_score", {"id": "asc"}]
    backfill = popularity_query(["1"], 3)
    assert backfill["sort"][0] == {"popularity": "desc"} and backfill["size"] == 3
    trending = popularity_query(["1"], 3, by="trending")["sort"]
    assert trending == [{"trending": {"order": "desc", "unmapped_type": "long"}}, {"popularity": "desc"}, {"id": "asc"}]


def test_filters_apply_to_matches_and_backfill_alike() -> None:
    rules = ItemFilter(
        exclude=("x",), include={"genre": ["jazz", "folk"]}, exclude_where={"label": ["bad"]}, boosts=[("era", "60s", 2.0)]
    )
    body = history_query({"weighted_indicators": ["a b"]}, 3, None, rules, exclude=["a"])
    assert body["query"]["function_score"]["query"]["bool"]["should"][0]["term"]["weighted_indicators"]["value"] == "a%20b"
    scored = body["query"]["function_score"]
    assert scored["functions"] == [{"filter": {"term": {"properties.era": "60s"}}, "weight": 2.0}]
    inner = scored["query"]["bool"]
    assert inner["filter"] == [{"terms": {"properties.genre": ["jazz", "folk"]}}]
    assert inner["must_not"] == [{"ids": {"values": ["a", "x"]}}, {"terms": {"properties.label": ["bad"]}}]
    backfill = popularity_query(["a", "y"], 2, rules)["query"]["bool"]
    assert backfill["filter"] == inner["filter"]
    assert backfill["must_not"][0] == {"ids": {"values": ["a", "y", "x"]}}


def test_settings_validate_and_hide_secrets() -> None:
    settings = EsSettings(url="https://es:9200", api_key="c2VjcmV0LWtleQ==")
    assert "c2VjcmV0" not in repr(settings)
    assert EsSettings(username="u", password="hunter2").client_options()["basic_auth"] == ("u", "hunter2")
    assert "hunter2" not in repr(EsSettings(username="u", password="hunter2"))
    for bad in (dict(url="es:9200"), dict(username="u"), dict(api_key="k", username="u", password="p")):
        with pytest.raises(ConfigError):
            EsSettings(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="alias"):
        IndexConfig(alias="Items 2")


def test_unreachable_server_is_a_clear_error_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = EsSettings(url="http://127.0.0.1:9", api_key="do-not-print-me", max_retries=0, request_timeout=2)
    with pytest.raises(ServiceError, match="unreachable") as caught:
        connect_es(settings)
    assert "do-not-print-me" not in str(caught.value)
    assert "do-not-print-me" not in caplog.text


class _Answers(BaseHTTPRequestHandler):
    """Answers every request with one status and body, as a server of that kind would."""

    status = 200
    body: dict[str, object] = {}

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        payload = json.dumps(self.body).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering_server(request: pytest.FixtureRequest) -> Iterator[str]:
    status, body = request.param
    handler = type("Handler", (_Answers,), {"status": status, "body": body})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("answering_server", "message"),
    [
        ((401, {"error": {"type": "security_exception"}, "status": 401}), "refused the credentials"),
        ((200, {"cluster_name": "old", "nodes": {"n": {"version": "8.15.0"}}}), "does not match"),
    ],
    indirect=["answering_server"],
    ids=["wrong-credentials", "other-major-version"],
)
def test_credentials_and_version_are_checked_first(answering_server: str, message: str) -> None:
    settings = EsSettings(url=answering_server, username="elastic", password="s3cret-pw", max_retries=0)
    with pytest.raises(ServiceError, match=message) as caught:
        connect_es(settings)
    assert "s3cret-pw" not in str(caught.value)


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
