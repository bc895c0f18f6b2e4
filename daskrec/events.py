"""The live event store: events posted to the service, kept in an Elasticsearch index beside the
indicators, read back as users' recent histories, and exported in the events-log layout for the
next batch build.

The index is ``<alias>_events`` (never ``<alias>-...``, the generations' pattern). A document is
one event: ``timestamp`` (epoch milliseconds), ``visitorid``, ``event``, ``itemid`` (ids kept as
text, exactly as given), ``transactionid`` (optional) and ``sequence`` (the order the service
received it in, which breaks timestamp ties: a later event counts as more recent, as a later row
of a log does).

Pure functions validate events and build every body sent; :func:`export_events` is the I/O.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from elasticsearch import Elasticsearch, helpers

from .errors import InputError
from .es import settled_operations

__all__ = [
    "LOG_COLUMNS",
    "Event",
    "events_index",
    "events_mapping",
    "history_searches",
    "parse_event",
    "export_events",
    "Exported",
]

LOG_COLUMNS = ("timestamp", "visitorid", "event", "itemid", "transactionid")
"""The events-log layout (RetailRocket's), as ``daskrec build`` reads it."""
MAX_ID_CHARS = 512
"""Longest id accepted (ids are keywords; Lucene's limit is far above)."""
_EVENT_TYPE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LATEST = [{"timestamp": "desc"}, {"sequence": "desc"}]


@dataclass(frozen=True)
class Event:
    """One validated event."""

    timestamp: int
    """Epoch milliseconds."""
    visitorid: str
    event: str
    itemid: str
    transactionid: str | None = None

    def document(self, sequence: int) -> dict[str, Any]:
        """The event as stored, with the order it was received in."""
        return {**self.__dict__, "sequence": sequence}


def events_index(alias: str) -> str:
    """The event store of the indicators behind ``alias``.

    Examples
    --------
    >>> events_index("items2")
    'items2_events'
    """
    return f"{alias}_events"


def events_mapping() -> dict[str, Any]:
    """Explicit mappings: ids and types are exact keywords, nothing dynamic."""
    keyword = {"type": "keyword"}
    return {
        "dynamic": "strict",
        "properties": {
            "timestamp": {"type": "long"},
            "sequence": {"type": "long"},
            "visitorid": keyword,
            "event": keyword,
            "itemid": keyword,
            "transactionid": keyword,
        },
    }


def parse_event(raw: object, now_ms: int, position: int = 0) -> Event:
    """An event of the log layout from a JSON object, checked field by field.

    Parameters
    ----------
    raw
        ``{"visitorid", "event", "itemid", "timestamp"?, "transactionid"?}``; ids are strings or
        integers, ``timestamp`` epoch milliseconds (default ``now_ms``).
    position
        The event's place in its batch (0-based), named in errors.

    Raises
    ------
    InputError
        A field is missing or malformed; the error names the event and the field.

    Examples
    --------
    >>> parse_event({"visitorid": 7, "event": "view", "itemid": "a b"}, now_ms=1000)
    Event(timestamp=1000, visitorid='7', event='view', itemid='a b', transactionid=None)
    """
    where = {"path": "request body", "row": position + 1}
    if not isinstance(raw, Mapping):
        raise InputError("an event must be a JSON object.", **where)  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(LOG_COLUMNS))
    if unknown:
        raise InputError(f"unknown fields {unknown}; an event has {list(LOG_COLUMNS)}.", **where)  # type: ignore[arg-type]
    fields = {name: _id(raw, name, where) for name in ("visitorid", "itemid")}
    event = raw.get("event")
    if not isinstance(event, str) or not _EVENT_TYPE.match(event):
        raise InputError("must be 1 to 64 letters, digits, '_' or '-'.", column="event", value=event, **where)  # type: ignore[arg-type]
    timestamp = raw.get("timestamp", now_ms)
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not 0 <= timestamp < 2**63:
        raise InputError("must be epoch milliseconds (a non-negative integer).", column="timestamp", value=timestamp, **where)  # type: ignore[arg-type]
    transaction = raw.get("transactionid")
    return Event(timestamp, fields["visitorid"], event, fields["itemid"], None if transaction is None else _id(raw, "transactionid", where))


def _id(raw: Mapping[str, Any], name: str, where: Mapping[str, Any]) -> str:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError("must be a string or an integer.", column=name, value=value, **where)
    text = str(value)
    if not text.strip() or len(text) > MAX_ID_CHARS or "\n" in text:
        raise InputError(f"must be 1 to {MAX_ID_CHARS} characters on one line, not blank.", column=name, value=text[:80], **where)
    return text


def history_searches(
    visitor: str, recent: int, primary: Sequence[str] | None, cross: Sequence[str]
) -> list[dict[str, Any]]:
    """One search body per field of a user's live history: the primary event types (``None``:
    every type), then each cross type; each the ``recent`` latest events, latest first.

    Examples
    --------
    >>> [body["query"]["bool"]["filter"] for body in history_searches("7", 50, ["buy"], ["view"])]
    [[{'term': {'visitorid': '7'}}, {'terms': {'event': ['buy']}}], [{'term': {'visitorid': '7'}}, {'terms': {'event': ['view']}}]]
    """
    def search(types: Sequence[str] | None) -> dict[str, Any]:
        clauses: list[dict[str, Any]] = [{"term": {"visitorid": visitor}}]
        if types is not None:
            clauses.append({"terms": {"event": list(types)}})
        return {"size": recent, "_source": ["itemid"], "query": {"bool": {"filter": clauses}}, "sort": _LATEST, "track_total_hits": False}

    return [search(primary), *(search([name]) for name in cross)]


@dataclass(frozen=True)
class Exported:
    """What :func:`export_events` wrote."""

    events: int
    """Events written."""
    through: int
    """The store's operations up to this sequence number are exported: give it as ``after`` next
    time to export only the events stored since (-1: the store was empty)."""
    store: str
    """The store's index UUID: sequence numbers count on within one index only."""


def export_events(client: Elasticsearch, alias: str, path: str, after: int = -1) -> Exported:
    """Write the stored events to ``path`` as an events log (CSV, received order), for ``daskrec
    build`` or ``daskrec update``: those stored after operation ``after`` (a previous export's
    ``through``; -1: every event) and through the last one the store has settled.

    Raises
    ------
    InputError
        There is no event store for ``alias``, or it has not reached operation ``after`` (it
        was created again since).
    """
    index = events_index(alias)
    if not client.indices.exists(index=index):
        raise InputError(f"there is no event store {index!r}; post events to the service first.")
    through = settled_operations(client, index)
    if through < after:
        raise InputError(
            f"the event store {index!r} holds operations through {through} only, not through {after}: "
            "it was emptied or created again since; export it whole (after -1) and build over all events once."
        )
    stored = {"range": {"_seq_no": {"gt": after, "lte": through}}}
    import fsspec  # here: the service never exports

    written = 0
    with fsspec.open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(LOG_COLUMNS)
        for source in _in_received_order(client, index, stored):
            writer.writerow([source.get(name) if source.get(name) is not None else "" for name in LOG_COLUMNS])
            written += 1
    uuid = client.indices.get_settings(index=index, name="index.uuid")[index]["settings"]["index"]["uuid"]
    return Exported(events=written, through=through, store=str(uuid))


def _in_received_order(client: Elasticsearch, index: str, query: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for hit in helpers.scan(client, index=index, query={"query": query, "sort": [{"sequence": "asc"}]}, preserve_order=True):
        source: dict[str, Any] = hit["_source"]
        yield source
