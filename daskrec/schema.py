"""The index's vocabulary: the one owner of every name a build writes and a reader looks up.

An indicators table (``indicators.parquet``) and an Elasticsearch document share these names:

``item`` / ``id``
    The item id, as in the events log (table column / document field).
``indicators``, ``scores``
    The primary indicators (ids, best first) and their root-LLR scores.
``<type>_indicators``, ``<type>_scores``
    The same for the cross-occurrence event type ``<type>`` (``view_indicators``, ...).
``weighted_<field>``
    In the ``weighted`` layout, the searched text of an indicator field: each id's
    :func:`search_token` repeated :func:`term_frequencies` times.
``popularity``, ``trending``
    Users per item (over the whole log / the trending window), for backfill.
``properties.<name>``
    Item properties given at index time, for filters and boosts.

A generation's mapping carries ``_meta`` (:func:`generation_meta`): its load state and layout.

This module imports nothing from daskrec, so both sides (the build and the readers) can use it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np

__all__ = [
    "Layout",
    "ITEM_COLUMN",
    "ID_FIELD",
    "PRIMARY_FIELD",
    "PROPERTIES",
    "WEIGHTED_PREFIX",
    "SIMILARITY",
    "LINEAR_K1",
    "MAX_TERM_FREQUENCY",
    "WEIGHT_STEP",
    "MAX_TOKEN_CHARS",
    "LOADING",
    "COMPLETE",
    "UPDATING",
    "indicator_field",
    "scores_field",
    "indicator_fields",
    "search_field",
    "property_field",
    "search_token",
    "term_frequencies",
    "generation_meta",
    "layout_of",
    "history_of",
    "state_of",
    "table_of",
]

Layout = Literal["weighted", "keyword"]
"""How indicators are laid out in Elasticsearch: ``weighted`` repeats each indicator by its
strength in a text field, ``keyword`` lists it once (see :mod:`daskrec.ranking`)."""

ITEM_COLUMN = "item"
"""Column of the item id in an indicators table."""

ID_FIELD = "id"
"""Field of the item id in a document (also its ``_id``, as text)."""

PRIMARY_FIELD = "indicators"
"""Document field and table column of the primary indicators."""

PROPERTIES = "properties"
"""Object field with the item properties given at index time (strings become keywords)."""

WEIGHTED_PREFIX = "weighted_"
"""Prefix of the searched field of the ``weighted`` layout."""

SIMILARITY = "daskrec_linear"
"""Name of the index similarity of the searched indicator fields."""

LINEAR_K1 = 1000.0
"""BM25's ``k1`` for indicator fields: ``tf / (tf + k1)`` is within 5% of linear up to tf = 50."""

WEIGHT_STEP = 3.0
"""Root-LLR points per copy of an indicator in the ``weighted`` field: an indicator is written
``score / WEIGHT_STEP`` times, rounded, rather than ``score`` times. Relative weights survive (BM25
is near linear here, and a common factor does not change a ranking), so this only coarsens them;
documents hold about a third of the tokens and index faster. Measured (issue 15): NDCG@10 on the
three real datasets and both splits within 1% of a step of 1 (-0.99% to +0.83%, all within one
standard error); steps of 2 and 2.5 were not better, and compressing the weights instead (log or
square root of the score, or a lower cap) lost 3-10% on MovieLens."""

MAX_TERM_FREQUENCY = 11
"""Most copies of one indicator in the ``weighted`` field: bounds a document's size (scores grow
with the square root of the log's size; on the real datasets 99% of them are below 11, so below
33 = 11 steps)."""

MAX_TOKEN_CHARS = 255
"""Longest token the whitespace tokenizer keeps whole; longer ids become a digest."""

LOADING, COMPLETE, UPDATING = "loading", "complete", "updating"
"""Values of a generation's ``_meta.daskrec_state``: a crashed load leaves ``loading`` behind, a
crashed update of the live generation in place leaves ``updating`` (and no table id)."""

_STATE_KEY, _LAYOUT_KEY, _HISTORY_KEY, _TABLE_KEY = "daskrec_state", "daskrec_layout", "daskrec_history", "daskrec_table"


def indicator_field(event_type: str | None = None) -> str:
    """The indicator field of the primary events (``None``) or of a cross-occurrence type.

    Examples
    --------
    >>> indicator_field(), indicator_field("view")
    ('indicators', 'view_indicators')
    """
    return PRIMARY_FIELD if event_type is None else f"{event_type}_{PRIMARY_FIELD}"


def scores_field(field: str) -> str:
    """The scores that go with an indicator field.

    Examples
    --------
    >>> scores_field("indicators"), scores_field("view_indicators")
    ('scores', 'view_scores')
    """
    return field[: -len(PRIMARY_FIELD)] + "scores"


def indicator_fields(column_names: Iterable[str]) -> tuple[str, ...]:
    """The indicator fields among the columns of an indicators table (or a document's fields).

    Examples
    --------
    >>> indicator_fields(["item", "indicators", "scores", "view_indicators", "view_scores", "popularity"])
    ('indicators', 'view_indicators')
    """
    return tuple(
        name
        for name in column_names
        if (name == PRIMARY_FIELD or name.endswith(f"_{PRIMARY_FIELD}")) and not name.startswith(WEIGHTED_PREFIX)
    )


def search_field(field: str, layout: Layout) -> str:
    """The field a history is searched against for the indicator field ``field`` in ``layout``.

    Examples
    --------
    >>> search_field("view_indicators", "weighted"), search_field("indicators", "keyword")
    ('weighted_view_indicators', 'indicators')
    """
    return f"{WEIGHTED_PREFIX}{field}" if layout == "weighted" else field


def property_field(name: str) -> str:
    """The document field of the item property ``name``.

    Examples
    --------
    >>> property_field("genres")
    'properties.genres'
    """
    return f"{PROPERTIES}.{name}"


def search_token(item: object) -> str:
    """An item id as one token of the whitespace-analysed ``weighted`` fields: whitespace and
    ``%`` percent-encoded (so ``a b`` stays one token), ids longer than the tokenizer's 255
    characters replaced by a digest.

    Examples
    --------
    >>> search_token("a b"), search_token(42), search_token("x-1%")
    ('a%20b', '42', 'x-1%25')
    """
    token = "".join(f"%{ord(c):02X}" if c == "%" or c.isspace() else c for c in str(item))
    if len(token) > MAX_TOKEN_CHARS:
        token = "sha256:" + hashlib.sha256(token.encode()).hexdigest()
    return token


def term_frequencies(scores: np.ndarray, layout: Layout) -> np.ndarray:
    """How often each indicator id is written to the searched field: its score in
    :data:`WEIGHT_STEP` units, rounded, at least 1 and at most :data:`MAX_TERM_FREQUENCY`
    (always 1 in the ``keyword`` layout).

    Examples
    --------
    >>> term_frequencies(np.array([12.4, 5.6, 0.3, 80.0]), "weighted").tolist()
    [4, 2, 1, 11]
    >>> term_frequencies(np.array([12.4, 5.6, 0.3]), "keyword").tolist()
    [1, 1, 1]
    """
    if layout == "keyword":
        return np.ones(len(scores), dtype=np.int64)
    counts: np.ndarray = np.clip(np.rint(np.asarray(scores) / WEIGHT_STEP), 1, MAX_TERM_FREQUENCY).astype(np.int64)
    return counts


def generation_meta(
    state: str, layout: Layout, history: Mapping[str, object] | None = None, table: str | None = None
) -> dict[str, object]:
    """A generation's ``_meta``: its load state, layout, when known how its build cut histories
    (``recent`` and ``event_types``, for live histories) and which build's table it holds (the
    manifest's ``table_id``: an update may change that table's documents in place); a mapping
    update replaces it whole.

    Examples
    --------
    >>> meta = generation_meta(LOADING, "weighted", {"recent": 50, "event_types": ["buy"]}, "3f2a")
    >>> layout_of(meta), history_of(meta), table_of(meta)
    ('weighted', {'recent': 50, 'event_types': ['buy']}, '3f2a')
    """
    meta: dict[str, object] = {_STATE_KEY: state, _LAYOUT_KEY: layout}
    if history is not None:
        meta[_HISTORY_KEY] = dict(history)
    if table is not None:
        meta[_TABLE_KEY] = table
    return meta


def history_of(meta: Mapping[str, object]) -> dict[str, object] | None:
    """How the generation's build cut histories, if recorded."""
    found = meta.get(_HISTORY_KEY)
    return dict(found) if isinstance(found, Mapping) else None


def table_of(meta: Mapping[str, object]) -> str | None:
    """The id of the build table a complete generation holds (``None``: unknown, or mid-update)."""
    found = meta.get(_TABLE_KEY)
    return found if isinstance(found, str) else None


def state_of(meta: Mapping[str, object]) -> object:
    """The load state recorded in a generation's ``_meta`` (``None`` when there is none)."""
    return meta.get(_STATE_KEY)


def layout_of(meta: Mapping[str, object]) -> Layout:
    """The layout recorded in a generation's ``_meta`` (``keyword`` for generations written
    before layouts existed)."""
    return "weighted" if meta.get(_LAYOUT_KEY) == "weighted" else "keyword"
