"""The in-process ranking (Scorer): strength and rarity of matches, exclusions and backfill, and
its agreement with Elasticsearch to the bit on real data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import real_dataset

from daskrec import BuildConfig, ConfigError, IndexConfig, build_indicators, build_manifest, write_index, write_output
from daskrec.es import EsSettings, connect_es
from daskrec.ranking import Scorer
from daskrec.schema import LINEAR_K1
from daskrec.serve import ItemFilter, recommend


def test_scorer_weighs_matches_by_strength_and_rarity() -> None:
    # df: a is listed by b, c, d (3 of the 4 items with indicators), b by a and c, c by a
    idf = {n: math.log1p((4 - n + 0.5) / (n + 0.5)) for n in (1, 2, 3)}

    def clause(tf: int, df: int) -> float:
        return idf[df] * (LINEAR_K1 + 1) * tf / (tf + LINEAR_K1)

    weighted = Scorer(small_table(), "weighted").recommend(["a"], 3)
    assert [(r.item, r.reason) for r in weighted] == [("d", "indicators"), ("b", "indicators"), ("c", "indicators")]
    assert [r.score for r in weighted] == pytest.approx([clause(11, 3), clause(10, 3), clause(4, 3)], rel=1e-4)
    keyword = Scorer(small_table(), "keyword").recommend(["a"], 3)
    assert [r.item for r in keyword] == ["b", "c", "d"]  # equal scores: ids as text ascending
    both = Scorer(small_table(), "keyword").recommend(["a", "b"], 2)
    assert [r.item for r in both] == ["c", "d"]
    assert [r.score for r in both] == pytest.approx([clause(1, 3) + clause(1, 2), clause(1, 3)], rel=1e-4)


def test_scorer_excludes_and_backfills_by_popularity_then_id() -> None:
    scorer = Scorer(small_table(), "weighted")
    found = scorer.recommend(["a", "unknown"], 4, exclude=["d"])
    assert [(r.item, r.reason) for r in found] == [
        ("b", "indicators"),
        ("c", "indicators"),
        ("e", "popularity"),  # d is excluded, a is the history
    ]
    assert [r.item for r in scorer.recommend([], 3)] == ["e", "b", "a"]
    assert scorer.recommend(["a"], 2, backfill="off")[-1].item == "b"
    with pytest.raises(ConfigError, match="backfill"):
        scorer.recommend(["a"], 2, backfill="popular")  # type: ignore[arg-type]
    trending = Scorer(small_table().append_column("trending", pa.array([0, 1, 4, 4, 0])), "weighted")
    assert [(r.item, r.reason) for r in trending.recommend([], 3, backfill="trending")] == [
        ("c", "trending"),  # c and d trend alike and are as popular: ids as text
        ("d", "trending"),
        ("b", "trending"),
    ]


@pytest.mark.integration
@pytest.mark.parametrize("layout", ["weighted", "keyword"])
def test_in_process_ranking_agrees_with_elasticsearch(
    tmp_path: Path, es_settings: EsSettings, alias: str, layout: str
) -> None:
    events = real_dataset("ml-latest-small")
    config = BuildConfig()
    result = build_indicators([str(events)], config)
    write_output(str(tmp_path / "out"), result.table, build_manifest([str(events)], config, result.report))
    write_index(str(tmp_path / "out"), es_settings, IndexConfig(alias=alias, replicas=0, layout=layout))  # type: ignore[arg-type]
    scorer = Scorer(result.table, layout)  # type: ignore[arg-type]
    frame = pd.read_csv(events)
    histories = frame[frame["event"] == "transaction"].groupby("visitorid")["itemid"].agg(lambda s: s.tolist()[-40:])
    with connect_es(es_settings) as client:
        for user, history in list(histories.items())[:150]:
            seen = frame.loc[frame["visitorid"] == user, "itemid"].tolist()[:20]
            served = recommend(client, history, 10, index=alias, item_filter=ItemFilter(exclude=tuple(seen)))
            local = scorer.recommend(history, 10, exclude=seen)
            assert [r.item for r in served] == [r.item for r in local], user
            # to the bit: Elasticsearch prints the shortest text of its float32 score
            assert [np.float32(r.score) for r in served] == [np.float32(r.score) for r in local]


def small_table() -> pa.Table:
    return pa.table(
        {
            "item": ["a", "b", "c", "d", "e"],
            "indicators": [["b", "c"], ["a"], ["a", "b"], ["a"], []],
            "scores": [[28.8, 9.6], [28.8], [12.0, 9.0], [33.0], []],  # tf: score / 3, rounded
            "popularity": [5, 7, 3, 3, 9],
        }
    )
