"""The index's vocabulary: field names and tokens, one rule each."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from daskrec.schema import (
    LOADING,
    MAX_TERM_FREQUENCY,
    WEIGHT_STEP,
    MAX_TOKEN_CHARS,
    generation_meta,
    indicator_field,
    indicator_fields,
    layout_of,
    scores_field,
    search_field,
    search_token,
    state_of,
    term_frequencies,
)


@given(st.one_of(st.integers(), st.text(min_size=1)))
def test_a_search_token_is_one_whitespace_token(item: object) -> None:
    token = search_token(item)
    assert token and token.split() == [token] and len(token) <= MAX_TOKEN_CHARS


@given(st.text(min_size=1, max_size=100), st.text(min_size=1, max_size=100))
def test_distinct_ids_get_distinct_tokens(a: str, b: str) -> None:
    assert (search_token(a) == search_token(b)) == (a == b)


@given(st.from_regex(r"[a-z][a-z0-9_-]{0,20}", fullmatch=True))
def test_field_names_go_together(event_type: str) -> None:
    field = indicator_field(event_type)
    assert scores_field(field) == f"{event_type}_scores"
    assert indicator_fields(["item", indicator_field(), "scores", field, scores_field(field), search_field(field, "weighted")]) == (
        "indicators",
        field,
    )
    assert search_field(field, "keyword") == field


def test_term_frequencies_are_bounded_rounded_scores_in_steps() -> None:
    scores = np.array([0.2, 4.5, 7.5, 31.4, 1e9]) * WEIGHT_STEP / 3.0
    assert term_frequencies(scores, "weighted").tolist() == [1, 2, 2, 10, MAX_TERM_FREQUENCY]
    assert term_frequencies(scores, "keyword").tolist() == [1] * 5


def test_generation_meta_round_trip() -> None:
    meta = generation_meta(LOADING, "weighted")
    assert (state_of(meta), layout_of(meta)) == (LOADING, "weighted")
    assert layout_of({}) == "keyword"  # generations written before layouts existed
