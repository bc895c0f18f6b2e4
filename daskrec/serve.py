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
from .schema import (
    ID_FIELD,
    WEIGHTED_PREFIX,
    Layout,
    history_of,
    indicator_field,
    indicator_fields,
    layout_of,
    property_field,
    search_field,
    search_token,
)

log = logging.getLogger(__name__)

__all__ = [
    "ItemFilter",
    "LayoutMemory",
    "Recommendation",
    "backfill_body",
    "backfill_reason",
    "has_history",
    "history_query",
    "popularity_query",
    "recommendation_body",
    "recommendations",
    "recommend",
    "similar",
]


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
_NO_COUNT = {"track_total_hits": False}
"""No hit count is read, so the node need not count every match (a measured 0.5 ms of node CPU per search)."""


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
    return {"size": k, "_source": [ID_FIELD], "query": query, "sort": ["_score", {ID_FIELD: "asc"}], **_NO_COUNT}


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
        **_NO_COUNT,
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


def recommendation_body(
    history: Sequence[object],
    k: int,
    layout: Layout,
    *,
    cross_histories: Mapping[str, Sequence[object]] | None = None,
    boosts: Mapping[str, float] | None = None,
    item_filter: ItemFilter = NO_FILTER,
) -> dict[str, Any] | None:
    """The search body of :func:`recommend` in ``layout``, or None when there is no history to search.

    Examples
    --------
    >>> body = recommendation_body([7], 3, "weighted", cross_histories={"view": [8]}, boosts={"view_indicators": 0.5})
    >>> [clause["term"] for clause in body["query"]["bool"]["should"]]
    [{'weighted_indicators': {'value': '7', 'boost': 1.0}}, {'weighted_view_indicators': {'value': '8', 'boost': 0.5}}]
    """
    if not has_history(history, cross_histories):
        return None
    cross = {indicator_field(name): items for name, items in (cross_histories or {}).items()}
    histories = {search_field(indicator_field(), layout): history}
    histories.update({search_field(name, layout): items for name, items in cross.items()})
    field_boosts = {search_field(name, layout): boost for name, boost in (boosts or {}).items()}
    return history_query(histories, k, field_boosts, item_filter, exclude=history)


def has_history(history: Sequence[object], cross_histories: Mapping[str, Sequence[object]] | None = None) -> bool:
    """Whether there is any item to search for."""
    return bool(len(history)) or any(len(items) for items in (cross_histories or {}).values())


def backfill_reason(backfill: Backfill) -> Literal["popularity", "trending"]:
    """The reason given for items filled in by ``backfill`` (never ``off``)."""
    return "trending" if backfill == "trending" else "popularity"


def backfill_body(
    history: Sequence[object], found: Sequence[Recommendation], k: int, item_filter: ItemFilter, backfill: Backfill
) -> dict[str, Any] | None:
    """The search body that fills a list of ``found`` items up to ``k``, or None when none is needed."""
    if backfill == "off" or len(found) >= k:
        return None
    exclude = [*history, *(r.item for r in found)]
    return popularity_query(exclude, k - len(found), item_filter, backfill)


def recommendations(hits: Sequence[Mapping[str, Any]], reason: Literal["indicators", "popularity", "trending"]) -> list[Recommendation]:
    """Search hits as recommendations (backfill scores 0)."""
    return [Recommendation(hit["_source"][ID_FIELD], float(hit["_score"]) if reason == "indicators" else 0.0, reason) for hit in hits]


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

        def search(chosen: Layout) -> list[dict[str, Any]]:
            body = recommendation_body(history, k, chosen, cross_histories=cross_histories, boosts=boosts, item_filter=item_filter)
            hits: list[dict[str, Any]] = client.search(index=index, body=body)["hits"]["hits"] if body else []
            return hits

        if not has_history(history, cross_histories):
            hits: list[dict[str, Any]] = []
        elif layout is not None:
            hits = search(layout)
        else:
            hits = _search_in_layout(client, index, search)
        found = recommendations(hits, "indicators")
        fill = backfill_body(history, found, k, item_filter, backfill)
        if fill is not None:
            found += recommendations(client.search(index=index, body=fill)["hits"]["hits"], backfill_reason(backfill))
    except AuthorizationException as err:
        raise _refused(index, err) from None
    except NotFoundError:
        raise _no_index(index) from None
    return found


class LayoutMemory:
    """Per alias: the generation last seen behind it and that generation's layout.

    A search in the remembered layout is checked against the generation its hits come from:
    when the alias has moved (or nothing matched), the layout is read again and, if it changed,
    the search is repeated. So the layout costs a request only after a swap. The I/O is the
    caller's (sync here, async in the service); this class only decides.
    """

    def __init__(self) -> None:
        self._known: dict[str, tuple[str, Layout]] = {}
        self._meta: dict[str, tuple[tuple[str, ...], dict[str, object] | None]] = {}

    def get(self, alias: str) -> tuple[str, Layout] | None:
        """The remembered generation and layout of ``alias``."""
        return self._known.get(alias)

    def stale(self, alias: str, hits: Sequence[Mapping[str, Any]]) -> bool:
        """Whether ``hits`` (found in the remembered layout) call for reading the layout again."""
        known = self._known.get(alias)
        return known is not None and (not hits or any(hit["_index"] != known[0] for hit in hits))

    def remember(self, alias: str, mappings: Mapping[str, Any]) -> tuple[str, Layout]:
        """Remember the generation and layout of a ``GET <alias>/_mapping`` answer."""
        generation, body = next(iter(mappings.items()))
        meta = body["mappings"].get("_meta", {})
        found = (str(generation), layout_of(meta))
        self._known[alias] = found
        self._meta[alias] = (indicator_fields(body["mappings"].get("properties", {})), history_of(meta))
        return found

    def cross_types(self, alias: str) -> list[str]:
        """The cross-occurrence event types the remembered generation has fields for."""
        fields = self._meta.get(alias, ((), None))[0]
        return [name[: -len(indicator_field()) - 1] for name in fields if name != indicator_field()]

    def history_cut(self, alias: str) -> dict[str, object] | None:
        """How the remembered generation's build cut histories, if it recorded it."""
        return self._meta.get(alias, ((), None))[1]


_LAYOUTS: dict[int, LayoutMemory] = {}
"""One memory per client."""


def _search_in_layout(client: Elasticsearch, index: str, search: Callable[[Layout], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """``search`` in the layout of the generation behind ``index`` (see :class:`LayoutMemory`)."""
    memory = _LAYOUTS.setdefault(id(client), LayoutMemory())
    known = memory.get(index)
    generation, chosen = known or memory.remember(index, client.indices.get_mapping(index=index).body)
    hits = search(chosen)
    if known is not None and memory.stale(index, hits):
        fresh = memory.remember(index, client.indices.get_mapping(index=index).body)
        if fresh != known:
            hits = search(fresh[1])
    return hits


def _refused(index: str, err: AuthorizationException) -> ServiceError:
    return ServiceError(
        f"Elasticsearch refused to let this user read {index!r} ({error_reason(err)}); grant it the daskrec_reader role "
        "(README, 'Secured Elasticsearch')."
    )


def _no_index(index: str) -> InputError:
    return InputError(f"there is no index or alias {index!r}; build and index first (daskrec build ... --es-url URL).")
