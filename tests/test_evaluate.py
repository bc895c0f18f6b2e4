"""Evaluation: the temporal splits, the metrics, and whole evaluations in process and through
Elasticsearch on real data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import real_dataset
from hypothesis import given
from hypothesis import strategies as st

from daskrec import BuildConfig, IngestConfig
from daskrec.cli import cli
from daskrec.config import TUTORIAL
from daskrec.es import EsSettings
from daskrec.evaluate import evaluate, ranking_metrics, temporal_split

# ------------------------------------------------------------------------------------------ split


def events_frame(rows: list[tuple[object, object, int]], matrix: list[int] | None = None) -> pd.DataFrame:
    users, items, times = zip(*rows)
    return pd.DataFrame(
        {"visitorid": users, "itemid": items, "timestamp": times, "position": range(len(rows)),
         "matrix": matrix or [0] * len(rows)}
    )


def test_per_user_split_trains_on_each_users_first_80_percent() -> None:
    rows = [(1, i, t) for i, t in zip(range(10, 20), [5, 1, 2, 3, 4, 6, 7, 8, 9, 10])] + [(2, 10, 1), (2, 99, 2)]
    cut = temporal_split(events_frame(rows), "per-user", recent=3)
    assert cut.relevant == {1: {18, 19}, 2: {99}}  # user 1's last two by time; user 2 trains on 1 of 2
    assert cut.histories == {1: [15, 16, 17], 2: [10]}  # the most recent 3 training items, oldest first
    assert cut.seen[1] == set(range(10, 18))
    assert sorted(cut.train["itemid"].tolist()) == sorted([*range(10, 18), 10])


def test_global_split_cuts_at_the_80th_percentile_and_drops_items_seen_in_training() -> None:
    rows = [(1, "a", 1), (1, "b", 2), (2, "a", 3), (2, "c", 4), (1, "a", 9), (1, "d", 10), (2, "e", 10)]
    cut = temporal_split(events_frame(rows, [0, 0, 0, 1, 0, 0, -1]), "global", recent=50, n_cross=1)
    # cutoff = 80th percentile of timestamps = 9.8: the rows at 10 are the test set
    assert cut.relevant == {1: {"d"}}  # user 2's test row is not of a primary type
    assert cut.seen == {1: {"a", "b"}} and cut.histories == {1: ["a", "b", "a"]}
    assert cut.cross_histories == [{1: []}]  # user 2's cross row is theirs
    assert cut.train["itemid"].tolist() == ["a", "b", "a", "c", "a"]  # primary and cross rows, input order


# ---------------------------------------------------------------------------------------- metrics


def test_metrics_by_hand() -> None:
    metrics = ranking_metrics({1: ["a", "b", "c"], 2: ["x"]}, {1: {"b", "c", "z"}, 2: {"y"}}, k=3, n_items=10)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics["ndcg_at_k"] == pytest.approx(((1 / math.log2(3) + 1 / math.log2(4)) / ideal + 0) / 2)
    assert metrics["precision_at_k"] == pytest.approx((2 / 3 + 0) / 2)
    assert metrics["recall_at_k"] == pytest.approx((2 / 3 + 0) / 2)
    assert metrics["map_at_k"] == pytest.approx(((1 / 2 + 2 / 3) / 3 + 0) / 2)
    assert metrics["coverage"] == pytest.approx(0.4) and metrics["short_share"] == 0.5
    assert metrics["ndcg_at_k_se"] == pytest.approx(np.std([metrics["ndcg_at_k"] * 2, 0], ddof=1) / math.sqrt(2))


@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=15, unique=True),
    st.sets(st.integers(0, 30), min_size=1, max_size=10),
    st.integers(1, 12),
)
def test_metrics_are_bounded_and_a_perfect_list_scores_one(listed: list[int], truth: set[int], k: int) -> None:
    metrics = ranking_metrics({0: listed}, {0: truth}, k, 31)
    for name in ("ndcg_at_k", "precision_at_k", "recall_at_k", "map_at_k"):
        assert 0.0 <= metrics[name] <= 1.0 + 1e-12
    perfect = ranking_metrics({0: sorted(truth)}, {0: truth}, k, 31)
    assert perfect["ndcg_at_k"] == pytest.approx(1.0) and perfect["map_at_k"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------- ranking


# ------------------------------------------------------------------------------------ integration


@pytest.mark.integration
def test_evaluate_through_elasticsearch_equals_the_in_process_ranking(es_settings: EsSettings) -> None:
    events = [str(real_dataset("ml-100k"))]
    served = evaluate(events, BuildConfig(), es=es_settings, baselines=False)
    local = evaluate(events, BuildConfig(), es=None, baselines=True)
    assert served["serving"] == "elasticsearch" and local["serving"] == "in-process"
    assert served["methods"]["daskrec"] == local["methods"]["daskrec"]
    assert set(local["methods"]) >= {"daskrec", "popularity", "jaccard"}
    # the measured claims of the README: the defaults beat the item-item peers, the tutorial does not
    peers = max(v["ndcg_at_k"] for name, v in local["methods"].items() if name not in ("daskrec", "popularity"))
    assert local["methods"]["daskrec"]["ndcg_at_k"] > peers
    tutorial = evaluate(events, TUTORIAL.build, layout=TUTORIAL.layout, baselines=False)
    assert tutorial["methods"]["daskrec"]["ndcg_at_k"] < peers


@pytest.mark.slow
def test_evaluate_command_writes_json_and_plot(tmp_path: Path) -> None:
    out, plot = tmp_path / "metrics.json", tmp_path / "metrics.png"
    result = CliRunner().invoke(
        cli,
        ["evaluate", str(real_dataset("lastfm-hetrec2011")), "--no-es", "--split", "global", "-k", "5",
         "--json", str(out), "--plot", str(plot)],
    )
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["split"] == "global" and written["k"] == 5
    for method in ("daskrec", "popularity"):
        assert {"ndcg_at_k", "precision_at_k", "recall_at_k", "map_at_k", "coverage", "short_share"} <= set(
            written["methods"][method]
        )
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "ndcg@5" in result.output


@pytest.mark.integration
def test_cross_occurrence_fields_rank_the_same_through_elasticsearch(es_settings: EsSettings) -> None:
    events = [str(real_dataset("ml-100k"))]  # ratings below 4 are view events there
    config = BuildConfig(ingest=IngestConfig(cross_event_types=("view",)))
    boosts = {"view_indicators": 0.5}
    served = evaluate(events, config, boosts=boosts, es=es_settings, baselines=False)
    local = evaluate(events, config, boosts=boosts, es=None, baselines=False)
    assert served["methods"]["daskrec"] == local["methods"]["daskrec"]
    without = evaluate(events, BuildConfig(), es=None, baselines=False)
    assert local["methods"]["daskrec"] != without["methods"]["daskrec"]  # the view field took part


