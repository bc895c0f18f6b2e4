"""Recommendations from the indicators in Elasticsearch.

* ``similar``: an item's indicators, one GET through the alias.
* ``recommend``: a user's recent history searched against the indicator field(s): one ``bool``
  query with a ``term`` clause per history item, so the engine weighs each match (in the
  ``weighted`` layout by the indicator's strength, always by its rarity; see
  :mod:`daskrec.ranking`) instead of scoring a constant ``terms`` match. The history and any
  excluded items are left out, item-property filters and boosts apply, and when fewer than ``k``
  items match, the most popular remaining items that pass the same filters fill the list.

The query bodies are built by pure functions; :func:`similar` and :func:`recommend` send them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from elasticsearch import Elasticsearch
from elasticsearch.exceptions import AuthorizationException, NotFoundError

from .config import Backfill, check_backfill
from .errors import InputError, ServiceError
from .es import error_reason
from .ranking import Recommendation
from .schema import ID_FIELD, WEIGHTED_PREFIX, Layout, indicator_field, layout_of, property_field, search_field, search_token

log = logging.getLogger(__name__)

__all__ = ["ItemFilter", "Recommendation", "history_query", "popularity_query", "similar", "recommend"]


@dataclass(frozen=True)
class ItemFilter:
    """Which items may be recommended, and which count for more.

    Property names refer to the item properties given at index time (``daskrec index
    --properties``).
    """

    exclude: tuple[object, ...] = ()
    """Items never recommended: a blacklist, or what the user has already seen."""
    include: Mapping[str, Sequence[object]] = field(default_factory=dict)
    """Only items whose property ``name`` has one of these values (every name must match)."""
    exclude_where: Mapping[str, Sequence[object]] = field(default_factory=dict)
    """No item whose property ``name`` has one of these values."""
    boosts: Sequence[tuple[str, object, float]] = ()
    """``(name, value, factor)``: an indicator match's score is multiplied by ``factor`` when
    the item's property ``name`` has ``value`` (popularity backfill is not reordered)."""

    def clauses(self, history: Sequence[object]) -> dict[str, list[dict[str, Any]]]:
        """The ``filter`` and ``must_not`` clauses of a ``bool`` query for this filter, with the
        history excluded too."""
        excluded = _unique_text([*history, *self.exclude])
        must_not: list[dict[str, Any]] = [{"ids": {"values": excluded}}] if excluded else []
        must_not += [{"terms": {property_field(name): list(values)}} for name, values in self.exclude_where.items()]
        return {
            "filter": [{"terms": {property_field(name): list(values)}} for name, values in self.include.items()],
            "must_not": must_not,
        }


NO_FILTER = ItemFilter()


def history_query(
    histories: Mapping[str, Sequence[object]],
    k: int,
    boosts: Mapping[str, float] | None = None,
    item_filter: ItemFilter = NO_FILTER,
    exclude: Sequence[object] = (),
) -> dict[str, Any]:
    """Search body: items whose searched indicator fields hold the history items (one ``term``
    clause per field and distinct item, boosted per field), best first, ties by id, ``exclude``
    (the primary history) and ``item_filter`` applied.

    Parameters
    ----------
    histories
        Items per searched field (``weighted_indicators``, ``weighted_view_indicators``, ...).
    boosts
        Boost per searched field (default 1).

    Examples
    --------
    >>> history_query({"weighted_indicators": [7, 7]}, 3)["query"]["bool"]["should"]
    [{'term': {'weighted_indicators': {'value': '7', 'boost': 1.0}}}]
    """
    boosts = boosts or {}
    query: dict[str, Any] = {
        "bool": {
            "should": [
                {"term": {name: {"value": _term(name, item), "boost": float(boosts.get(name, 1.0))}}}
                for name, items in histories.items()
                for item in _unique_text(items)
            ],
            "minimum_should_match": 1,
            **item_filter.clauses(exclude),
        }
    }
    if item_filter.boosts:
        query = {
            "function_score": {
                "query": query,
                "functions": [
                    {"filter": {"term": {property_field(name): value}}, "weight": factor}
                    for name, value, factor in item_filter.boosts
                ],
                "score_mode": "multiply",
                "boost_mode": "multiply",
            }
        }
    return {"size": k, "_source": [ID_FIELD], "query": query, "sort": ["_score", {ID_FIELD: "asc"}]}


def popularity_query(
    exclude: Sequence[object], k: int, item_filter: ItemFilter = NO_FILTER, by: Literal["popularity", "trending"] = "popularity"
) -> dict[str, Any]:
    """Search body: the ``k`` most popular (or most trending, popularity breaking ties) items not
    in ``exclude`` that pass ``item_filter`` (then ties by id).

    Examples
    --------
    >>> popularity_query([], 3, by="trending")["sort"][0]
    {'trending': {'order': 'desc', 'unmapped_type': 'long'}}
    """
    # Generations indexed before trending counts existed have no such field: sort them by popularity.
    trending = [{"trending": {"order": "desc", "unmapped_type": "long"}}] if by == "trending" else []
    return {
        "size": k,
        "_source": [ID_FIELD],
        "query": {"bool": item_filter.clauses(exclude)},
        "sort": [*trending, {"popularity": "desc"}, {ID_FIELD: "asc"}],
    }


def _term(field: str, item: str) -> str:
    """The term of ``item`` in a searched field: a token in the weighted fields, the id as text otherwise."""
    return search_token(item) if field.startswith(WEIGHTED_PREFIX) else item


def _unique_text(items: Sequence[object]) -> list[str]:
    """Item ids as text, first occurrence kept, order kept."""
    return list(dict.fromkeys(str(item) for item in items))


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
        document = client.get(index=index, id=str(item), source_includes=[indicator_field()])
    except AuthorizationException as err:
        raise _refused(index, err) from None
    except NotFoundError as err:
        if err.error == "index_not_found_exception":
            raise _no_index(index) from None
        if missing == "empty":
            return []
        raise InputError(f"item {item!r} is not in index {index!r}; check the id (ids are case- and type-exact).") from None
    indicators: list[object] = document["_source"].get(indicator_field(), [])
    return indicators


def recommend(
    client: Elasticsearch,
    history: Sequence[object],
    k: int = 10,
    *,
    index: str = "items2",
    cross_histories: Mapping[str, Sequence[object]] | None = None,
    boosts: Mapping[str, float] | None = None,
    item_filter: ItemFilter = NO_FILTER,
    backfill: Backfill = "popularity",
    layout: Layout | None = None,
) -> list[Recommendation]:
    """Up to ``k`` items for a user whose recent primary events are ``history`` (most relevant first).

    Items matched through their indicators come first, ranked as :mod:`daskrec.ranking` says;
    then, unless ``backfill`` is ``off``, the most popular (or most trending) items not yet
    listed, not in the history and passing ``item_filter``.

    Parameters
    ----------
    cross_histories
        The user's recent items per cross-occurrence event type (``{"view": [...]}``), searched
        against that type's indicators.
    boosts
        Weight per indicator field (``{"indicators": 1.0, "view_indicators": 0.5}``; default 1).
    backfill
        ``popularity`` (users per item), ``trending`` (users per item in the build's trending
        window, popularity breaking ties) or ``off``.
    layout
        The index's layout; ``None`` reads it from the index (one small request after each swap).
    """
    check_backfill(backfill)
    if k < 1:
        return []
    try:
        cross = {indicator_field(name): items for name, items in (cross_histories or {}).items()}
        has_history = bool(len(history)) or any(len(items) for items in cross.values())

        def search(chosen: Layout) -> list[dict[str, Any]]:
            histories = {search_field(indicator_field(), chosen): history}
            histories.update({search_field(name, chosen): items for name, items in cross.items()})
            field_boosts = {search_field(name, chosen): boost for name, boost in (boosts or {}).items()}
            body = history_query(histories, k, field_boosts, item_filter, exclude=history)
            hits: list[dict[str, Any]] = client.search(index=index, body=body)["hits"]["hits"]
            return hits

        hits = _search_in_layout(client, index, layout, search) if has_history else []
        found = [Recommendation(hit["_source"][ID_FIELD], float(hit["_score"]), "indicators") for hit in hits]
        if backfill != "off" and len(found) < k:
            exclude = [*history, *(r.item for r in found)]
            extra = client.search(index=index, body=popularity_query(exclude, k - len(found), item_filter, backfill))
            found += [Recommendation(hit["_source"][ID_FIELD], 0.0, backfill) for hit in extra["hits"]["hits"]]
    except AuthorizationException as err:
        raise _refused(index, err) from None
    except NotFoundError:
        raise _no_index(index) from None
    return found


_LAYOUTS: dict[tuple[int, str], tuple[str, Layout]] = {}
"""Per (client, alias): the generation last seen behind the alias, and its layout."""


def _search_in_layout(
    client: Elasticsearch, index: str, layout: Layout | None, search: Callable[[Layout], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """``search`` in the given layout, or in the layout of the generation behind ``index``.

    That layout is remembered per client and alias, and checked against the generation the hits
    come from: when the alias has moved (or nothing matched), it is read again and, if it
    changed, the search is repeated. So the layout costs a request only after a swap.
    """
    if layout is not None:
        return search(layout)
    key = (id(client), index)
    cached = _LAYOUTS.get(key)
    generation, chosen = cached or _read_layout(client, index)
    hits = search(chosen)
    if cached is not None and (not hits or any(hit["_index"] != generation for hit in hits)):
        fresh = _read_layout(client, index)
        if fresh != cached:
            hits = search(fresh[1])
    return hits


def _read_layout(client: Elasticsearch, index: str) -> tuple[str, Layout]:
    """The generation behind ``index`` and the layout recorded in its mapping (``keyword`` for
    generations written before layouts existed); remembered for :func:`_search_in_layout`."""
    mappings = client.indices.get_mapping(index=index)
    generation, body = next(iter(mappings.items()))
    layout = layout_of(body["mappings"].get("_meta", {}))
    _LAYOUTS[id(client), index] = (generation, layout)
    return generation, layout


def _refused(index: str, err: AuthorizationException) -> ServiceError:
    return ServiceError(
        f"Elasticsearch refused to let this user read {index!r} ({error_reason(err)}); grant it the daskrec_reader role "
        "(README, 'Secured Elasticsearch')."
    )


def _no_index(index: str) -> InputError:
    return InputError(f"there is no index or alias {index!r}; build and index first (daskrec build ... --es-url URL).")
