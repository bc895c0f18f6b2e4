"""Recommendations from the indicators in Elasticsearch.

* ``similar``: an item's indicators, one GET through the alias.
* ``recommend``: a user's recent history searched against the indicator field(s): one ``bool``
  query with a ``term`` clause per history item, so the engine weighs each match (rarer
  indicators count more) instead of scoring a constant ``terms`` match; the history itself is
  excluded, and when fewer than ``k`` items match, the most popular remaining items fill the list.

The query bodies are built by pure functions; :func:`similar` and :func:`recommend` send them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from elasticsearch import Elasticsearch
from elasticsearch.exceptions import NotFoundError

from .errors import InputError
from .index import INDICATOR_FIELDS

log = logging.getLogger(__name__)

__all__ = ["Recommendation", "history_query", "popularity_query", "similar", "recommend"]


@dataclass(frozen=True)
class Recommendation:
    """One recommended item."""

    item: object
    """The item id, as it was in the events log."""
    score: float
    """The engine's score for an indicator match; 0 for popularity backfill."""
    reason: Literal["indicators", "popularity"]
    """Why it was recommended."""


def history_query(
    history: Sequence[object], k: int, field_boosts: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Search body: items whose indicators contain the history items, history excluded.

    Examples
    --------
    >>> history_query([7], 3)["query"]["bool"]["should"]
    [{'term': {'indicators': {'value': '7', 'boost': 1.0}}}]
    """
    boosts = dict(field_boosts) if field_boosts else {field: 1.0 for field in INDICATOR_FIELDS}
    ids = [str(item) for item in history]
    return {
        "size": k,
        "_source": ["id"],
        "query": {
            "bool": {
                "should": [
                    {"term": {field: {"value": item, "boost": boost}}} for field, boost in boosts.items() for item in ids
                ],
                "minimum_should_match": 1,
                "must_not": [{"ids": {"values": ids}}],
            }
        },
    }


def popularity_query(exclude: Sequence[object], k: int) -> dict[str, Any]:
    """Search body: the ``k`` most popular items not in ``exclude`` (ties by id)."""
    return {
        "size": k,
        "_source": ["id"],
        "query": {"bool": {"must_not": [{"ids": {"values": [str(item) for item in exclude]}}]}},
        "sort": [{"popularity": "desc"}, {"id": "asc"}],
    }


def similar(
    client: Elasticsearch, item: object, *, index: str = "items2", missing: Literal["error", "empty"] = "error"
) -> list[object]:
    """The indicators of ``item``, best first.

    Parameters
    ----------
    client
        From :func:`daskrec.es.connect_es`.
    item
        An item id as in the events log.
    index
        The alias (or index) to read.
    missing
        ``error`` raises :class:`InputError` for an unknown item; ``empty`` returns ``[]``.
    """
    try:
        document = client.get(index=index, id=str(item), source_includes=["indicators"])
    except NotFoundError as err:
        if err.error == "index_not_found_exception":
            raise _no_index(index) from None
        if missing == "empty":
            return []
        raise InputError(f"item {item!r} is not in index {index!r}; check the id (ids are case- and type-exact).") from None
    indicators: list[object] = document["_source"].get("indicators", [])
    return indicators


def recommend(
    client: Elasticsearch,
    history: Sequence[object],
    k: int = 10,
    *,
    index: str = "items2",
    field_boosts: Mapping[str, float] | None = None,
    backfill: bool = True,
) -> list[Recommendation]:
    """Up to ``k`` items for a user whose recent history is ``history`` (most relevant first).

    Items matched through their indicators come first, ranked by the engine's score; then, if
    ``backfill``, the most popular items not yet listed nor in the history.
    """
    if k < 1:
        return []
    try:
        hits = client.search(index=index, body=history_query(history, k, field_boosts))["hits"]["hits"] if history else []
        found = [Recommendation(hit["_source"]["id"], float(hit["_score"]), "indicators") for hit in hits]
        if backfill and len(found) < k:
            exclude = [*history, *(r.item for r in found)]
            extra = client.search(index=index, body=popularity_query(exclude, k - len(found)))["hits"]["hits"]
            found += [Recommendation(hit["_source"]["id"], 0.0, "popularity") for hit in extra]
    except NotFoundError:
        raise _no_index(index) from None
    return found


def _no_index(index: str) -> InputError:
    return InputError(f"there is no index or alias {index!r}; build and index first (daskrec build ... --es-url URL).")
