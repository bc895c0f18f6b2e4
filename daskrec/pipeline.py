"""Wire the stages into Dask graphs: events → recent rows → occurrences → indicators.

:func:`build_parts` runs on whichever Dask scheduler is active (a ``distributed.Client``,
threads, or the synchronous scheduler). Every large intermediate goes to a scratch folder
(:mod:`daskrec.scratch`) rather than staying in memory, so a task holds one partition, one
bucket of visitors or one block of item rows at a time:

1. *ingest*: each partition's rows are routed by a hash of the visitor id into buckets; each
   bucket keeps its visitors' recent rows.
2. *occurrences*: the item vocabulary (sorted ids: an item's code is its position), one
   occurrence matrix per bucket (with cross-occurrence types, over joint columns: see
   :mod:`daskrec.cooccurrence`), and their summaries summed into the marginals and each item
   row's work.
3. *indicators*: the items are cut into blocks of about equal work, sized so that a block's
   rows fit a task's share of worker memory; a block gathers from every bucket only the users
   who have one of its items and runs the fused kernel of :mod:`daskrec.indicators` on them.
   Each block writes its slice of the output table.

Each stage is waited for before the next is planned, so its time is measured.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
import logging
import math
import posixpath
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
from dask.base import annotate, compute
from dask.delayed import Delayed, delayed

from . import cooccurrence as co
from . import scratch
from .config import BuildConfig, IndicatorConfig, IngestConfig, OnBadRows
from .errors import DataWarning, InputError
from .indicators import (
    Candidates,
    IndicatorBlock,
    PairTables,
    all_indicators,
    indicator_block,
    merged_block,
    pair_block,
    pair_block_bytes,
    pair_kernel_bytes,
    pair_tables,
)
from .ingest import (
    BAD_ROW_CAUSES,
    EventFile,
    IdKinds,
    StringIdsFound,
    expand_inputs,
    by_visitor_bucket,
    keep_recent,
    latest_pairs,
    read_partitions,
)
from .output import complete_pending, read_manifest, read_slice, write_output
from .scheduling import materialise, scheduler_threads, scheduler_workers, task_memory_bytes, worker_memory_bytes
from .schema import ITEM_COLUMN, indicator_field, scores_field

log = logging.getLogger(__name__)

__all__ = [
    "BuildReport",
    "BuildResult",
    "ItemCounts",
    "build_indicators",
    "build_manifest",
    "build_parts",
    "indicator_table",
    "state_bytes",
    "update_build",
    "write_build",
]

_BLOCKS_PER_THREAD = 4
_BYTES_PER_SUFFIX_ENTRY = 14
"""Memory per entry an item block gathers when the matrix is not shared (narrow: twice that
with int64 counts): the entry (int32 item, int16 count), the rows' pointers and cursors and what
sizes them (~2 bytes an entry), the candidates it hands on (7% of an entry at 100M events, 16
bytes each, up to twice that as their arrays grow and once more when grouped by block), and a
margin. It was 20 while the rows were read as pieces and stacked (two copies): 75 blocks
instead of 100 at 100M events under 1.1 GB, peak 0.95 GB. At 8 (49 blocks), one of two such
builds peaked at 1.15 GB, over the limit (2026-12-01): the margin is not loose."""
_BYTES_PER_SHARED_ENTRY = 32
"""Memory per entry of the whole occurrence matrix in both layouts (int64 index and count each;
stacked narrow it takes 12, the rest a margin for the kernels' own arrays)."""
_MERGE_LAG = 2
"""Item blocks per thread a block's pairs may run ahead of the merges (see :func:`_paired_parts`)."""
_FAN_IN = 8
"""Inputs combined per task of a tree (:func:`_tree`)."""
_FOLD_PRIORITY = 1
"""Dask priority of a fold's steps (:func:`_folded`), above the tasks that feed it (0), so that
each value is folded in as soon as it is ready rather than after the tasks queued before it."""

_T = TypeVar("_T")


@dataclass
class BuildReport:
    """What a build counted and how long its stages took."""

    counts: dict[str, int] = field(default_factory=dict)
    """Sizes seen along the way (events read, kept, users, items, nonzeros, ...)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent per stage."""
    item_id_type: str = "int64"
    """Arrow type of the item ids."""
    state: dict[str, Any] = field(default_factory=dict)
    """How the kept rows an update starts from are laid out: ``buckets``, ``id_kinds``,
    ``newest_primary_ms`` (see :func:`update_build`)."""


@dataclass
class BuildResult:
    """A build's indicators table, in memory, with its report."""

    table: pa.Table
    """``item``, ``indicators`` (item ids, best first), ``scores`` (root LLR), ``popularity``
    (users per item) and ``trending`` (users per item in the trending window), one row per item
    in item id order."""
    report: BuildReport

    @property
    def counts(self) -> dict[str, int]:
        """The report's counts."""
        return self.report.counts

    @property
    def timings(self) -> dict[str, float]:
        """The report's stage timings."""
        return self.report.timings


def build_indicators(
    inputs: Sequence[str | EventFile],
    config: BuildConfig = BuildConfig(),
    *,
    show_progress: bool = False,
    scratch_url: str | None = None,
) -> BuildResult:
    """Compute every item's indicators from an events log, following the SPEC recipe, and return
    them in memory. To write a large build straight to storage use :func:`write_build`.

    Parameters
    ----------
    inputs
        CSV or Parquet paths, globs or fsspec URLs (or files from :func:`~daskrec.ingest.expand_inputs`).
    config
        Event selection, recent rows, LLR table, top k and threshold.
    show_progress
        Show a progress bar for each stage's Dask work.
    scratch_url
        Folder for intermediates that every worker can reach (default: a local temporary folder,
        fine for a LocalCluster); removed afterwards.

    Returns
    -------
    BuildResult

    Raises
    ------
    InputError
        Missing, empty or malformed input, or no events of the selected types.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from daskrec import IngestConfig, SynthConfig, generate_events
    >>> events = str(pathlib.Path(tempfile.mkdtemp()) / "events.csv")
    >>> generate_events(events, SynthConfig(events=5_000, seed=1))
    5000
    >>> result = build_indicators([events], BuildConfig(ingest=IngestConfig(event_types=None)))
    >>> result.table.column_names
    ['item', 'indicators', 'scores', 'popularity', 'trending']
    """
    with scratch.scratch_folder(scratch_url) as folder:
        report, parts = build_parts(inputs, config, folder, show_progress=show_progress)
        return BuildResult(table=pa.concat_tables([read_slice(url) for url in parts]), report=report)


def build_manifest(inputs: Sequence[str], config: BuildConfig, report: BuildReport) -> dict[str, Any]:
    """What a build read, how it was configured, what it counted and how long it took, with a
    fresh ``table_id`` naming the table it describes (an index records the id of the table it holds)."""
    from . import __version__

    return {
        "daskrec_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "table_id": uuid.uuid4().hex,
        "inputs": list(inputs),
        "options": dataclasses.asdict(config),
        "item_id_type": report.item_id_type,
        "counts": report.counts,
        "timings_s": report.timings,
        "state": report.state,
    }


def write_build(
    inputs: Sequence[str], out_dir: str, config: BuildConfig = BuildConfig(), *, show_progress: bool = False
) -> BuildReport:
    """Build the indicators of ``inputs`` straight into ``out_dir``, never holding the whole table.

    The build's intermediates go to a scratch folder inside ``out_dir`` (so workers of a remote
    cluster can reach it when ``out_dir`` is shared storage), removed afterwards, except each
    visitor's kept rows and the trending window's pairs: they stay in ``out_dir/state/`` for
    :func:`update_build`. The table is assembled from the item blocks' slices one at a time (or
    written whole by the one task that computes every item, and renamed into place), then
    committed as :func:`~daskrec.output.write_output` does: atomically, manifest last.

    Parameters
    ----------
    inputs
        CSV or Parquet paths, globs or fsspec URLs.
    out_dir
        Folder to write into (a path or fsspec URL); created if missing.
    config
        The build's options.
    show_progress
        Show progress bars.

    Returns
    -------
    BuildReport
        Counts and stage timings (also in the manifest).

    Raises
    ------
    InputError
        Missing, empty or malformed input, or no events of the selected types.
    """
    with scratch.scratch_folder(f"{out_dir.rstrip('/')}/.scratch-{uuid.uuid4().hex[:12]}") as folder:
        report, parts = build_parts(inputs, config, folder, show_progress=show_progress)
        _commit(out_dir, folder, parts, report, lambda: build_manifest(inputs, config, report))
    log.info("output: %d items written to %s", report.counts["items"], out_dir)
    return report


STATE_VERSION = 1
"""Version of the layout of the kept rows a build folder keeps for :func:`update_build`; a
folder with another (or none) must be built again once."""
_STATE = "state"


def state_bytes(out_dir: str) -> int:
    """Bytes of the state a build folder keeps for :func:`update_build` (0 without one): an
    update computes the indicators of all of it again."""
    fs, root = fsspec.core.url_to_fs(out_dir)
    return int(fs.du(f"{root}/{_STATE}")) if fs.exists(f"{root}/{_STATE}") else 0


def _commit(
    out_dir: str, folder: str, parts: list[str], report: BuildReport, manifest: Callable[[], dict[str, Any]], *, update: bool = False
) -> None:
    """Make a build (or update) in ``folder`` live in ``out_dir``: its kept rows and trending
    pairs become a new state generation there, its slices the table, and the manifest, written
    last, names the generation. Other generations are removed once it is in place. An update
    keeps the table it replaces beside the new one (:data:`~daskrec.output.PREVIOUS_FILE`)."""
    started = time.perf_counter()
    fs, root = fsspec.core.url_to_fs(out_dir)
    _, scratch_root = fsspec.core.url_to_fs(folder)
    generation = f"{_STATE}/{uuid.uuid4().hex[:12]}"
    fs.makedirs(f"{root}/{generation}", exist_ok=True)
    for name in ("kept", "trending"):
        fs.mv(f"{scratch_root}/{name}", f"{root}/{generation}/{name}", recursive=True)
    report.state.update(version=STATE_VERSION, path=generation)

    def finished() -> dict[str, Any]:  # called once the table is in place
        report.timings["output"] = round(time.perf_counter() - started, 3)
        return manifest()

    write_output(out_dir, parts, finished, moved=len(parts) == 1, keep_previous=update)  # a sole part is the whole table
    for other in fs.ls(f"{root}/{_STATE}", detail=False):
        if posixpath.basename(other.rstrip("/")) != posixpath.basename(generation):
            fs.rm(other, recursive=True)


def update_build(
    inputs: Sequence[str],
    out_dir: str,
    *,
    on_bad_rows: OnBadRows | None = None,
    events_store: Mapping[str, Any] | None = None,
    show_progress: bool = False,
) -> BuildReport:
    """Bring the build in ``out_dir`` up to date with the new events ``inputs``: the table and
    manifest written are those a full :func:`write_build` over the build's inputs followed by
    ``inputs``, with the build's options, would write.

    Only the new events are read. Each visitor's kept rows from the folder's state are followed
    by their new rows and cut to the most recent again (rows a visitor's new events push out of
    the window leave it), the trending window moves to the newest primary event, and the
    occurrences and indicators are computed again from the kept rows: every item's scores depend
    on the totals of the 2x2 tables, which nearly every new event changes. The manifest's
    ``updates`` lists each update with what it changed and how long it took. The table it
    replaces stays beside the new one (:data:`~daskrec.output.PREVIOUS_FILE`), so that
    :func:`daskrec.index.update_index` can send the index only the documents that changed.

    Parameters
    ----------
    inputs
        The new events: CSV or Parquet paths, globs or fsspec URLs, later than every event before
        them in input order (a visitor's rows with equal timestamps rank later rows first).
    out_dir
        A folder written by :func:`write_build` (or an update).
    on_bad_rows
        How malformed new rows are handled (default: as the build did).
    events_store
        Where ``inputs`` were exported from the service's event store (``index``, ``uuid``,
        ``through``: see :func:`daskrec.events.export_events`): kept in the manifest as
        ``events_store``, committed with the update, so that the next export starts after it.
        Later updates without it keep the last one.
    show_progress
        Show progress bars.

    Returns
    -------
    BuildReport
        Counts (over all events so far, and this update's ``users_changed``) and stage timings.

    Raises
    ------
    InputError
        ``out_dir`` holds no complete build, or one kept without the state an update needs (built
        before updates existed: build it again once); malformed or missing new events; text ids
        in a column the build read as integers.
    """
    complete_pending(out_dir)  # an update killed after its commit leaves only renames to do
    manifest = read_manifest(out_dir)
    state = manifest.get("state") or {}
    if state.get("version") != STATE_VERSION:
        raise InputError(
            f"holds a build without the state an update starts from (state version {state.get('version')}, "
            f"this daskrec needs {STATE_VERSION}); run `daskrec build` over all events once, then update it.",
            path=out_dir,
        )
    config = BuildConfig.from_dict(manifest["options"])
    if on_bad_rows is not None:
        config = dataclasses.replace(config, ingest=dataclasses.replace(config.ingest, on_bad_rows=on_bad_rows))
    files = expand_inputs(list(inputs))
    fingerprint = [[f.url, f.size] for f in files]
    updates = manifest.get("updates", [])
    if updates and updates[-1]["fingerprint"] == fingerprint:
        log.warning("update: %s already holds these files (same names and sizes) as its last update; nothing to do", out_dir)
        return BuildReport(counts=manifest["counts"], timings=manifest["timings_s"], item_id_type=manifest["item_id_type"], state=state)
    timings: dict[str, float] = {}
    with scratch.scratch_folder(f"{out_dir.rstrip('/')}/.scratch-{uuid.uuid4().hex[:12]}") as folder:
        with _stage("ingest", timings):
            recent, batch = _updated_rows(files, config, out_dir, state, folder, show_progress)
        _check_some_kept(recent.counts, config, files)
        for name in ("events_read", "events_skipped", *(f"skipped_bad_{c}" for c in BAD_ROW_CAUSES), "partitions"):
            recent.counts[name] += manifest["counts"][name]  # what was read, over every batch so far
        new_state = {**state, "newest_primary_ms": recent.newest}
        report, parts = _indicator_stages(recent, config, folder, timings, new_state, show_progress)
        report.counts["users_changed"] = batch["users_changed"]
        report.counts["item_rows_recomputed"] = report.counts["items"]

        def updated_manifest() -> dict[str, Any]:
            written = build_manifest([*manifest["inputs"], *inputs], config, report)
            written["options"] = manifest["options"]  # the build's; this batch's on_bad_rows is below
            written["previous_table_id"] = manifest.get("table_id")  # the table kept as PREVIOUS_FILE
            if (store := events_store or manifest.get("events_store")) is not None:
                written["events_store"] = dict(store)
            done = {
                "inputs": list(inputs),
                "fingerprint": fingerprint,
                "created": written["created"],
                "on_bad_rows": config.ingest.on_bad_rows,
                "counts": {**batch, "item_rows_recomputed": report.counts["items"]},
                "timings_s": report.timings,
            }
            written["updates"] = [*updates, done]
            return written

        _commit(out_dir, folder, parts, report, updated_manifest, update=True)
    log.info("update: %d users changed, %d items written to %s", batch["users_changed"], report.counts["items"], out_dir)
    return report


def _updated_rows(
    files: list[EventFile], config: BuildConfig, out_dir: str, state: dict[str, Any], folder: str, show_progress: bool
) -> tuple[_Recent, dict[str, int]]:
    """The ingest stage of an update: the new rows routed to the state's buckets, each visitor's
    kept rows followed by their new rows cut to the most recent, the trending pairs moved on;
    with what this batch read and changed."""
    id_kinds = IdKinds(**state["id_kinds"])
    n_buckets = int(state["buckets"])
    parts = read_partitions(files, config.ingest, id_kinds)
    routed = [f"{folder}/routed/part-{p:06d}.arrow" for p in range(len(parts))]
    stats = [delayed(_route_by_visitor)(part, n_buckets, url) for part, url in zip(parts, routed)]
    after_routing = delayed(_after)(stats, routed)
    before_batch = {"newest_primary": int(state["newest_primary_ms"])}
    newest = delayed(_newest)([*stats, before_batch])
    earlier = zip(*_bucket_files(f"{out_dir.rstrip('/')}/{state['path']}", n_buckets))
    kept, windows = _bucket_files(folder, n_buckets)
    buckets = [
        delayed(_updated_bucket)(after_routing, bucket, config.ingest, newest, before, url, window)
        for bucket, (before, url, window) in enumerate(zip(earlier, kept, windows))
    ]
    try:
        buckets, stats = materialise((buckets, stats), show_progress)
        sizes, stats = compute([delayed(_first)(b) for b in buckets], stats)
        vocabulary = _vocabulary(buckets)
    except StringIdsFound as found:
        raise InputError(
            "holds text ids where the build read integers; a build over all events would read them as text: "
            "run `daskrec build` over all events once.",
            path=", ".join(f.url for f in files),
            column=found.column,
        ) from None
    newest_read = _newest([*stats, before_batch])
    counts = {
        **_read_counts(stats),
        "events_kept": sum(kept_rows for kept_rows, _ in sizes),
        "partitions": len(parts),
        "trending_since_ms": _trending_since(newest_read, config.ingest.trending_days),
    }
    batch = {"events_read": counts["events_read"], "events_skipped": counts["events_skipped"],
             "users_changed": sum(changed for _, changed in sizes)}
    return _Recent(kept, windows, vocabulary, counts, newest_read), batch


def _updated_bucket(
    routed: list[str], bucket: int, config: IngestConfig, newest: int, before: tuple[str, str], url: str, window: str
) -> tuple[tuple[int, int], pd.Index]:
    """A bucket's kept rows and trending pairs (files ``before``) followed by its new rows, kept
    again (see :func:`_keep_bucket`); the rows kept and the visitors with new rows, and the kept
    rows' distinct items."""
    earlier_kept, earlier_window = before
    new_rows = scratch.read_routed(routed, bucket)
    earlier_rows = scratch.read_frame(earlier_kept).drop(columns="user")
    rows = pd.concat([earlier_rows, new_rows[earlier_rows.columns]], ignore_index=True)
    kept, items = _keep_bucket(rows, len(earlier_rows), scratch.read_frame(earlier_window), config, newest, url, window)
    return (kept, int(new_rows["visitorid"].nunique())), items


def build_parts(
    inputs: Sequence[str | EventFile], config: BuildConfig, folder: str, *, show_progress: bool = False
) -> tuple[BuildReport, list[str]]:
    """Run a build with its intermediates in ``folder``; return its report and the URLs of the
    output table's slices (Parquet, in item order, all with the same schema; a sole slice is the
    whole table in the output's encoding, see :func:`scratch.write_part`). The kept rows and
    the trending window's pairs stay in ``folder/kept`` and ``folder/trending`` (the state an
    update starts from, described by the report's ``state``).

    Raises
    ------
    InputError
        Missing, empty or malformed input, or no events of the selected types.
    """
    timings: dict[str, float] = {}
    files = expand_inputs(list(inputs))
    id_kinds = IdKinds()
    with _stage("ingest", timings):
        while True:
            try:
                recent = _recent_rows(files, config, id_kinds, folder, show_progress)
                break
            except StringIdsFound as found:
                log.info("ingest: %s holds text ids; reading it as strings", found.column)
                id_kinds = id_kinds.with_strings(found.column)
    _check_some_kept(recent.counts, config, files)
    state = {"buckets": len(recent.kept), "id_kinds": dataclasses.asdict(id_kinds), "newest_primary_ms": recent.newest}
    return _indicator_stages(recent, config, folder, timings, state, show_progress)


def _check_some_kept(counts: dict[str, int], config: BuildConfig, files: list[EventFile]) -> None:
    """Raise :class:`InputError` when no row of the selected types was kept."""
    if counts["events_kept"] == 0:
        wanted = "any type" if config.ingest.event_types is None else ", ".join(config.ingest.event_types)
        raise InputError(
            f"no rows of event type {wanted} in the input; check --event against the log's event column.",
            path=", ".join(f.url for f in files),
            column="event",
        )


def _indicator_stages(
    recent: _Recent, config: BuildConfig, folder: str, timings: dict[str, float], state: dict[str, Any], show_progress: bool
) -> tuple[BuildReport, list[str]]:
    """The occurrences and indicators stages from each bucket's kept rows and trending pairs."""
    with _stage("occurrences", timings):
        vocabulary, blocks, summary, item_counts, users = _occurrences(recent, config, folder, show_progress)
        work, entries = compute(summary.work, summary.entries)
        total_work = float(work.sum())
        usable, threads = worker_memory_bytes() // 2 - entries * _BYTES_PER_SHARED_ENTRY, scheduler_threads()
        shared = usable >= 0
        if shared:
            plan = co.split_by_work(work, min(len(work), _BLOCKS_PER_THREAD * threads))
        else:
            suffix_entries, row_sum = compute(summary.suffix_entries, summary.margins.row_sum)
            largest_margin = int(row_sum[: len(work)].max(initial=0))
            plan = co.split_by_work(
                suffix_entries, _paired_block_count(float(suffix_entries.sum()), (len(work), largest_margin), config, threads)
            )
        largest = max(stop - start for start, stop in plan)
        whole = shared and scheduler_workers() == 1 and pair_kernel_bytes(
            len(work), 1 + len(config.ingest.cross_event_types), config.indicators.top_k, threads, largest) <= usable
        del work
    with _stage("indicators", timings):
        n_parts = 1 if whole else len(plan)
        kind = "parquet" if n_parts == 1 else "arrow"  # a sole part is the whole table (scratch.write_part)
        parts = [f"{folder}/parts/part-{number:06d}.{kind}" for number in range(n_parts)]
        # With one worker and room for it beside the matrix, one task computes every item from
        # each pair of items once, on all the worker's threads (all_indicators: half the work of
        # the per-row kernel). Otherwise the item blocks share one copy of the occurrence matrix
        # if it fits a worker comfortably; if not, each item block gathers from every bucket's
        # occurrence file the rows of its users, each from its first item in the block on
        # (co.item_rows), takes their pairs with the items after them (pair_block), and hands
        # the later rows' candidates to their blocks through spill files.
        narrow = _narrow_counts(config)
        if not shared:
            tasks = _paired_parts(blocks, plan, (vocabulary, summary.margins, item_counts), config, (folder, parts), narrow)
        elif whole:
            log.info("indicators: every item in one task, each pair of items once, on %d threads", threads)
            rows = delayed(_all_rows)(blocks, threads, narrow)
            tasks = [delayed(_whole_parts)(rows, vocabulary, summary.margins, item_counts, threads, plan, config, parts[0])]
        else:
            rows = delayed(_all_rows)(blocks, threads, narrow)
            tasks = [
                delayed(_indicator_part)(
                    rows, vocabulary, summary.margins, item_counts, (start, stop), config, url, len(plan) == 1
                )
                for (start, stop), url in zip(plan, parts)
            ]
        block_counts: list[dict[str, int]] = compute(materialise(tasks, show_progress))[0]
        item_id_type = compute(delayed(_arrow_type)(vocabulary))[0]
    counts = {
        **recent.counts,
        "users": int(compute(users)[0]),
        "work": int(total_work),
        "item_blocks": len(plan),
        **{name: sum(c[name] for c in block_counts) for name in block_counts[0]},
    }
    log.info("build: %s items, %s with indicators", counts["items"], counts["items_with_indicators"])
    return BuildReport(counts=counts, timings=timings, item_id_type=item_id_type, state=state), parts


# ------------------------------------------------------------------------------------- the graphs


@dataclass(frozen=True)
class _Recent:
    """What the ingest stage leaves: every bucket's kept rows and trending pairs, and its counts."""

    kept: list[str]
    """Each bucket's kept rows (see :func:`_keep_bucket`)."""
    windows: list[str]
    """Each bucket's trending pairs (see :func:`_keep_bucket`)."""
    vocabulary: Delayed
    """Every kept item id, sorted (``pd.Index``; an item's code is its position), persisted: the
    union of the buckets' own, each found while its rows were in memory rather than read back
    from its file (reading them back took ~8 s of tasks at 50M events). Only the union is kept,
    not the buckets' (~80 MB at 50M)."""
    counts: dict[str, int]
    """Events read, skipped (by cause) and kept, partitions, and the trending window's start."""
    newest: int
    """Timestamp of the newest primary event read (ms; :data:`_NO_TIME` without one)."""


def _recent_rows(
    files: list[EventFile], config: BuildConfig, id_kinds: IdKinds, folder: str, show_progress: bool
) -> _Recent:
    """Read, route rows to buckets by visitor, keep each visitor's recent rows and the trending
    window's (visitor, item) pairs."""
    parts = read_partitions(files, config.ingest, id_kinds)
    n_buckets = len(parts)
    routed = [f"{folder}/routed/part-{p:06d}.arrow" for p in range(n_buckets)]
    stats = [delayed(_route_by_visitor)(part, n_buckets, url) for part, url in zip(parts, routed)]
    # The buckets wait for every partition to be routed; only file names pass between them.
    after_routing = delayed(_after)(stats, routed)
    newest = delayed(_newest)(stats)
    kept, windows = _bucket_files(folder, n_buckets)
    buckets = [
        delayed(_recent_bucket)(after_routing, bucket, config.ingest, newest, url, window)
        for bucket, (url, window) in enumerate(zip(kept, windows))
    ]
    buckets, stats = materialise((buckets, stats), show_progress)
    sizes, stats = compute([delayed(_first)(b) for b in buckets], stats)
    vocabulary = _vocabulary(buckets)
    newest_read = _newest(stats)
    counts = {
        **_read_counts(stats),
        "events_kept": sum(sizes),
        "partitions": len(parts),
        "trending_since_ms": _trending_since(newest_read, config.ingest.trending_days),
    }
    return _Recent(kept, windows, vocabulary, counts, newest_read)


def _vocabulary(buckets: list[Delayed]) -> Delayed:
    """The union of the buckets' items (the second of each bucket's result: a tree of merges),
    persisted."""
    union: Delayed = materialise(_tree([delayed(_second)(b) for b in buckets], _union_items), False)
    return union


def _bucket_files(folder: str, n_buckets: int) -> tuple[list[str], list[str]]:
    """Where each bucket's kept rows and trending pairs go."""
    return (
        [f"{folder}/kept/bucket-{b:06d}.arrow" for b in range(n_buckets)],
        [f"{folder}/trending/bucket-{b:06d}.arrow" for b in range(n_buckets)],
    )


def _read_counts(stats: list[dict[str, int]]) -> dict[str, int]:
    """Events read and skipped (by cause); warns of skipped rows."""
    counts = {
        "events_read": sum(s["events_read"] for s in stats),
        "events_skipped": sum(s["events_skipped"] for s in stats),
    }
    for cause in BAD_ROW_CAUSES:
        counts[f"skipped_bad_{cause}"] = sum(s[f"skipped_bad_{cause}"] for s in stats)
    if counts["events_skipped"]:
        by_column = {c: counts[f"skipped_bad_{c}"] for c in BAD_ROW_CAUSES if counts[f"skipped_bad_{c}"]}
        warnings.warn(
            f"skipped {counts['events_skipped']} malformed rows (by first bad column: {by_column}); "
            "the manifest counts them. Use on_bad_rows='error' to stop at the first one instead.",
            DataWarning,
            stacklevel=5,
        )
    return counts


def _occurrences(
    recent: _Recent, config: BuildConfig, folder: str, show_progress: bool
) -> tuple[Delayed, list[str], Delayed, Delayed, Delayed]:
    """Item vocabulary, the occurrence blocks' files, their combined summary, the item counts
    (:class:`ItemCounts`) and users with primary rows; persisted."""
    raw = [f"{folder}/occurrences/raw-{b:06d}.arrays" for b in range(len(recent.kept))]
    fields = 1 + len(config.ingest.cross_event_types)
    written = [
        delayed(_write_occurrences)(rows, window, recent.vocabulary, config.indicators, fields, url)
        for rows, window, url in zip(recent.kept, recent.windows, raw)
    ]
    counted = _folded(written, _sum_bucket_counts)
    item_counts, users = delayed(_first)(counted), delayed(_second)(counted)
    if config.indicators.downsamples:
        # The draws need every bucket's users per item: the blocks are summarised once those are summed.
        final = [f"{folder}/occurrences/final-{b:06d}.arrays" for b in range(len(recent.kept))]
        summaries = [
            delayed(_summarise_block)(source, target, item_counts.popularity, config.indicators, fields)
            for source, target in zip(raw, final)
        ]
        summary = _folded(summaries, co.combine_summaries)
    else:
        final, summary = raw, delayed(_third)(counted)
    persisted: tuple[Delayed, ...] = materialise((summary, item_counts, users), show_progress)
    return recent.vocabulary, final, persisted[0], persisted[1], persisted[2]  # the vocabulary is persisted already


def _first(pair: tuple[_T, Any]) -> _T:
    return pair[0]


def _second(pair: tuple[Any, _T]) -> _T:
    return pair[1]


def _third(triple: tuple[Any, Any, _T]) -> _T:
    return triple[2]


def _tree(values: list[Delayed], combine: Callable[[list[_T]], _T]) -> Delayed:
    """``combine`` over ``values`` as a tree of tasks of at most :data:`_FAN_IN` inputs each."""
    while len(values) > 1:
        values = [delayed(combine)(values[i : i + _FAN_IN]) for i in range(0, len(values), _FAN_IN)]
    return values[0]


def _folded(values: list[Delayed], combine: Callable[[list[_T]], _T]) -> Delayed:
    """``combine`` over ``values`` as a chain of tasks, each folding one more value into the
    running result: for item-wide arrays (~44 MB a bucket at 1M items), whose partial results a
    tree holds until its last input is done. Under a 1.1 GB limit at 100M events the tree held up
    to seven buckets' arrays and six partial sums (~0.5 GB); the chain holds the running sum and
    the few buckets just written."""
    folded = values[0]
    with annotate(priority=_FOLD_PRIORITY):
        for value in values[1:]:
            folded = delayed(combine)([folded, value])
    return folded


def _narrow_counts(config: BuildConfig) -> bool:
    """Whether int16 holds every occurrence count: a count is at most a visitor's kept rows."""
    return config.ingest.recent <= np.iinfo(np.int16).max


def _paired_block_count(suffix_entries: float, items: tuple[int, int], config: BuildConfig, threads: int) -> int:
    """Item blocks when the matrix is not shared: a few per thread for balance, more when a
    block's share of the ``suffix_entries`` it gathers (see :class:`co.BlockSummary`) and its own
    arrays (:func:`pair_block_bytes`) would not fit a task's share of memory. ``items``: how many,
    and the largest item margin."""
    n_items, largest_margin = items
    fields, top_k = 1 + len(config.ingest.cross_event_types), config.indicators.top_k
    narrow = _narrow_counts(config)
    fixed = pair_block_bytes(n_items, fields, top_k, 0, largest_margin)
    per_row = pair_block_bytes(n_items, fields, top_k, 1, largest_margin) - fixed
    room = task_memory_bytes() - fixed
    if room <= 0:
        log.warning("indicators: a task's memory (%d bytes) is less than a block of rows needs; one item a block", task_memory_bytes())
        return max(1, n_items)
    gathered = suffix_entries * _BYTES_PER_SUFFIX_ENTRY * (1 if narrow else 2) + n_items * per_row
    return max(1, min(n_items, max(_BLOCKS_PER_THREAD * threads, math.ceil(gathered / room))))


# ------------------------------------------------------------------------------ per-task functions


def _route_by_visitor(frame: pd.DataFrame, n_buckets: int, url: str) -> dict[str, int]:
    """Write a partition's good rows to ``url`` in ``n_buckets`` batches by a hash of the visitor
    id; count what was read and skipped."""
    bad = frame["bad_column"].to_numpy()
    stats = {"events_read": len(frame), "events_skipped": int(np.count_nonzero(bad))}
    for code, cause in enumerate(BAD_ROW_CAUSES, start=1):
        stats[f"skipped_bad_{cause}"] = int(np.count_nonzero(bad == code))
    # Positions are not written: a bucket reads its batches in partition order, and a batch keeps
    # its partition's row order, so a bucket's rows arrive in input order.
    table = pa.Table.from_pandas(frame[list(_ROUTED)], preserve_index=False)
    if stats["events_skipped"]:
        table = table.filter(bad == 0)
    primary_times = table.column("timestamp").to_numpy()[table.column("matrix").to_numpy() == 0]
    stats["newest_primary"] = int(primary_times.max()) if len(primary_times) else _NO_TIME
    scratch.write_routed(url, *by_visitor_bucket(table, n_buckets))
    return stats


_ROUTED = ("visitorid", "itemid", "timestamp", "matrix")
"""The columns of a partition's rows that go to the buckets."""
_NO_TIME = np.iinfo(np.int64).min
_DAY_MS = 86_400_000


def _newest(stats: list[dict[str, int]]) -> int:
    """The newest primary timestamp of the routed partitions."""
    return max(s["newest_primary"] for s in stats)


def _trending_since(newest: int, days: float) -> int:
    """First timestamp of the trending window: ``days`` before the newest primary event."""
    return _NO_TIME if newest == _NO_TIME else newest - round(days * _DAY_MS)


def _after(_: Any, value: _T) -> _T:
    """``value``, once the first argument (a dependency) is done."""
    return value


def _recent_bucket(routed: list[str], bucket: int, config: IngestConfig, newest: int, url: str, window: str) -> tuple[int, pd.Index]:
    """Keep the recent rows and trending pairs of a bucket's visitors, gathered from every
    partition (see :func:`_keep_bucket`); the rows kept and their distinct items."""
    rows = scratch.read_routed(routed, bucket)
    return _keep_bucket(rows, 0, _NO_PAIRS, config, newest, url, window)


_NO_PAIRS = pd.DataFrame({"visitorid": [], "itemid": [], "timestamp": np.array([], dtype=np.int64)})


def _keep_bucket(
    rows: pd.DataFrame, first_unseen: int, earlier_pairs: pd.DataFrame, config: IngestConfig, newest: int, url: str, window: str
) -> tuple[int, pd.Index]:
    """Write to ``url`` the recent rows of the visitors of ``rows`` (all their rows, in input
    order), and to ``window`` their distinct (visitor, item) primary pairs at or after the
    trending window's start, each with its latest timestamp: those of ``earlier_pairs`` (a window
    file of earlier rows, which already counts ``rows[:first_unseen]``) and of the rows after
    them; return the rows kept and their distinct items, sorted (the bucket's share of the item
    vocabulary, found while the rows are in memory: reading every bucket's items back took ~8 s
    of tasks at 50M events)."""
    since = _trending_since(newest, config.trending_days)
    unseen = rows.iloc[first_unseen:]
    in_window = unseen[(unseen["matrix"].to_numpy() == 0) & (unseen["timestamp"].to_numpy() >= since)]
    pairs = in_window[["visitorid", "itemid", "timestamp"]]
    if len(earlier_pairs):
        pairs = pd.concat([earlier_pairs[earlier_pairs["timestamp"].to_numpy() >= since], pairs], ignore_index=True)
    scratch.write_frame(window, latest_pairs(pairs))
    kept = keep_recent(rows, config.recent)  # rows in input order
    scratch.write_frame(url, kept)
    return len(kept), _distinct_sorted(kept["itemid"])


# Integer item ids are most often numbers below a few times their count (catalogue numbers, or
# codes given by another system), and then marks in a table indexed by the id find the distinct
# ones without hashing or sorting: per bucket of the 50M-event log (1.27M kept rows) 5–10 ms
# against 29–50 ms for pandas' unique and sort. Other ids (text, negative, or sparse over a wide
# range) take pandas' hash table. (Codes by the same kind of table were no faster than
# get_indexer on the vocabulary, whose hash table a worker builds once and keeps: ~25 ms a bucket
# either way.)
_DENSE_IDS_PER_ROW = 4
"""Integer ids are marked in a table when the largest is below this many times their number (plus
:data:`_DENSE_IDS_FLOOR`): the table then costs at most a few bytes per id."""
_DENSE_IDS_FLOOR = 1 << 16


def _distinct_sorted(ids: pd.Series) -> pd.Index:
    """The distinct values of ``ids``, sorted."""
    values = ids.to_numpy() if isinstance(ids.dtype, np.dtype) and ids.dtype.kind in "iu" and len(ids) else None
    highest = int(values.max()) if values is not None else -1
    if values is not None and values.min() >= 0 and highest < _DENSE_IDS_PER_ROW * len(ids) + _DENSE_IDS_FLOOR:
        seen = np.zeros(highest + 1, dtype=bool)
        seen[values] = True
        marked: pd.Index = pd.Index(np.flatnonzero(seen).astype(values.dtype))
        return marked
    # The column's own unique (one hash pass): an Index's checks first whether it is unique.
    distinct: pd.Index = pd.Index(ids.unique()).sort_values()
    return distinct


def _union_items(items: list[pd.Index]) -> pd.Index:
    """The union of sorted item indexes, sorted (a merge)."""
    union = items[0]
    for more in items[1:]:
        union = union.union(more)
    return union


def _write_occurrences(
    kept: str, window: str, vocabulary: pd.Index, config: IndicatorConfig, fields: int, url: str
) -> tuple[ItemCounts, int, co.BlockSummary | None]:
    """Write a bucket's occurrences (users x all items; with cross types, users with primary rows
    x joint columns, field ``f`` at ``f·n + item``) as scored: counts for the co-occurrence table,
    binarised for the users table; return its item counts (users per primary item, and its
    trending pairs per item), its users and its summary. When the table downsamples, the counts
    are written as they are (with the users' keys) and the summary is None: the draws need every
    bucket's users per item first (:func:`_summarise_block`)."""
    rows = scratch.read_frame(kept)
    trending_items = scratch.read_frame(window)["itemid"]
    n_items = len(vocabulary)
    user = rows["user"].to_numpy()
    # One lookup for the kept rows and the trending pairs (items of the window without a kept
    # row have no output row and are left out).
    codes = vocabulary.get_indexer(pd.Index(pd.concat([rows["itemid"], trending_items], ignore_index=True)))
    column, trending_codes = codes[: len(rows)], codes[len(rows) :]
    trending = np.bincount(trending_codes[trending_codes >= 0], minlength=n_items).astype(np.int64)
    if fields > 1:
        matrix = rows["matrix"].to_numpy().astype(np.int64)
        # Only users with primary rows take part: anyone else co-occurs with nothing.
        primary_user = np.zeros(int(user.max()) + 1 if len(user) else 0, dtype=bool)
        primary_user[user[matrix == 0]] = True
        code = np.cumsum(primary_user) - 1
        keep = primary_user[user]
        rows, user, column = rows[keep], code[user[keep]], column[keep] + matrix[keep] * n_items
    n_users = int(user.max()) + 1 if len(user) else 0
    block = co.occurrence_block(user, column, n_users, fields * n_items)
    per_item = np.bincount(block.indices, minlength=block.shape[1])[:n_items].astype(co.COUNT_DTYPE)
    counts = ItemCounts(popularity=per_item, trending=trending)
    if config.downsamples:
        first_rows = rows.drop_duplicates("user")
        scratch.write_block(url, block, co.user_keys(first_rows.sort_values("user")["visitorid"]))
        return counts, n_users, None
    # Scored and summarised here, while the block is in memory: writing the counts for another
    # task to read back, binarise and write again took ~8 s of tasks at 50M events.
    if config.llr_table == "users":
        block = co.binarise(block)
    return counts, n_users, _written_block(block, config, fields, url)


def _summarise_block(
    source: str, target: str, users_per_item: np.ndarray, config: IndicatorConfig, fields: int
) -> co.BlockSummary:
    """Binarise and downsample a bucket's occurrence counts (the users table, downsampling: see
    :func:`_write_occurrences`) from ``source`` into ``target``; return their summary."""
    block, keys = scratch.read_block(source)
    assert keys is not None  # written by _write_occurrences when downsampling
    block = co.downsample(co.binarise(block), keys, users_per_item, config.max_per_user, config.max_per_item, config.seed)
    return _written_block(block, config, fields, target)


def _written_block(block: sp.csr_array, config: IndicatorConfig, fields: int, url: str) -> co.BlockSummary:
    """Write a bucket's scored occurrences to ``url`` in both layouts; return their summary."""
    occurrences = co.stack_blocks([block])
    scratch.write_block(url, occurrences.by_user, by_item=occurrences.by_item)
    return co.summarise(occurrences, config.llr_table, fields)


def _sum_arrays(arrays: list[np.ndarray]) -> np.ndarray:
    """Element-wise sum."""
    total = arrays[0].copy()
    for array in arrays[1:]:
        total += array
    return total


def _sum_bucket_counts(
    counted: list[tuple[ItemCounts, int, co.BlockSummary | None]],
) -> tuple[ItemCounts, int, co.BlockSummary | None]:
    """Buckets' item counts, users and summaries (None when downsampling), summed. One fold for
    all three (:func:`_folded`), so that a bucket's item-wide arrays are folded in soon after it
    is written: three trees over the same results left every bucket's item counts waiting for the
    last bucket (~0.8 GB at 100M events), which the worker then spilled to disk and read back."""
    summaries = [summary for _, _, summary in counted if summary is not None]
    return (
        _sum_item_counts([item_counts for item_counts, _, _ in counted]),
        sum(users for _, users, _ in counted),
        co.combine_summaries(summaries) if summaries else None,
    )


def _sum_item_counts(counts: list[ItemCounts]) -> ItemCounts:
    """Element-wise sums of item counts."""
    return ItemCounts(
        popularity=_sum_arrays([c.popularity for c in counts]), trending=_sum_arrays([c.trending for c in counts])
    )


def _all_rows(blocks: list[str], threads: int, narrow: bool) -> co.Occurrences:
    """The whole occurrence matrix, from its block files (stacked on ``threads`` threads: the
    task runs alone, before the kernel that needs it), one block mapped at a time; int32
    indices where they fit and int16 counts if ``narrow`` (see :func:`co.stack_occurrences`).
    Mapped rather than read: reading copied each file into fresh buffers, and scipy widened its
    int32 indices beside int64 pointers, before the stacking copied them again (at 50M events,
    inside the build's task, four alternating builds: 2.19–3.00 s, median 2.31 s, against
    1.51–2.13 s, median 1.84 s mapped)."""
    n_users, column_entries = scratch.read_sizes(blocks[0])
    for url in blocks[1:]:
        more_users, more_entries = scratch.read_sizes(url)
        n_users += more_users
        column_entries += more_entries
    return co.stack_occurrences((scratch.map_layouts(url) for url in blocks), n_users, column_entries, threads, narrow=narrow)


def _paired_parts(  # noqa: PLR0913
    blocks: list[str],
    plan: list[tuple[int, int]],
    tables: tuple[Delayed, Delayed, Delayed],
    config: BuildConfig,
    where: tuple[str, list[str]],
    narrow: bool,
) -> list[Delayed]:
    """The tasks that write the output's parts when the occurrence matrix is not shared: each item
    block of ``plan`` takes its pairs with the items after it (:func:`_pair_part`), in any order,
    from the occurrence ``blocks``' files; then each block's rows are merged with what the blocks
    before it found for them (:func:`_merged_part`). ``tables``: the vocabulary, the margins and
    the item counts; ``where``: the scratch folder and the parts' files."""
    vocabulary, margins, item_counts = tables
    folder, parts = where
    cuts = np.array([start for start, _ in plan] + [plan[-1][1]], dtype=np.int64)
    spills = [f"{folder}/spill/block-{number:06d}.arrow" for number in range(len(plan))]
    scoring = (margins, delayed(pair_tables)(margins))
    paired: list[Delayed] = []
    merged: list[Delayed] = []
    # A block's pairs wait for the merge of the block _MERGE_LAG threads before it: left to
    # themselves, the scheduler ran every pair task first and half the merges after the last (5 s
    # of a 100M-event build's 40 s indicators stage).
    lag = _MERGE_LAG * scheduler_threads()
    for number, (spill, url) in enumerate(zip(spills, parts)):
        ready = blocks if number < lag else delayed(_after)(merged[number - lag], blocks)
        paired.append(delayed(_pair_part)(ready, number, scoring, cuts, config, narrow, spill))
        # A block's merge needs the spill files of every block up to it: it waits for its own
        # pairs and the merge before it (which waited for theirs). Depending on each earlier
        # block's pairs directly made the graph quadratic: 6 s to build it for 146 blocks.
        nonzeros = paired[-1] if number == 0 else delayed(_after)(merged[-1], paired[-1])
        merged.append(delayed(_merged_part)(
            spills[: number + 1], nonzeros, number, (vocabulary, margins, item_counts), cuts, config, url
        ))
    return merged


def _pair_part(  # noqa: PLR0913
    blocks: list[str], number: int, scoring: tuple[co.Marginals, PairTables], cuts: np.ndarray, config: BuildConfig, narrow: bool, url: str
) -> int:
    """Item block ``number``'s pairs with the items after it (:func:`pair_block`; ``scoring``: the
    margins and their tables), from its users' rows in every occurrence block's file, each from
    its first item in the block on (:func:`co.item_rows`); writes to ``url`` its rows'
    candidates, then each later block's, one group a block; returns the nonzeros it counted."""
    margins, tables = scoring
    start, stop = int(cuts[number]), int(cuts[number + 1])
    occurrences = co.item_rows([functools.partial(scratch.map_layouts, block) for block in blocks], (start, stop), narrow=narrow)
    block = pair_block(occurrences, margins, tables, start, stop, config.indicators.top_k, config.indicators.min_llr)
    del occurrences
    later = block.later.by_block(cuts[number + 1 :])
    scratch.write_groups(url, (vars(group) for group in itertools.chain([block.own], later)))
    return block.cooccurrence_nonzeros


def _merged_part(  # noqa: PLR0913
    spills: list[str],
    nonzeros: int,
    number: int,
    tables: tuple[pd.Index, co.Marginals, ItemCounts],
    cuts: np.ndarray,
    config: BuildConfig,
    url: str,
) -> dict[str, int]:
    """Item block ``number``'s indicators from its own candidates and those the blocks before it
    found for it (group ``number - k`` of block ``k``'s spill file), written to ``url`` as a part
    of the output table (the whole table if it is the only block); returns what it counted."""
    vocabulary, margins, item_counts = tables
    candidates = (Candidates(**scratch.read_group(spill, number - k)) for k, spill in enumerate(spills))
    block = merged_block(int(cuts[number]), int(cuts[number + 1]), candidates, margins, config.indicators.top_k, nonzeros)
    return _written_part([block], vocabulary, item_counts, config, url, whole=len(cuts) == 2)


def _indicator_part(  # noqa: PLR0913
    occurrences: co.Occurrences,
    vocabulary: pd.Index,
    margins: co.Marginals,
    item_counts: ItemCounts,
    items: tuple[int, int],
    config: BuildConfig,
    url: str,
    whole: bool,
) -> dict[str, int]:
    """Indicators of the items ``[start, stop)`` from the whole occurrence matrix; written to
    ``url`` as a part of the output table (the ``whole`` table if it is the only block). Returns
    what it counted."""
    start, stop = items
    chosen = config.indicators
    block = indicator_block(occurrences, margins, start, stop, chosen.top_k, chosen.min_llr)
    return _written_part([block], vocabulary, item_counts, config, url, whole)


def _whole_parts(
    occurrences: co.Occurrences,
    vocabulary: pd.Index,
    margins: co.Marginals,
    item_counts: ItemCounts,
    threads: int,
    plan: list[tuple[int, int]],
    config: BuildConfig,
    url: str,
) -> dict[str, int]:
    """Indicators of every item from the whole occurrence matrix, each pair of items once, on
    ``threads`` threads (:func:`all_indicators`); written to ``url`` as the whole output table,
    one item block of ``plan`` at a time. Returns what it counted."""
    chosen = config.indicators
    blocks = all_indicators(occurrences, margins, chosen.top_k, chosen.min_llr, threads, plan)
    return _written_part(blocks, vocabulary, item_counts, config, url, whole=True)


def _written_part(
    blocks: Iterable[IndicatorBlock], vocabulary: pd.Index, item_counts: ItemCounts, config: BuildConfig, url: str, whole: bool
) -> dict[str, int]:
    """Write consecutive ``blocks`` to ``url`` as a part of the output table (the ``whole`` table,
    in the output's layout: :func:`scratch.write_part`), made one block at a time; return what
    they counted, summed."""
    counted: list[dict[str, int]] = []

    def slices() -> Iterator[pa.Table]:
        for block in blocks:
            counted.append(_block_counts(block, config))
            yield indicator_table(vocabulary, block, item_counts, config.ingest.cross_event_types)

    scratch.write_part(url, slices(), whole=whole)
    return {name: sum(c[name] for c in counted) for name in counted[0]}


def _block_counts(block: IndicatorBlock, config: BuildConfig) -> dict[str, int]:
    """What an item block counted: items, co-occurrence nonzeros, items with indicators and indicators per field."""
    counts = {
        "items": block.stop - block.start,
        "cooccurrence_nonzeros": block.cooccurrence_nonzeros,
        "items_with_indicators": int(np.count_nonzero(block.counts)),
        "indicators": int(block.counts.sum()),
    }
    for name, field in zip(config.ingest.cross_event_types, block.fields[1:]):
        counts[indicator_field(name)] = int(field.counts.sum())
    return counts


def _arrow_type(vocabulary: pd.Index) -> str:
    """The Arrow type of the item ids."""
    return str(pa.array(vocabulary[:1].to_numpy()).type)


# ------------------------------------------------------------------------------------ assembling


@dataclass(frozen=True)
class ItemCounts:
    """Counts of every item (by code) stored with its indicators for backfill."""

    popularity: np.ndarray
    """Users whose kept history has the item."""
    trending: np.ndarray
    """Users with a primary event on the item in the trending window (see
    :attr:`~daskrec.config.IngestConfig.trending_days`)."""


def indicator_table(
    vocabulary: pd.Index, block: IndicatorBlock, item_counts: ItemCounts, cross_types: Sequence[str] = ()
) -> pa.Table:
    """The indicators of a block's items as an Arrow table in item code order (pure).

    Parameters
    ----------
    vocabulary
        Every item id, by code.
    block
        Indicators of the item codes ``[block.start, block.stop)``.
    item_counts
        Popularity and trending counts of every item code.
    cross_types
        Names of the block's cross-occurrence fields, in order.

    Returns
    -------
    pyarrow.Table
        ``item``, ``indicators`` (list of item ids, best first), ``scores`` (list of float64),
        then ``<type>_indicators`` and ``<type>_scores`` per cross type, ``popularity`` and
        ``trending`` (int64, see :class:`ItemCounts`), one row per item of the block.
    """
    ids = vocabulary.to_numpy()
    columns: dict[str, pa.Array] = {ITEM_COLUMN: pa.array(ids[block.start : block.stop])}
    for event_type, field in zip((None, *cross_types), block.fields):
        offsets = pa.array(np.r_[0, np.cumsum(field.counts)].astype(np.int32))
        indicator_ids = pa.array(ids[field.item_codes.astype(np.int64)], type=columns[ITEM_COLUMN].type)
        name = indicator_field(event_type)
        columns[name] = pa.ListArray.from_arrays(offsets, indicator_ids)
        columns[scores_field(name)] = pa.ListArray.from_arrays(offsets, pa.array(field.scores, type=pa.float64()))
    for name in ("popularity", "trending"):
        columns[name] = pa.array(np.asarray(getattr(item_counts, name)[block.start : block.stop], dtype=np.int64))
    return pa.table(columns)


# --------------------------------------------------------------------------------------- helpers


@contextmanager
def _stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Time a stage into ``timings`` and log it."""
    started = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - started, 3)
    log.info("%s: done in %.2fs", name, timings[name])
