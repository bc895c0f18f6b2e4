"""Exact agreement with the plain-loop SPEC port on the real datasets in ../shared/data."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from conftest import REAL_DATASETS, real_dataset
from spec_port import spec_indicators

from daskrec import BuildConfig, build_indicators
from daskrec.config import TUTORIAL

pytestmark = pytest.mark.slow  # real datasets

log = logging.getLogger(__name__)

DEFAULTS = BuildConfig()
CASES = [
    (TUTORIAL.build, {}),
    (TUTORIAL.build, {"llr_table": "users"}),
    (TUTORIAL.build, {"llr_table": "users", "max_per_user": 20, "max_per_item": 30, "seed": 3}),
    (DEFAULTS, {}),
]


@pytest.mark.parametrize(
    ("base", "options"), CASES, ids=["tutorial", "tutorial-users", "tutorial-users-downsampled", "defaults"]
)
@pytest.mark.parametrize("dataset", REAL_DATASETS)
def test_real_data_matches_the_spec(dataset: str, base: BuildConfig, options: dict[str, object]) -> None:
    path = real_dataset(dataset)
    config = BuildConfig(ingest=base.ingest, indicators=dataclasses.replace(base.indicators, **options))
    chosen = config.indicators
    expected = spec_indicators(
        str(path),
        recent=config.ingest.recent,
        top_k=chosen.top_k,
        min_llr=chosen.min_llr,
        llr_table=chosen.llr_table,
        max_per_user=chosen.max_per_user,
        max_per_item=chosen.max_per_item,
        seed=chosen.seed,
    )
    got = {row["item"]: row for row in build_indicators([str(path)], config).table.to_pylist()}
    assert got.keys() == expected.keys()
    differing = []
    for item, pairs in expected.items():
        scores = got[item]["scores"]
        same_ids = got[item]["indicators"] == [j for j, _ in pairs]
        same_scores = all(abs(a - b) <= 1e-6 * abs(b) for a, (_, b) in zip(scores, pairs))
        if not (same_ids and same_scores):
            differing.append((item, got[item]["indicators"], pairs))
    for row in differing[:20]:
        log.error("item %s: daskrec %s, spec %s", *row)
    assert not differing, f"{len(differing)} of {len(expected)} items differ (first in the log)"
    assert sum(1 for pairs in expected.values() if pairs) > 20  # the comparison is not vacuous
