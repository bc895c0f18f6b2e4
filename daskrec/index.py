"""Write the indicators to Elasticsearch: one document per item, a new generation per build,
an alias moved atomically once the generation is complete.

Pure functions build every body that is sent (template, documents, bulk actions, alias moves);
:func:`write_index` sends them. Bulk loading runs on the Dask workers: each reads its own row
groups of ``indicators.parquet`` and streams them with the client's ``streaming_bulk``, so the
driver only creates the index and moves the alias.

A failed or interrupted load deletes the new generation and leaves the alias where it was.

After ``daskrec update``, :func:`update_index` sends only the documents that changed into the
live generation, when that generation holds the table the update replaced and few documents
changed; otherwise it loads a new generation as above. Item properties (``--properties``, or
``$set`` by the service) live only in the index: a new generation takes those of the live one
unless it is given its own.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dask.delayed import delayed
from elasticsearch import Elasticsearch, helpers
from elasticsearch.exceptions import ApiError, AuthorizationException, ConflictError, NotFoundError, TransportError

from .config import IndexConfig
from .errors import IndexingError, InputError, ServiceError
from .es import EsSettings, connect_es, error_reason, settled_operations
from .output import PREVIOUS_FILE, indicators_url, read_manifest, read_slice
from .scheduling import materialise
from .schema import (
    COMPLETE,
    ID_FIELD,
    ITEM_COLUMN,
    LINEAR_K1,
    LOADING,
    PRIMARY_FIELD,
    PROPERTIES,
    SIMILARITY,
    UPDATING,
    Layout,
    generation_meta,
    indicator_fields,
    layout_of,
    scores_field,
    search_field,
    search_token,
    history_of,
    state_of,
    table_of,
    term_frequencies,
)

log = logging.getLogger(__name__)

__all__ = [
    "IndexReport",
    "index_template",
    "indicator_documents",
    "bulk_actions",
    "alias_actions",
    "stale_generations",
    "read_item_properties",
    "write_privileges",
    "missing_privileges",
    "check_write_privileges",
    "live_layout",
    "changed_documents",
    "write_index",
    "update_index",
]

_FIRST_ERRORS = 5


@dataclass(frozen=True)
class IndexReport:
    """What a load did."""

    index: str
    """The generation now behind the alias."""
    documents: int
    """Documents indexed (one per item)."""
    deleted: tuple[str, ...]
    """Old generations removed."""
    load_s: float
    """Seconds of parallel bulk loading."""
    finish_s: float
    """Seconds to refresh, merge to one segment, verify the count and move the alias."""
    in_place: bool = False
    """The documents that changed were sent into the live generation (no new one)."""
    removed: int = 0
    """Documents deleted from the live generation (items no longer in the table), when in place."""


# ------------------------------------------------------------------------------------ pure bodies


def generation_name(alias: str, now: dt.datetime) -> str:
    """``<alias>-<UTC timestamp>``: names sort in creation order."""
    return f"{alias}-{now.astimezone(dt.timezone.utc):%Y%m%d%H%M%S%f}"


_DOCUMENTS_PER_BATCH = 5_000


def index_template(
    alias: str, layout: Layout = "weighted", fields: Sequence[str] = (PRIMARY_FIELD,)
) -> dict[str, Any]:
    """Index template for the generations of ``alias``: explicit keyword mappings (ids are kept
    exact, never analysed), no dynamic fields except item properties, and the ranking of
    :mod:`daskrec.ranking` (BM25 with ``b = 0`` and a large ``k1`` on the searched fields).
    The searched fields (``indicators`` in the ``keyword`` layout, ``weighted_indicators`` in the
    ``weighted`` one) are only matched, never sorted or aggregated, so they carry no doc values;
    the fields only read back (scores, and the id lists in the ``weighted`` layout) are not
    parsed by the node at all. The layout is recorded in the mapping's ``_meta`` for :func:`daskrec.serve.recommend`."""
    keyword = {"type": "keyword"}
    matched = {"type": "keyword", "doc_values": False, "similarity": SIMILARITY}
    # Kept in _source for reading back, never parsed: an object field that is not enabled takes
    # any JSON value, and skipping the parse of a hundred ids and floats per document saved the
    # node a fifth of its indexing work in the weighted layout (0.56 to 0.44 ms per document).
    unparsed = {"type": "object", "enabled": False}
    # One whitespace-separated string of tokens indexes about twice as fast as an array of as
    # many keyword values; ids become tokens through search_token.
    weighted = {"type": "text", "analyzer": "whitespace", "norms": False, "index_options": "freqs", "similarity": SIMILARITY}
    mapped: dict[str, Any] = {}
    for field in fields:
        mapped[scores_field(field)] = unparsed
        if layout == "weighted":
            mapped[field] = unparsed
            mapped[search_field(field, layout)] = weighted
        else:
            mapped[field] = matched
    return {
        "index_patterns": [f"{alias}-*"],
        "priority": 500,
        "template": {
            "settings": {
                "number_of_shards": 1,
                "similarity": {SIMILARITY: {"type": "BM25", "k1": LINEAR_K1, "b": 0.0}},
            },
            "mappings": {
                "dynamic": "strict",
                "_meta": generation_meta(LOADING, layout),
                "dynamic_templates": [
                    {
                        "property_text": {
                            "path_match": f"{PROPERTIES}.*",
                            "match_mapping_type": "string",
                            "mapping": {"type": "keyword"},
                        }
                    }
                ],
                "properties": {
                    ID_FIELD: keyword,
                    "popularity": {"type": "long"},
                    "trending": {"type": "long"},
                    PROPERTIES: {"type": "object", "dynamic": True},
                    **mapped,
                },
            },
        },
    }


def loading_settings() -> dict[str, Any]:
    """Settings of a generation while it loads: no refreshes, no replicas, no fsync per request
    (a crash mid-load loses the generation anyway: it is deleted and loaded again)."""
    return {"index": {"refresh_interval": "-1", "number_of_replicas": 0, "translog.durability": "async"}}


def serving_settings(replicas: int) -> dict[str, Any]:
    """Settings of a loaded generation: default refreshes and durability, the configured replicas."""
    return {"index": {"refresh_interval": None, "number_of_replicas": replicas, "translog.durability": "request"}}


def indicator_documents(
    table: pa.Table, layout: Layout = "weighted", properties: Mapping[object, dict[str, Any]] | None = None
) -> Iterator[dict[str, Any]]:
    """One document per row of an indicators table: ``id``, ``indicators`` (ids, best first),
    ``scores``, ``popularity``, ``trending``, in the ``weighted`` layout the searched ``weighted_indicators``,
    and the item's ``properties`` when given.

    Examples
    --------
    >>> table = pa.table({"item": [1], "indicators": [[2, 3]], "scores": [[6.2, 1.0]], "popularity": [4]})
    >>> list(indicator_documents(table, "keyword"))
    [{'id': 1, 'indicators': [2, 3], 'scores': [6.2, 1.0], 'popularity': 4}]
    >>> next(indicator_documents(table, "weighted", {1: {"genre": "jazz"}}))["weighted_indicators"]
    '2 2 3'
    """
    stored = [c for c in ("popularity", "trending") if c in table.column_names]
    fields = indicator_fields(table.column_names)
    lists = [f for field in fields for f in (field, scores_field(field))]
    # Batches of bounded size keep a batch's weighted text far below Arrow's 2 GB string limit.
    for batch in table.select([ITEM_COLUMN, *lists, *stored]).to_batches(max_chunksize=_DOCUMENTS_PER_BATCH):
        columns = {ID_FIELD: batch.column(ITEM_COLUMN), **{name: batch.column(name) for name in (*lists, *stored)}}
        if layout == "weighted":
            for field in fields:
                columns[search_field(field, layout)] = _weighted_text(batch.column(field), batch.column(scores_field(field)))
        for document in pa.RecordBatch.from_pydict(columns).to_pylist():
            if properties is not None and document[ID_FIELD] in properties:
                document[PROPERTIES] = properties[document[ID_FIELD]]
            yield document


def _weighted_text(indicators: pa.ListArray, scores: pa.ListArray) -> pa.Array:
    """The ``weighted`` layout's searched text of each row: every indicator's
    :func:`search_token` repeated by its :func:`~daskrec.schema.term_frequencies`, separated by
    spaces, best indicator first (computed column-wise: one Python call per distinct id).

    Examples
    --------
    >>> _weighted_text(pa.array([["a b", "c"], []]), pa.array([[6.2, 0.4], []])).to_pylist()
    ['a%20b a%20b c', '']
    """
    flat = pc.list_flatten(indicators)
    if pa.types.is_integer(flat.type):
        tokens = pc.cast(flat, pa.string())
    else:
        distinct = pc.dictionary_encode(flat)
        encoded = pa.array([search_token(item) for item in distinct.dictionary.to_pylist()], pa.string())
        tokens = encoded.take(distinct.indices)
    counts = term_frequencies(pc.list_flatten(scores).to_numpy(zero_copy_only=False), "weighted")
    repeated = pc.binary_repeat(pc.binary_join_element_wise(tokens, "", " "), pa.array(counts))
    lengths = pc.list_value_length(indicators).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    per_row = pa.ListArray.from_arrays(pa.array(offsets), repeated)
    return pc.utf8_rtrim(pc.binary_join(per_row, ""), characters=" ")


def bulk_actions(
    documents: Iterable[dict[str, Any]], index: str, *, partial: bool = False
) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Bulk actions, already expanded: (action line, encoded body). ``index`` actions replace
    the whole document; ``partial`` ones are ``update`` actions that set the given fields (an
    existing document keeps its other fields, its properties) or create the document.

    ``_id`` is the item id as text. The pairs go to ``streaming_bulk`` with an identity
    ``expand_action_callback``: encoding each document once with orjson here costs a fraction of
    the helper's own per-action expansion, and the client's work competes with the node for CPU.

    Examples
    --------
    >>> next(bulk_actions([{"id": 5, "indicators": [6]}], "items2-1"))
    ({'index': {'_index': 'items2-1', '_id': '5'}}, b'{"id":5,"indicators":[6]}')
    >>> next(bulk_actions([{"id": 5, "indicators": [6]}], "items2-1", partial=True))
    ({'update': {'_index': 'items2-1', '_id': '5', 'retry_on_conflict': 3}}, b'{"doc":{"id":5,"indicators":[6]},"doc_as_upsert":true}')
    """
    for document in documents:
        if partial:
            action = {"_index": index, "_id": str(document[ID_FIELD]), "retry_on_conflict": _RETRIES_ON_CONFLICT}
            yield {"update": action}, orjson.dumps({"doc": document, "doc_as_upsert": True})
        else:
            yield {"index": {"_index": index, "_id": str(document[ID_FIELD])}}, orjson.dumps(document)


_RETRIES_ON_CONFLICT = 3
"""An in-place update of a document can meet the service's ``$set`` of its properties (both read,
merge and write the document): the node retries the merge on a version conflict."""


def delete_actions(items: Iterable[object], index: str) -> Iterator[tuple[dict[str, Any], None]]:
    """Bulk ``delete`` actions of the documents of ``items``, expanded as :func:`bulk_actions`'
    (a delete has no body).

    Examples
    --------
    >>> list(delete_actions([7, "a"], "items2-1"))
    [({'delete': {'_index': 'items2-1', '_id': '7'}}, None), ({'delete': {'_index': 'items2-1', '_id': 'a'}}, None)]
    """
    for item in items:
        yield {"delete": {"_index": index, "_id": str(item)}}, None


def changed_documents(previous: pa.Table, table: pa.Table) -> tuple[np.ndarray, pa.Array]:
    """Which rows of ``table`` make another document than ``previous`` made for the same item
    (or a new one), and the items of ``previous`` that ``table`` no longer has.

    Compares the columns documents are made of (the item, every indicator list, its scores,
    popularity, trending; the weighted text follows from the lists and scores), vectorised:
    scores are compared exactly, since a document carries the float as it is.

    Raises
    ------
    ValueError
        The tables have other columns: their documents have other fields.

    Examples
    --------
    >>> before = pa.table({"item": [1, 2, 3], "indicators": [[2], [1, 3], [2]], "scores": [[1.0], [1.0, 2.0], [2.0]]})
    >>> after = pa.table({"item": [2, 1, 4], "indicators": [[1, 3], [2], [1]], "scores": [[1.0, 2.5], [1.0], [1.0]]})
    >>> changed, removed = changed_documents(before, after)
    >>> changed.tolist(), removed.to_pylist()
    ([True, False, True], [3])
    """
    if previous.column_names != table.column_names:
        raise ValueError(f"the tables' columns differ: {previous.column_names} and {table.column_names}")
    items, previous_items = table.column(ITEM_COLUMN).combine_chunks(), previous.column(ITEM_COLUMN).combine_chunks()
    position = pc.index_in(items, value_set=previous_items)
    known = pc.is_valid(position).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(known)
    previous_rows = pc.drop_null(position).to_numpy(zero_copy_only=False)
    changed = ~known
    for name in table.column_names:
        if name != ITEM_COLUMN:
            same = _chunked_rows_equal(table.column(name), rows, previous.column(name), previous_rows)
            changed[rows[~same]] = True
    removed = previous_items.filter(pc.invert(pc.is_in(previous_items, value_set=items)))
    return changed, removed


def _chunked_rows_equal(left: pa.ChunkedArray, left_rows: np.ndarray, right: pa.ChunkedArray, right_rows: np.ndarray) -> np.ndarray:
    """:func:`_rows_equal` of chunked arrays, a pair of chunks at a time. The chunks are not
    combined: Arrow copies even a sole chunk then (0.4 s a list column of a 50M-event table, 5
    of the comparison's 11 s); a table read back is one chunk, one held in slices a few."""
    left_bounds = np.cumsum([0, *(len(chunk) for chunk in left.chunks)])
    right_bounds = np.cumsum([0, *(len(chunk) for chunk in right.chunks)])
    pair = (np.searchsorted(left_bounds, left_rows, side="right") - 1) * len(right_bounds) + (
        np.searchsorted(right_bounds, right_rows, side="right") - 1
    )
    order = np.argsort(pair, kind="stable")
    starts = np.flatnonzero(np.diff(pair[order], prepend=-1))
    equal = np.empty(len(left_rows), dtype=bool)
    for group in np.split(order, starts[1:]):
        if len(group):
            left_chunk, right_chunk = divmod(int(pair[group[0]]), len(right_bounds))
            equal[group] = _rows_equal(
                left.chunk(left_chunk), left_rows[group] - left_bounds[left_chunk],
                right.chunk(right_chunk), right_rows[group] - right_bounds[right_chunk],
            )
    return equal


_ELEMENTS_PER_STEP = 1 << 22
"""List elements compared at a time: bounds the index arrays (a 50M-event table holds 50M)."""


def _rows_equal(left: pa.Array, left_rows: np.ndarray, right: pa.Array, right_rows: np.ndarray) -> np.ndarray:
    """Whether ``left[left_rows[i]]`` and ``right[right_rows[i]]`` hold the same value, for each
    ``i`` (lists: same length and elements; two nulls are equal).

    Lists are compared through their flat values and offsets, not taken row by row: taking 500k
    lists of 100 elements made Arrow copy every list (16 of 26 s at 50M events; 1.2 s this way).
    """
    if not (pa.types.is_list(left.type) or pa.types.is_large_list(left.type)):
        return _values_equal(left, left_rows, right, right_rows)
    left_lengths = pc.list_value_length(left).fill_null(-1).to_numpy(zero_copy_only=False)[left_rows]
    equal: np.ndarray = left_lengths == pc.list_value_length(right).fill_null(-1).to_numpy(zero_copy_only=False)[right_rows]
    filled = np.flatnonzero(equal & (left_lengths > 0))
    left_starts = left.offsets.to_numpy()[left_rows[filled]]
    right_starts = right.offsets.to_numpy()[right_rows[filled]]
    lengths = left_lengths[filled]
    ends = np.cumsum(lengths)
    steps = np.searchsorted(ends, np.arange(_ELEMENTS_PER_STEP, int(ends[-1]) if len(ends) else 0, _ELEMENTS_PER_STEP))
    for step in np.split(np.arange(len(filled)), steps):
        counts = lengths[step]
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        same = _values_equal(left.values, np.repeat(left_starts[step], counts) + within, right.values, np.repeat(right_starts[step], counts) + within)
        differing = np.repeat(step, counts)[~same]
        equal[filled[differing]] = False
    return equal


def _values_equal(left: pa.Array, left_rows: np.ndarray, right: pa.Array, right_rows: np.ndarray) -> np.ndarray:
    """:func:`_rows_equal` of plain values: numbers gathered by numpy, others taken by Arrow."""
    if left.null_count == 0 and right.null_count == 0 and (pa.types.is_integer(left.type) or pa.types.is_floating(left.type)):
        same: np.ndarray = left.to_numpy()[left_rows] == right.to_numpy()[right_rows]
        return same
    a, b = left.take(left_rows), right.take(right_rows)
    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    equal: np.ndarray = pc.or_kleene(both_null, pc.equal(a, b)).fill_null(False).to_numpy(zero_copy_only=False)
    return equal


def alias_actions(alias: str, new_index: str, current: Iterable[str]) -> dict[str, Any]:
    """One ``_aliases`` body that moves ``alias`` from ``current`` indices to ``new_index`` atomically."""
    actions: list[dict[str, Any]] = [{"remove": {"index": index, "alias": alias}} for index in sorted(current)]
    actions.append({"add": {"index": new_index, "alias": alias, "is_write_index": True}})
    return {"actions": actions}


def late_properties(copied: Mapping[str, Any], replaced: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """The properties of one item to write into the new generation after the alias moved: those
    ``$set`` in the replaced generation while the new one loaded (``replaced`` differs from
    ``copied``, what the load read at its start), unless set again in the new generation since
    (``live`` no longer holds the copied value): the later ``$set`` wins.

    Examples
    --------
    >>> late_properties({"genre": "jazz"}, {"genre": "rock", "year": 1999}, {"genre": "jazz"})
    {'genre': 'rock', 'year': 1999}
    >>> late_properties({"genre": "jazz"}, {"genre": "rock"}, {"genre": "blues"})
    {}
    """
    return {
        name: value
        for name, value in replaced.items()
        if value != copied.get(name) and live.get(name) == copied.get(name)
    }


def stale_generations(alias: str, indices: Iterable[str], keep: int, live: str) -> list[str]:
    """Generations of ``alias`` beyond the newest ``keep`` (never ``live``)."""
    generations = sorted((i for i in indices if i.startswith(f"{alias}-") and i[len(alias) + 1 :].isdigit()), reverse=True)
    return [index for index in generations[keep:] if index != live]


# --------------------------------------------------------------------------------------------- I/O


def write_privileges(alias: str) -> dict[str, Any]:
    """What loading a generation of ``alias`` needs, as a ``_has_privileges`` body: put the index
    template, and create, load, merge, swap and delete ``<alias>-*`` generations.

    Examples
    --------
    >>> write_privileges("items2")["index"][0]["names"]
    ['items2', 'items2-*']
    """
    return {
        "cluster": ["manage_index_templates"],
        "index": [{"names": [alias, f"{alias}-*"], "privileges": ["manage", "write", "read"]}],
    }


def missing_privileges(answer: Mapping[str, Any]) -> list[str]:
    """The privileges a ``_has_privileges`` answer says are missing, as readable phrases.

    Examples
    --------
    >>> missing_privileges({"cluster": {"manage_index_templates": False},
    ...                     "index": {"items2-*": {"write": False, "read": True}}})
    ["cluster privilege 'manage_index_templates'", "index privilege 'write' on 'items2-*'"]
    """
    missing = [f"cluster privilege {name!r}" for name, held in answer.get("cluster", {}).items() if not held]
    for names, privileges in answer.get("index", {}).items():
        missing += [f"index privilege {name!r} on {names!r}" for name, held in privileges.items() if not held]
    return missing




def check_write_privileges(client: Elasticsearch, alias: str) -> None:
    """Raise :class:`ServiceError` naming what the connected user lacks to load ``alias``
    (nothing to check on a node with security off).

    Raises
    ------
    ServiceError
        A privilege that loading needs is missing.
    """
    try:
        answer = client.security.has_privileges(**write_privileges(alias)).body
    except ApiError as err:
        if err.meta.status in (400, 500) and "security" in str(err).lower():
            return  # security is off: every request is allowed
        raise
    if not answer.get("has_all_requested", False):
        user = answer.get("username", "this user")
        raise ServiceError(
            f"Elasticsearch user {user!r} may not load the index {alias!r}: it lacks "
            f"{', '.join(missing_privileges(answer))}; grant the daskrec_writer role "
            "(README, 'Secured Elasticsearch') or use the writer's credentials."
        )


def write_index(
    out_dir: str,
    settings: EsSettings,
    config: IndexConfig = IndexConfig(),
    *,
    properties: Mapping[object, dict[str, Any]] | None = None,
    show_progress: bool = False,
) -> IndexReport:
    """Load the build in ``out_dir`` into a new generation and move ``config.alias`` to it.

    Parameters
    ----------
    out_dir
        A folder written by ``daskrec build`` (path or fsspec URL every worker can read).
    settings
        Where Elasticsearch is and how to authenticate.
    config
        Alias, generations kept, replicas, bulk sizes, layout.
    properties
        Item properties by item id (from :func:`read_item_properties`), for filters and boosts;
        by default those of the generation behind the alias (given at its load or ``$set``
        since), so that reloading a build never drops them.
    show_progress
        Show a progress bar over the bulk tasks.

    Returns
    -------
    IndexReport

    Raises
    ------
    ServiceError
        Elasticsearch is unreachable, refuses the credentials, is of another major version, or
        the user lacks a privilege that loading needs (checked before anything is written).
    IndexingError
        Documents were rejected, or the count did not match; the new generation was deleted and
        the alias was left where it was.
    """
    client = connect_es(settings)
    check_write_privileges(client, config.alias)
    url = indicators_url(out_dir)  # checks the build is complete
    manifest = read_manifest(out_dir)
    history = _history_cut(manifest)
    with fsspec.open(url, "rb") as handle:
        metadata = pq.ParquetFile(handle).metadata  # the footer only: the workers read the rows
    expected, row_groups = metadata.num_rows, metadata.num_row_groups
    fields = indicator_fields(metadata.schema.to_arrow_schema().names)
    _check_alias_name_is_free(client, config.alias)
    _delete_abandoned_loads(client, config.alias)
    copied: dict[object, dict[str, Any]] | None = None
    if properties is None:
        copied_through = settled_operations(client, config.alias)
        copied = _properties_in(client, config.alias)
        properties = copied or None
    client.indices.put_index_template(name=f"{config.alias}-template", **index_template(config.alias, config.layout, fields))
    new_index = generation_name(config.alias, dt.datetime.now(dt.timezone.utc))
    client.indices.create(index=new_index, settings=loading_settings(), mappings={"_meta": generation_meta(LOADING, config.layout)})
    log.info("index: loading %d documents into %s", expected, new_index)
    shared_properties = delayed(properties) if properties is not None else None
    try:
        tasks = [
            delayed(_load_row_group)(url, group, settings, new_index, config, shared_properties)
            for group in range(row_groups)
        ]
        started = time.perf_counter()
        results = _compute(materialise(tasks, show_progress))
        loaded = time.perf_counter()
        failed = sum(r[1] for r in results)
        if failed:
            reasons = [reason for r in results for reason in r[2]][:_FIRST_ERRORS]
            raise IndexingError(
                f"{failed} documents were rejected; first reasons: {reasons}; the alias {config.alias!r} was not moved."
            )
        client.indices.put_settings(index=new_index, settings=serving_settings(config.replicas))
        client.indices.refresh(index=new_index)
        # A generation is never written again: one segment makes every query cheaper.
        client.indices.forcemerge(index=new_index, max_num_segments=1, wait_for_completion=True)
        indexed = int(client.count(index=new_index)["count"])
        if indexed != expected:
            raise IndexingError(f"{new_index} holds {indexed} documents, expected {expected}; the alias was not moved.")
        client.indices.put_mapping(index=new_index, meta=generation_meta(COMPLETE, config.layout, history, manifest.get("table_id")))
        current = _alias_targets(client, config.alias)
        client.indices.update_aliases(**alias_actions(config.alias, new_index, current))
    except AuthorizationException as err:
        _delete_quietly(client, new_index)
        raise ServiceError(
            f"Elasticsearch refused a step of the load ({error_reason(err)}); the alias {config.alias!r} was not moved. "
            "Grant the daskrec_writer role (README, 'Secured Elasticsearch')."
        ) from None
    except (ApiError, TransportError) as err:
        _delete_quietly(client, new_index)
        raise IndexingError(
            f"loading {new_index} failed ({type(err).__name__}: {err}); the alias {config.alias!r} was not moved. "
            "Fix the cause and rerun: a partial generation left behind is removed then."
        ) from None
    except BaseException:
        _delete_quietly(client, new_index)
        raise
    if copied is not None and current:
        _carry_late_properties(client, current, new_index, copied, copied_through)
    all_indices = client.indices.get(index=f"{config.alias}-*", expand_wildcards="open,closed").keys()
    deleted = stale_generations(config.alias, all_indices, config.keep, new_index)
    for index in deleted:
        client.indices.delete(index=index, ignore_unavailable=True)
    log.info("index: %s now serves %d documents (deleted %s)", config.alias, indexed, list(deleted) or "none")
    return IndexReport(
        index=new_index,
        documents=indexed,
        deleted=tuple(deleted),
        load_s=round(loaded - started, 3),
        finish_s=round(time.perf_counter() - loaded, 3),
    )


def update_index(
    out_dir: str, settings: EsSettings, config: IndexConfig = IndexConfig(), *, show_progress: bool = False
) -> IndexReport:
    """Bring the index behind ``config.alias`` up to the build in ``out_dir`` after ``daskrec update``.

    When the live generation holds the table the update replaced (its ``_meta`` names it, and
    the build kept it as ``indicators-previous.parquet``), in the same layout and fields, and at
    most ``config.in_place_max`` of its documents differ, only those are sent into it: changed
    and new items as partial updates (properties stay), items gone as deletes. Then it is
    refreshed and merged to one segment again, which takes the replaced versions out of the
    term statistics once the node lets go of them (up to 30 s), so it ranks as a new generation
    of the same table would. Otherwise the table is loaded into a new generation
    (:func:`write_index`, properties carried over). When the live generation holds the build's
    table already (a rerun), nothing is sent.

    Raises
    ------
    ServiceError
        As :func:`write_index`.
    IndexingError
        Documents were rejected or a request failed. In place, each document is whole, the old
        or the new one, and the generation's ``_meta`` no longer names a table, so that the next
        ``update`` or ``daskrec index`` loads a new generation and serves the build exactly again.
    """
    client = connect_es(settings)
    check_write_privileges(client, config.alias)
    url, manifest = indicators_url(out_dir), read_manifest(out_dir)
    previous_url = f"{out_dir.rstrip('/')}/{PREVIOUS_FILE}"
    fs, root = fsspec.core.url_to_fs(out_dir)
    live = _alias_targets(client, config.alias)
    meta = _meta_of(client, live[0]) if len(live) == 1 else {}
    history = _history_cut(manifest)
    if state_of(meta) == COMPLETE and table_of(meta) == manifest.get("table_id") and layout_of(meta) == config.layout:
        log.info("index: %s already holds this build's table", live[0])  # a rerun of the same update
        return IndexReport(index=live[0], documents=0, deleted=(), load_s=0.0, finish_s=0.0, in_place=True)
    reason = _not_in_place(meta, manifest, config.layout, history, has_previous=fs.exists(f"{root}/{PREVIOUS_FILE}"))
    if reason is None:
        table, previous = read_slice(url), read_slice(previous_url)
        try:
            changed, removed = changed_documents(previous, table)
        except ValueError:  # other columns
            reason = "the update added indicator fields"
        else:
            changed_count = int(changed.sum())
            share = (changed_count + len(removed)) / max(previous.num_rows, 1)
            if share > config.in_place_max:
                reason = f"{share:.0%} of the documents changed (--in-place-max {config.in_place_max:g})"
    if reason is not None:
        log.info("index: a new generation, since %s", reason)
        return write_index(out_dir, settings, config, show_progress=show_progress)
    generation = live[0]
    started = time.perf_counter()
    client.indices.put_mapping(index=generation, meta=generation_meta(UPDATING, config.layout, history))
    documents = bulk_actions(indicator_documents(table.filter(pa.array(changed)), config.layout), generation, partial=True)
    actions: Iterator[Any] = itertools.chain(documents, delete_actions(removed.to_pylist(), generation))
    try:
        _, failed, reasons = _stream(client, actions, config, settings)
        if failed:
            raise IndexingError(f"{failed} documents were rejected; first reasons: {reasons}; {_MIXED}")
        sent = time.perf_counter()
        client.indices.refresh(index=generation)
        _merge_replaced_away(client, generation)
        indexed = int(client.count(index=generation)["count"])
        if indexed != table.num_rows:
            raise IndexingError(f"{generation} holds {indexed} documents, expected {table.num_rows}; {_MIXED}")
        client.indices.put_mapping(index=generation, meta=generation_meta(COMPLETE, config.layout, history, manifest.get("table_id")))
    except (ApiError, TransportError) as err:
        raise IndexingError(f"updating {generation} failed ({type(err).__name__}: {err}); {_MIXED}") from None
    log.info("index: %d changed documents sent into %s, %d removed", changed_count, generation, len(removed))
    return IndexReport(
        index=generation,
        documents=changed_count,
        deleted=(),
        load_s=round(sent - started, 3),
        finish_s=round(time.perf_counter() - sent, 3),
        in_place=True,
        removed=len(removed),
    )


_LEASE_WAIT_S = 120.0


def _merge_replaced_away(client: Elasticsearch, index: str) -> None:
    """Merge ``index`` to one segment without the versions an in-place update replaced.

    Replaced versions count in the term statistics (document frequencies, hence BM25's idf)
    until a merge drops them, and the node keeps them through merges while a shard's retention
    lease still covers their operations (peer-recovery leases are renewed every 30 s) or they
    are above the last commit's checkpoint. So wait, at most :data:`_LEASE_WAIT_S`, until every
    lease has passed every shard's last operation, flush, then merge once: the generation then
    ranks as a fresh load of the same table would (measured on 9.x: without the wait or the
    flush, a merge keeps them).
    """
    deadline = time.monotonic() + _LEASE_WAIT_S
    while True:
        shards = client.indices.stats(index=index, level="shards")["indices"][index]["shards"]
        copies = [copy for listed in shards.values() for copy in listed]
        if all(lease["retaining_seq_no"] > copy["seq_no"]["max_seq_no"] for copy in copies for lease in copy["retention_leases"]["leases"]):
            break
        if time.monotonic() > deadline:
            log.warning("index: %s still retains replaced versions after %.0f s; they leave at a later merge", index, _LEASE_WAIT_S)
            break
        time.sleep(1.0)
    client.indices.flush(index=index)  # ... and above the last commit's checkpoint
    client.indices.forcemerge(index=index, max_num_segments=1, wait_for_completion=True)


_MIXED = (
    "the live generation holds each document whole, some from before this update; "
    "the next `daskrec update --es-url` or `daskrec index` loads a new generation"
)


def _not_in_place(
    meta: Mapping[str, Any], manifest: Mapping[str, Any], layout: Layout, history: Mapping[str, object] | None, *, has_previous: bool
) -> str | None:
    """Why the live generation (its ``_meta``) cannot take the update in ``manifest`` in place,
    or ``None`` when it can."""
    if not meta:
        return "there is no single live generation"
    if state_of(meta) != COMPLETE or table_of(meta) is None:
        return "the live generation's last load or update did not complete"
    if table_of(meta) != manifest.get("previous_table_id") or not has_previous:
        return "the live generation does not hold the table this update replaced"
    if layout_of(meta) != layout or history_of(meta) != history:
        return "the layout or the history settings differ from the live generation's"
    return None


def _meta_of(client: Elasticsearch, index: str) -> dict[str, Any]:
    """The ``_meta`` of ``index``'s mapping."""
    mappings = client.indices.get_mapping(index=index)
    meta: dict[str, Any] = next(iter(mappings.values()))["mappings"].get("_meta", {})
    return meta


def _properties_in(client: Elasticsearch, target: str, after: int = -1) -> dict[object, dict[str, Any]]:
    """The properties of the items in ``target`` (an alias or indices) whose documents were last
    written after operation ``after`` (sequence number; -1: all), by item id (empty when it does
    not exist or holds no properties)."""
    if not client.indices.exists(index=target):
        return {}
    query = {"bool": {"filter": [{"exists": {"field": PROPERTIES}}, {"range": {"_seq_no": {"gt": after}}}]}}
    found = helpers.scan(client, index=target, query={"query": query}, _source=[ID_FIELD, PROPERTIES])
    return {hit["_source"][ID_FIELD]: hit["_source"][PROPERTIES] for hit in found}


def _carry_late_properties(
    client: Elasticsearch, replaced: Sequence[str], new_index: str, copied: Mapping[object, dict[str, Any]], copied_through: int
) -> None:
    """After the alias moved to ``new_index``: write into it the properties ``$set`` in the
    ``replaced`` generations while it loaded, after the load read them (``copied``, every write
    through operation ``copied_through``): only the documents written since are read again.

    The write block makes this complete: the node adds it once the writes in flight are done, and
    refuses any later one, which the service sends again through the moved alias. A ``$set`` that
    reached the new generation meanwhile wins (:func:`late_properties`), also against one racing
    this (the write is conditional on the version read).
    """
    targets = ",".join(replaced)
    try:
        client.indices.add_block(index=targets, block="write")
        client.indices.refresh(index=targets)
        carried = 0
        for item, properties in _properties_in(client, targets, copied_through).items():
            carried += _write_late_properties(client, new_index, str(item), copied.get(item, {}), properties)
        if carried:
            client.indices.refresh(index=new_index)
    except (ApiError, TransportError) as err:
        raise IndexingError(
            f"{new_index} now serves, but the properties $set in {targets} during the load could not be carried over "
            f"({type(err).__name__}: {err}); {targets} was kept: set them again through the service."
        ) from None
    if carried:
        log.info("index: %d items' properties $set during the load carried into %s", carried, new_index)


def _write_late_properties(
    client: Elasticsearch, index: str, item: str, copied: Mapping[str, Any], replaced: Mapping[str, Any]
) -> int:
    """Write into ``item``'s document of ``index`` what :func:`late_properties` gives, unless the
    document is gone or needs none; 1 when written. Read again when a concurrent write won."""
    while True:
        found = client.options(ignore_status=404).get(index=index, id=item, source_includes=[PROPERTIES])
        if not found.get("found"):
            return 0  # the item left the table
        changes = late_properties(copied, replaced, found["_source"].get(PROPERTIES, {}))
        if not changes:
            return 0
        try:
            client.update(index=index, id=item, doc={PROPERTIES: changes},
                          if_seq_no=found["_seq_no"], if_primary_term=found["_primary_term"])
            return 1
        except ConflictError:
            continue  # a $set through the alias came in between: compare with it


def read_item_properties(
    url: str, item_type: pa.DataType, list_columns: Iterable[str] = ()
) -> dict[object, dict[str, Any]]:
    """Item properties from a CSV or Parquet file with an ``item`` column; every other column is
    a property (text becomes a keyword field, numbers stay numbers; in ``list_columns`` a text
    cell holds several values separated by ``|``, as MovieLens lists genres). Empty cells are
    left out.

    Raises
    ------
    InputError
        The file cannot be read, has no ``item`` column, repeats an item, names an unknown list
        column, or has item ids that are not of the build's type.
    """
    import pandas as pd

    try:
        if url.endswith(".parquet"):
            frame = pd.read_parquet(url)
        else:
            frame = pd.read_csv(url, dtype={"item": str} if pa.types.is_string(item_type) else None)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read item properties: {err}", path=url) from None
    if "item" not in frame.columns:
        raise InputError("item properties need an 'item' column with the item ids.", path=url, column="item")
    unknown = sorted(set(list_columns) - set(frame.columns))
    if unknown:
        raise InputError(f"list columns {unknown} are not in the file (it has {list(frame.columns)}).", path=url)
    repeated = frame["item"].duplicated()
    if repeated.any():
        row = int(np.flatnonzero(repeated.to_numpy())[0])
        raise InputError(f"item {frame['item'].iloc[row]!r} appears twice.", path=url, row=row + 1, column="item")
    if pa.types.is_integer(item_type) and not pd.api.types.is_integer_dtype(frame["item"]):
        raise InputError("the build's item ids are integers but these are not.", path=url, column="item")
    lists = set(list_columns)
    out: dict[object, dict[str, Any]] = {}
    for record in frame.to_dict("records"):
        item = record.pop("item")
        out[item.item() if hasattr(item, "item") else item] = {
            str(name): (value.split("|") if name in lists else value)
            for name, value in record.items()
            if not (isinstance(value, float) and np.isnan(value)) and value is not None
        }
    return out


def _compute(persisted: list[Any]) -> list[tuple[int, int, list[str]]]:
    from dask.base import compute

    results: list[tuple[int, int, list[str]]] = list(compute(persisted)[0])
    return results


def _load_row_group(
    url: str,
    group: int,
    settings: EsSettings,
    index: str,
    config: IndexConfig,
    properties: Mapping[object, dict[str, Any]] | None,
) -> tuple[int, int, list[str]]:
    """Stream one row group's documents to ``index`` (runs on a worker); (indexed, failed, reasons)."""
    with fsspec.open(url, "rb") as handle:
        table = pq.ParquetFile(handle).read_row_group(group)
    client = Elasticsearch(**settings.client_options())
    try:
        return _stream(client, bulk_actions(indicator_documents(table, config.layout, properties), index), config, settings)
    finally:
        client.close()


def _stream(
    client: Elasticsearch, actions: Iterable[Any], config: IndexConfig, settings: EsSettings
) -> tuple[int, int, list[str]]:
    """Send bulk ``actions`` (pre-expanded pairs: action line and body) in bounded chunks,
    retrying 429s with backoff; (succeeded, failed, the first reasons)."""
    indexed, failed = 0, 0
    reasons: list[str] = []
    # The helper hands each action to expand_action_callback unchanged; its type hints do not
    # cover pre-expanded (action, body) pairs, which it supports.
    for ok, item in helpers.streaming_bulk(
        client,
        actions,
        chunk_size=config.chunk_size,
        max_chunk_bytes=config.max_chunk_bytes,
        expand_action_callback=_already_expanded,  # type: ignore[arg-type]
        max_retries=settings.max_retries,
        initial_backoff=0.5,
        max_backoff=10.0,
        raise_on_error=False,
    ):
        if ok:
            indexed += 1
        else:
            failed += 1
            if len(reasons) < _FIRST_ERRORS:
                error = next(iter(item.values()))
                reasons.append(f"{error.get('_id')}: {error.get('error')}")
    return indexed, failed, reasons


def _already_expanded(action: tuple[dict[str, Any], bytes | None]) -> tuple[dict[str, Any], bytes | None]:
    return action


def _history_cut(manifest: Mapping[str, Any]) -> dict[str, object] | None:
    """How the build cut each user's history (for live histories), from its manifest's options."""
    ingest = manifest.get("options", {}).get("ingest", {})
    if "recent" not in ingest:
        return None
    return {"recent": ingest["recent"], "event_types": ingest.get("event_types")}


def _check_alias_name_is_free(client: Elasticsearch, alias: str) -> None:
    if client.indices.exists(index=alias) and not client.indices.exists_alias(name=alias):
        raise IndexingError(
            f"{alias!r} is a concrete index, not an alias; delete or rename it, or choose another --index."
        )


def live_layout(client: Elasticsearch, alias: str) -> Layout | None:
    """The layout of the generation behind ``alias`` (``None`` when the alias does not exist):
    an update reindexes in the layout its build was indexed in unless told otherwise."""
    try:
        mappings = client.indices.get_mapping(index=alias)
    except NotFoundError:
        return None
    body = next(iter(mappings.values()))
    return layout_of(body["mappings"].get("_meta", {}))


def _alias_targets(client: Elasticsearch, alias: str) -> list[str]:
    try:
        return list(client.indices.get_alias(name=alias).keys())
    except NotFoundError:
        return []


def _delete_abandoned_loads(client: Elasticsearch, alias: str) -> None:
    """Delete generations whose load never completed (a crash, a kill, a lost connection)."""
    live = set(_alias_targets(client, alias))
    mappings = client.indices.get_mapping(index=f"{alias}-*", allow_no_indices=True, ignore_unavailable=True)
    for index, mapping in mappings.items():
        state = state_of(mapping.get("mappings", {}).get("_meta", {}))
        if state == LOADING and index not in live:
            client.indices.delete(index=index, ignore_unavailable=True)
            log.warning("index: deleted %s, left behind by an interrupted load", index)


def _delete_quietly(client: Elasticsearch, index: str) -> None:
    try:
        client.indices.delete(index=index, ignore_unavailable=True)
        log.warning("index: removed the partial generation %s; the alias was not moved", index)
    except Exception as err:  # noqa: BLE001 - the first failure is the one to report
        log.error("index: could not remove the partial generation %s (%s); delete it by hand", index, err)
