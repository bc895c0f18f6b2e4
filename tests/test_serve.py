"""Queries: the bodies sent (pure), and recommendations through the alias of a real node."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import EVERY_TYPE, build_into, real_dataset

from daskrec import BuildConfig, IndexConfig, build_indicators, build_manifest, write_index, write_output
from daskrec.es import EsSettings, connect_es
from daskrec.ranking import Scorer
from daskrec.serve import ItemFilter, history_query, popularity_query, recommend, similar


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


@pytest.mark.integration
def test_recommend_follows_the_alias_to_a_generation_of_another_layout(
    tmp_path: Path, es_settings: EsSettings, alias: str
) -> None:
    events = real_dataset("ml-100k")
    result = build_indicators([str(events)], BuildConfig())
    write_output(str(tmp_path / "out"), result.table, build_manifest([str(events)], BuildConfig(), result.report))
    history = [1, 50, 100, 181]
    with connect_es(es_settings) as client:
        for layout in ("weighted", "keyword", "weighted"):
            write_index(str(tmp_path / "out"), es_settings, IndexConfig(alias=alias, replicas=0, layout=layout))  # type: ignore[arg-type]
            # the same client: a layout remembered from the previous generation must not be used
            served = [r.item for r in recommend(client, history, 10, index=alias)]
            assert served == [r.item for r in Scorer(result.table, layout).recommend(history, 10)], layout  # type: ignore[arg-type]


@pytest.mark.integration
def test_queries_through_the_alias(tmp_path: Path, es_settings: EsSettings, alias: str, generated: Path) -> None:
    table = build_into(tmp_path / "out", generated, EVERY_TYPE)
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


@pytest.mark.integration
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
