"""Each item's indicators: co-occurrence row → root-LLR scores → top k, fused in one kernel.

For a block of item rows ``[start, stop)`` the kernel computes row ``i`` of ``cooc = occᵀ·occ``
as a sparse accumulation over the users who have item ``i`` (diagonal skipped), scores each
nonzero with the root LLR (:mod:`daskrec.llr`, margins' logarithms computed once per item), and keeps the best ``top_k`` in a bounded heap.
Nothing dense of size items x items, and no sort of a whole row, is ever made; the scratch space
is one int64 vector of length ``n_items`` per task.

When one process holds the whole matrix, :func:`all_indicators` gives every item's rows to the
bit from about half the work, taking each unordered pair of items once (``C = AᵀA`` and its LLR
tables are symmetric); it keeps a heap for every row, so it needs more memory
(:func:`pair_kernel_bytes`). The pipeline picks it when that fits (:mod:`daskrec.pipeline`).
When not even the matrix fits, :func:`pair_block` takes the pairs of one block of rows with the
items after them, from only those rows' users, and hands the later rows' candidates on
(:class:`Candidates`) to be merged in their own block (:func:`merged_block`): the same bits
again, in memory bounded by the block (:func:`pair_block_bytes`).

Ranking: score descending; equal scores rank the smaller item code first. Item codes follow the
sorted order of the original ids, so ties go to the smaller item id (numeric for integer ids,
lexicographic for string ids), whatever the partitioning. A score of exactly 0 (and anything
below ``min_score``) is never an indicator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils
from numba.core.typing.templates import Signature
from numba.extending import intrinsic

from .cooccurrence import Marginals, Occurrences, first_at_least
from .llr import llr_from_entropies, llr_from_margins, negated, signed_root, xlogx

__all__ = [
    "Candidates",
    "FieldIndicators",
    "IndicatorBlock",
    "PairBlock",
    "PairTables",
    "all_indicators",
    "indicator_block",
    "merged_block",
    "pair_block",
    "pair_block_bytes",
    "pair_kernel_bytes",
    "pair_tables",
]


@dataclass(frozen=True)
class FieldIndicators:
    """One field's indicators of a block's item rows, as a ragged array."""

    counts: np.ndarray
    """Indicators per row (int64, length ``stop - start``)."""
    item_codes: np.ndarray
    """All rows' indicator item codes, best first within a row (int64, ``0..n-1``)."""
    scores: np.ndarray
    """Their root-LLR scores (float64)."""


@dataclass(frozen=True)
class IndicatorBlock:
    """The indicators of item rows ``[start, stop)``: the primary field, then one per cross type."""

    start: int
    stop: int
    fields: tuple[FieldIndicators, ...]
    cooccurrence_nonzeros: int
    """Nonzeros of these rows over every field (the primary diagonal left out); a block of
    :func:`all_indicators` counts each primary pair twice in the block of its lower item."""

    @property
    def counts(self) -> np.ndarray:
        """The primary field's indicators per row."""
        return self.fields[0].counts

    @property
    def item_codes(self) -> np.ndarray:
        """The primary field's indicator item codes."""
        return self.fields[0].item_codes

    @property
    def scores(self) -> np.ndarray:
        """The primary field's scores."""
        return self.fields[0].scores


def indicator_block(
    occurrences: Occurrences, margins: Marginals, start: int, stop: int, top_k: int, min_score: float
) -> IndicatorBlock:
    """Indicators of the items with codes in ``[start, stop)``.

    Parameters
    ----------
    occurrences
        The occurrence matrix (counts, or binarised for the users table); with cross types its
        columns are joint (see :class:`~daskrec.cooccurrence.Marginals`).
    margins
        The 2x2 tables' marginals for every item and field.
    start, stop
        Item code range of this block.
    top_k
        Indicators kept per item and field at most.
    min_score
        Smallest root-LLR kept (scores of exactly 0 never are).

    Returns
    -------
    IndicatorBlock
    """
    by_user, by_item = occurrences.by_user, occurrences.by_item
    n_fields = len(margins.totals)
    n_items = occurrences.n_items // n_fields
    counts, item_codes, scores, nonzeros = _indicator_rows(
        (by_user.indptr, by_user.indices, by_user.data, by_item.indptr, by_item.indices, by_item.data),
        margins.row_sum,
        margins.column_sum,
        margins.totals.astype(np.int64),
        n_items,
        start,
        stop,
        top_k,
        float(min_score),
    )
    fields = _ragged(counts, item_codes, scores, top_k, n_items)
    return IndicatorBlock(start=start, stop=stop, fields=fields, cooccurrence_nonzeros=int(nonzeros))


def _ragged(counts: np.ndarray, item_codes: np.ndarray, scores: np.ndarray, top_k: int, n_items: int) -> tuple[FieldIndicators, ...]:
    """Each field's rows as a ragged array, from ``top_k`` slots per row (``counts[f, row]`` of
    them used), with joint column codes made the field's own item codes."""
    keep = np.arange(top_k)[None, :] < counts[:, :, None]
    return tuple(
        FieldIndicators(
            counts=counts[f],
            item_codes=item_codes[f].reshape(-1, top_k)[keep[f]] - f * n_items,
            scores=scores[f].reshape(-1, top_k)[keep[f]],
        )
        for f in range(len(counts))
    )


_jit = numba.njit(nogil=True, cache=True, error_model="numpy")
_Function = TypeVar("_Function", bound=Callable[..., object])


class _Decorator(Protocol):
    """A decorator that gives back a function of the same type."""

    def __call__(self, function: _Function, /) -> _Function: ...


# _nrt is numba's own (private) switch of reference counting, absent from its type stubs.
_no_counts: _Decorator = numba.njit(nogil=True, cache=True, error_model="numpy", _nrt=False)  # type: ignore[call-overload]
"""For the heap's steps, which allocate nothing: with numba's reference counting on, every array
passed to a compiled call is counted (an atomic increment and decrement each), which, offer by
offer, took 14–23% of the pair kernel's samples (perf, 10M events)."""


@_jit
def _worse(score_a: float, item_a: int, score_b: float, item_b: int) -> bool:
    """Whether candidate a ranks below candidate b (lower score; equal score, larger code)."""
    return score_a < score_b or (score_a == score_b and item_a > item_b)


# A heap is row ``row`` of a 2-D score array and of a 2-D item array, passed whole with the row's
# index: a row view made per offer is reference-counted like an argument (see _no_counts).


@_no_counts
def _sift_down(heap_score: np.ndarray, heap_item: np.ndarray, row: int, size: int, node: int) -> None:
    """Restore heap ``row`` (worst candidate at the root) below ``node``."""
    while True:
        worst = node
        for child in (2 * node + 1, 2 * node + 2):
            if child < size and _worse(heap_score[row, child], heap_item[row, child], heap_score[row, worst], heap_item[row, worst]):
                worst = child
        if worst == node:
            return
        heap_score[row, node], heap_score[row, worst] = heap_score[row, worst], heap_score[row, node]
        heap_item[row, node], heap_item[row, worst] = heap_item[row, worst], heap_item[row, node]
        node = worst


@_no_counts
def _offer(heap_score: np.ndarray, heap_item: np.ndarray, row: int, size: int, top_k: int, score: float, item: int) -> int:  # noqa: PLR0913
    """Offer a candidate to heap ``row`` of at most ``top_k`` (worst kept at the root); return its new size."""
    if size < top_k:
        node = size
        heap_score[row, node] = score
        heap_item[row, node] = item
        while node > 0:
            parent = (node - 1) // 2
            if not _worse(heap_score[row, node], heap_item[row, node], heap_score[row, parent], heap_item[row, parent]):
                break
            heap_score[row, node], heap_score[row, parent] = heap_score[row, parent], heap_score[row, node]
            heap_item[row, node], heap_item[row, parent] = heap_item[row, parent], heap_item[row, node]
            node = parent
        return size + 1
    if _worse(heap_score[row, 0], heap_item[row, 0], score, item):
        heap_score[row, 0] = score
        heap_item[row, 0] = item
        _sift_down(heap_score, heap_item, row, size, 0)
    return size


@_jit
def _drain(heap_score: np.ndarray, heap_item: np.ndarray, row: int, size: int, out_scores: np.ndarray, out_items: np.ndarray, base: int) -> None:  # noqa: PLR0913
    """Empty heap ``row`` into ``out[base : base + size]``, best first (the worst is popped first,
    into the last slot)."""
    for slot in range(size - 1, -1, -1):
        out_scores[base + slot] = heap_score[row, 0]
        out_items[base + slot] = heap_item[row, 0]
        heap_score[row, 0] = heap_score[row, slot]
        heap_item[row, 0] = heap_item[row, slot]
        _sift_down(heap_score, heap_item, row, slot, 0)


@_jit
def _margin_logs(column_sum: np.ndarray, totals: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xLogX of each field's total, and of each joint column's margin and of its total less it:
    once per item rather than once per co-occurrence (see llr_from_margins)."""
    xlogx_total = np.empty(len(totals), dtype=np.float64)
    for f in range(len(totals)):
        xlogx_total[f] = xlogx(float(totals[f]))
    xlogx_column = np.empty(len(column_sum), dtype=np.float64)
    xlogx_column_rest = np.empty(len(column_sum), dtype=np.float64)
    for c in range(len(column_sum)):
        xlogx_column[c] = xlogx(float(column_sum[c]))
        xlogx_column_rest[c] = xlogx(float(totals[c // n_items] - column_sum[c]))
    return xlogx_total, xlogx_column, xlogx_column_rest


@_jit
def _indicator_rows(  # noqa: PLR0913 - a compiled kernel takes arrays, not objects
    matrix: tuple[np.ndarray, ...],
    row_sum: np.ndarray,
    column_sum: np.ndarray,
    totals: np.ndarray,
    n_items: int,
    start: int,
    stop: int,
    top_k: int,
    min_score: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Rows ``[start, stop)`` of every field, each row's co-occurrences accumulated and scored in
    turn; ``matrix`` is the occurrences' ``by_user`` then ``by_item`` (indptr, indices, data)."""
    user_indptr, user_items, user_counts, item_indptr, item_users, item_counts = matrix
    n_fields = len(totals)
    n_columns = len(item_indptr) - 1
    n_rows = stop - start
    cooc_row = np.zeros(n_columns, dtype=np.int64)
    touched = np.empty(n_columns, dtype=np.int64)
    counts = np.zeros((n_fields, n_rows), dtype=np.int64)
    out_items = np.empty((n_fields, n_rows * top_k), dtype=np.int64)
    out_scores = np.empty((n_fields, n_rows * top_k), dtype=np.float64)
    heap_score = np.empty((n_fields, top_k), dtype=np.float64)
    heap_item = np.empty((n_fields, top_k), dtype=np.int64)
    sizes = np.zeros(n_fields, dtype=np.int64)
    xlogx_total, xlogx_column, xlogx_column_rest = _margin_logs(column_sum, totals, n_items)
    row_i = np.empty(n_fields, dtype=np.int64)
    xlogx_row = np.empty(n_fields, dtype=np.float64)
    xlogx_row_rest = np.empty(n_fields, dtype=np.float64)
    nonzeros = 0
    for i in range(start, stop):
        for f in range(n_fields):
            row_i[f] = row_sum[f * n_items + i]
            xlogx_row[f] = xlogx(float(row_i[f]))
            xlogx_row_rest[f] = xlogx(float(totals[f] - row_i[f]))
        # Row i of occᵀ·occ over the joint columns, primary diagonal skipped: Σ over users u of
        # item i of occ[u, i]·occ[u, :].
        n_touched = 0
        for p in range(item_indptr[i], item_indptr[i + 1]):
            user = item_users[p]
            weight = item_counts[p]
            for q in range(user_indptr[user], user_indptr[user + 1]):
                j = user_items[q]
                if j == i:
                    continue
                if cooc_row[j] == 0:
                    touched[n_touched] = j
                    n_touched += 1
                cooc_row[j] += weight * user_counts[q]
        nonzeros += n_touched
        # Score every nonzero and keep each field's best top_k in a heap whose root is the worst kept.
        sizes[:] = 0
        for t in range(n_touched):
            j = touched[t]
            f = 0 if j < n_items else j // n_items  # no division in the common primary case
            k11 = cooc_row[j]
            cooc_row[j] = 0
            k12 = row_i[f] - k11
            k21 = column_sum[j] - k11
            k22 = totals[f] - k11 - k12 - k21
            value = llr_from_margins(
                float(k11),
                float(k12),
                float(k21),
                float(k22),
                xlogx_total[f],
                xlogx_row[f],
                xlogx_row_rest[f],
                xlogx_column[j],
                xlogx_column_rest[j],
            )
            score = signed_root(value, float(k11), float(k12), float(k21), float(k22))
            if not (score > 0.0 and score >= min_score):
                continue
            sizes[f] = _offer(heap_score, heap_item, f, sizes[f], top_k, score, j)
        base = (i - start) * top_k
        for f in range(n_fields):
            counts[f, i - start] = sizes[f]
            _drain(heap_score, heap_item, f, sizes[f], out_scores[f], out_items[f], base)
    return counts, out_items, out_scores, nonzeros


# ------------------------------------------------------------------ every item at once, by pairs


_PENDING_ROWS = 128
"""Heap rows per block of pending candidates: a block's heaps (~1.2 KB a row at top 100) fit in a core's L2."""
_PENDING_SLOTS = 256
"""Candidates a block holds before they are offered to its heaps (512 took 14 MB more of a 50M-event
build's kernel and no less time: 8.15–9.26 s against 8.06–8.38 s, alternating)."""
_XLOGX_TABLE = 1 << 20
"""Largest count whose xLogX the pair kernel reads from a table (the tables take 24 MB at most)."""
_USERS_AHEAD = 16
"""How far ahead in a row's users the pair kernel asks for a user's cursor and row bounds
(:func:`_prefetch`): 16 and its span's first entry took a 50M-event kernel from a median of
9.72 s to 8.92 s with the pipeline's int32 matrix (five alternating rounds, 2026-12-01); with
an int64 one 9.91 to 8.95 s, and 9.28 s for 32 and it, 9.61 and 10.04 s for 16 or 32 alone."""
_CANDIDATES_AHEAD = 16
"""How far ahead in a row's candidates the pair kernel asks for their logarithm tables' entries
(:func:`_prefetch`): 16 took a 50M-event kernel from a median of 10.46 s to 9.61 s (five
alternating rounds, 2026-12-01, the pipeline's int32 matrix), 32 to 9.92 s; 8 took 11.25 s to
10.39 s in four rounds of another set."""


def _prefetch_signature(typingctx: object, array: numba.types.Array, index: numba.types.Integer) -> tuple[Signature, Callable[..., object]]:
    """Numba's typing and code of :func:`_prefetch`."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]  # numba's code-generation hook
        array_type = signature.args[0]
        target = context.make_array(array_type)(context, builder, args[0])
        index = context.cast(builder, args[1], signature.args[1], numba.types.intp)  # any integer type
        address = builder.bitcast(cgutils.get_item_pointer(context, builder, array_type, target, [index]), cgutils.voidptr_t)
        word = ir.IntType(32)
        hint = builder.module.declare_intrinsic(
            "llvm.prefetch", (cgutils.voidptr_t,), ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t, word, word, word])
        )
        builder.call(hint, [address, word(0), word(3), word(1)])  # read, highest locality, data cache
        return context.get_dummy_value()

    return numba.types.void(array, index), codegen


_prefetch = cast(Callable[[np.ndarray, int], None], intrinsic(_prefetch_signature))  # typed as compiled code calls it
"""``_prefetch(array, index)`` in compiled code: ask the CPU to bring ``array[index]`` into its
caches (``llvm.prefetch``: read, keep in every level), without waiting for it. Numba has no
prefetch of its own (numba/numba#3769). A hint only: it never faults and changes no result, so
an index past the end costs nothing but the hint."""


def pair_kernel_bytes(n_items: int, n_fields: int, top_k: int, threads: int, slice_rows: int) -> int:
    """Memory :func:`all_indicators` holds beyond the occurrence matrix, at most: every thread's
    resident primary heaps (``top_k`` slots of a score and an int32 code, then a size per row,
    from the thread's first row on), its record of each such row (margin, entropy, threshold: 32
    bytes), its pending candidates (:data:`_PENDING_SLOTS` of 16 bytes per :data:`_PENDING_ROWS`
    rows) and its accumulator with the gathered copy of a row's nonzeros (48 bytes a column); a
    nonzero count per row, every row's cross-occurrence output, and one slice's output
    (``slice_rows`` rows, every field), and the :class:`PairTables` (the logarithm tables, a
    32-byte record an item, 16 bytes a column). A thread's user cursors (8 bytes a user, 4 in a
    narrow matrix) are left to the matrix's own estimate."""
    heaps = threads * n_items * (top_k * (8 + 4) + 8 + 32) + n_items * 8
    pending = threads * (n_items // _PENDING_ROWS + 1) * _PENDING_SLOTS * 16
    accumulators = threads * n_fields * n_items * 48
    row_output = top_k * (8 + 8) + 8
    tables = 24 * _XLOGX_TABLE + n_items * 32 + n_fields * n_items * 16
    return tables + heaps + pending + accumulators + (n_fields - 1) * n_items * row_output + n_fields * slice_rows * (row_output + 8)


def pair_block_bytes(n_items: int, n_fields: int, top_k: int, rows: int, largest_margin: int) -> int:
    """Memory :func:`pair_block` holds beyond the rows it is given, at most, for a block of
    ``rows`` rows: its accumulator with the gathered copy of a row's nonzeros (56 bytes a column),
    its heaps (``top_k`` slots of a score and an int32 code, a size, a 32-byte record and a
    threshold per row), its pending candidates, and its rows' outputs (every field's ``top_k``
    slots of an int64 code and a score, then as candidates); and the :class:`PairTables`, shared
    by every block (a 32-byte record an item, 16 bytes a column, 24 bytes a count up to the
    ``largest_margin`` of an item, or :data:`_XLOGX_TABLE`)."""
    columns = n_fields * n_items
    per_row = top_k * (8 + 4) + 8 + 32 + 8 + _PENDING_SLOTS * 16 // _PENDING_ROWS + n_fields * top_k * (16 + 16)
    tables = n_items * 32 + columns * 16 + 24 * (min(largest_margin, _XLOGX_TABLE) + 1)
    return columns * 56 + tables + rows * per_row


def all_indicators(
    occurrences: Occurrences,
    margins: Marginals,
    top_k: int,
    min_score: float,
    threads: int,
    slices: Sequence[tuple[int, int]] | None = None,
) -> Iterator[IndicatorBlock]:
    """The indicators of every item, as :func:`indicator_block` gives them to the bit, from half
    the work: the primary table is symmetric (``C = AᵀA``, and both LLR tables give item ``i``
    and item ``j`` the same margins), so each unordered pair of items is accumulated and its four
    logarithms taken once, then scored in each orientation with that orientation's own order of
    operations and its own sign test, and offered to both items' heaps. Cross-occurrence columns
    (``AᵀB``, not symmetric) are accumulated per row as before.

    Rows are cut into ``threads`` contiguous ranges of about equal pair work (:data:`_WORK_SAMPLE`),
    each run by a Python thread in a ``nogil`` kernel with its own heaps for every row from its
    first on (a row's candidates come from the rows before it). Then the heaps are merged, one
    block per consecutive range of ``slices`` (default: all items in one), the next one on the
    threads while the caller uses the one it was given, so that at most two slices' outputs are
    held at a time. A block's ``cooccurrence_nonzeros`` counts each primary pair twice in the
    block of its lower item (the sum over blocks is the matrix's).
    Where the time went, and what the kernel does about it (measured with ``perf`` at 10M events):
    a row's nonzeros' other rows are gathered before they are scored, so their cache misses
    overlap; each user's cursor and span are asked for before they are read (:func:`_prefetch`,
    :data:`_USERS_AHEAD`); the logarithms of most counts are read from tables, their entries asked
    for :data:`_CANDIDATES_AHEAD` candidates early; and the candidates for later rows wait in
    blocks of :data:`_PENDING_ROWS` rows, offered to those rows' heaps together while they are in
    cache. The memory this takes is :func:`pair_kernel_bytes`. ``occurrences`` must hold every
    item's column, with each user's items in ascending order.

    Raises
    ------
    ValueError
        The primary margins are not symmetric (``row_sum ≠ column_sum`` on the primary columns).
    """
    n_fields = len(margins.totals)
    n_items = occurrences.n_items // n_fields
    _check_symmetric(margins, n_items)
    matrix = _kernel_matrix(occurrences)
    totals = margins.totals.astype(np.int64)
    work = _pair_work(matrix[0], matrix[1], n_items, _WORK_SAMPLE)
    tables = pair_tables(margins).arrays()
    bounds = np.searchsorted(np.cumsum(work), np.arange(1, threads) * (work.sum() / threads), side="right")
    starts = np.r_[0, bounds].astype(np.int64)
    stops = np.r_[bounds, n_items].astype(np.int64)
    heap_first = np.r_[0, np.cumsum(n_items - starts)].astype(np.int64)  # thread t's rows [starts[t], n) in the heaps
    heaps = _Heaps(
        score=np.empty((heap_first[-1], top_k), dtype=np.float64),
        item=np.empty((heap_first[-1], top_k), dtype=np.int32),
        size=np.zeros(heap_first[-1], dtype=np.int64),
    )
    row_nonzeros = np.zeros(n_items, dtype=np.int64)
    cross = n_fields - 1  # cross rows are final as soon as their row is done: kept for every row
    cross_counts = np.zeros((cross, n_items), dtype=np.int64)
    cross_items = np.empty((cross, n_items * top_k), dtype=np.int64)
    cross_scores = np.empty((cross, n_items * top_k), dtype=np.float64)

    def run(t: int) -> None:
        rows = slice(heap_first[t], heap_first[t + 1])
        _pair_rows(
            matrix, (margins.row_sum, margins.column_sum, totals), tables, n_items, (int(starts[t]), int(stops[t]), n_items),
            top_k, float(min_score), (heaps.score[rows], heaps.item[rows], heaps.size[rows]), row_nonzeros,
            cross_counts, cross_items, cross_scores, 0,
        )

    def merged(pool: ThreadPoolExecutor, start: int, stop: int) -> Callable[[], IndicatorBlock]:
        """Start merging the heaps of rows ``[start, stop)`` on the pool; the block, once they are merged."""
        counts = np.zeros((n_fields, stop - start), dtype=np.int64)
        items = np.empty((n_fields, (stop - start) * top_k), dtype=np.int64)
        scores = np.empty((n_fields, (stop - start) * top_k), dtype=np.float64)
        cuts = np.linspace(start, stop, threads + 1).astype(np.int64)
        merges = [
            pool.submit(_merge_rows, starts, heap_first, (heaps.score, heaps.item, heaps.size), int(cuts[t]), int(cuts[t + 1]),
                        start, top_k, counts[0], items[0], scores[0])
            for t in range(threads)
        ]

        def block() -> IndicatorBlock:
            for merge in merges:
                merge.result()
            for f in range(1, n_fields):
                counts[f] = cross_counts[f - 1, start:stop]
                items[f] = cross_items[f - 1, start * top_k:stop * top_k]
                scores[f] = cross_scores[f - 1, start * top_k:stop * top_k]
            return IndicatorBlock(start=start, stop=stop, fields=_ragged(counts, items, scores, top_k, n_items),
                                  cooccurrence_nonzeros=int(row_nonzeros[start:stop].sum()))

        return block

    spans = list(slices or [(0, n_items)])
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, range(threads)))
        following = merged(pool, *spans[0])
        for k in range(len(spans)):
            block = following()
            if k + 1 < len(spans):
                # The next slice's heaps are merged while the caller uses this one: the build
                # encodes a slice into Parquet on one thread, the other idle until then (at 50M
                # events the stage's tail after the kernel took 3.4 s where it took 4.2).
                following = merged(pool, *spans[k + 1])
            yield block


@dataclass(frozen=True)
class PairTables:
    """What scoring a pair reads of the margins, worked out once per build rather than per block
    of rows (at a million items their logarithms took ~0.1 s a block; :func:`pair_tables`)."""

    xlogx_total: np.ndarray
    """xLogX of each field's total."""
    xlogx_column: np.ndarray
    """Of each joint column's margin."""
    xlogx_column_rest: np.ndarray
    """Of its field's total less its margin."""
    records: np.ndarray
    """Per primary item, what a pair reads of its other item side by side, so that the random
    read of a row costs one cache miss, not three (measured: those misses were half the kernel's
    time): its margin, its entropy (row and column alike, the table being symmetric, in the order
    ``llr_from_margins`` computes it), -inf (the slot of the threshold of a resident row's heap),
    and a fourth slot unused, so that no record straddles two cache lines."""
    xlogx_count: np.ndarray
    """xLogX of the counts a primary pair's table holds most often (see :func:`_xlogx_tables`)."""
    xlogx_rest: np.ndarray
    """And of the total less their sums."""

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The tables in the kernel's order."""
        return (self.xlogx_total, self.xlogx_column, self.xlogx_column_rest, self.records, self.xlogx_count, self.xlogx_rest)


def pair_tables(margins: Marginals) -> PairTables:
    """The tables of :class:`PairTables` for these margins."""
    n_items = len(margins.row_sum) // len(margins.totals)
    totals = margins.totals.astype(np.int64)
    xlogx_total, xlogx_column, xlogx_column_rest = _margin_logs(margins.column_sum, totals, n_items)
    records = np.empty((n_items, 4), dtype=np.float64)
    records[:, 0] = margins.row_sum[:n_items]
    records[:, 1] = xlogx_total[0] - xlogx_column[:n_items] - xlogx_column_rest[:n_items]
    records[:, 2] = -np.inf
    records[:, 3] = 0.0
    xlogx_count, xlogx_rest = _xlogx_tables(int(margins.row_sum[:n_items].max(initial=0)), int(totals[0]))
    return PairTables(xlogx_total, xlogx_column, xlogx_column_rest, records, xlogx_count, xlogx_rest)


@dataclass(frozen=True)
class _Heaps:
    """The pair kernel's resident heaps: per heap row, ``top_k`` slots of score and item code, and
    the size."""

    score: np.ndarray
    item: np.ndarray
    size: np.ndarray


def _check_symmetric(margins: Marginals, n_items: int) -> None:
    """Raise ``ValueError`` unless the primary table's row and column margins are equal."""
    if not np.array_equal(margins.row_sum[:n_items], margins.column_sum[:n_items]):
        raise ValueError("the primary table's row and column margins differ: it is not symmetric")


def _kernel_matrix(occurrences: Occurrences) -> tuple[np.ndarray, ...]:
    """The pair kernel's matrix: ``by_user`` (each user's items ascending) then ``by_item`` as
    (indptr, indices, data), as int32 positions with int16 counts (a matrix stacked narrow: 12
    bytes an entry instead of 32) or all int64: two compiled specialisations, not one per mix; the
    kernel's arithmetic is int64 either way."""
    by_user, by_item = occurrences.by_user, occurrences.by_item
    if not by_user.has_sorted_indices:
        by_user = by_user.sorted_indices()
    arrays = (by_user.indptr, by_user.indices, by_user.data, by_item.indptr, by_item.indices, by_item.data)
    positions, occurrence_counts = (*arrays[0:2], *arrays[3:5]), (arrays[2], arrays[5])
    narrow = all(a.dtype == np.int32 for a in positions) and all(a.dtype == np.int16 for a in occurrence_counts)
    return arrays if narrow else tuple(np.asarray(a, dtype=np.int64) for a in arrays)


# ------------------------------------------------------ a block of rows by pairs, in bounded memory


@dataclass(frozen=True)
class Candidates:
    """Indicator candidates of item rows, in no particular order."""

    rows: np.ndarray
    """The item code of the row each is a candidate of (int32)."""
    items: np.ndarray
    """The candidate's joint column code (int32: field ``f``'s item ``j`` is ``f·n + j``)."""
    scores: np.ndarray
    """Its root-LLR score (float64)."""

    def by_block(self, cuts: np.ndarray) -> Iterator[Candidates]:
        """These candidates grouped by the row ranges ``[cuts[k], cuts[k+1])``, one group a range,
        each made when asked for (rows outside every range are dropped)."""
        order, bounds = _counting_order(self.rows, np.asarray(cuts, dtype=np.int64))
        for first, stop in zip(bounds[:-1], bounds[1:]):
            chosen = order[first:stop]
            yield Candidates(self.rows[chosen], self.items[chosen], self.scores[chosen])


@dataclass(frozen=True)
class PairBlock:
    """What :func:`pair_block` finds for the item rows ``[start, stop)``."""

    start: int
    stop: int
    own: Candidates
    """Every field's best ``top_k`` of each row of the block from the pairs it took: final for
    the cross fields, to be merged with the earlier blocks' ``later`` for the primary one."""
    later: Candidates
    """Primary candidates of the rows after the block, from their pairs with the block's rows."""
    cooccurrence_nonzeros: int
    """Nonzeros of the rows' pairs with later items, each primary pair counted twice."""


def pair_block(  # noqa: PLR0913
    occurrences: Occurrences, margins: Marginals, tables: PairTables, start: int, stop: int, top_k: int, min_score: float
) -> PairBlock:
    """The pairs ``(i, j)`` with ``i`` in ``[start, stop)`` and ``j > i`` (and the cross columns),
    each scored once in each orientation as :func:`all_indicators` scores them: what a build that
    cannot hold every row's heap does, one block of rows at a time. The block's rows keep their
    best ``top_k`` in heaps; a later row's candidates that pass the score test are returned for
    its own block to merge (:func:`merged_block`), since its threshold is not known yet.

    ``occurrences`` needs only, for the users of the block's items, their items from their first
    one in the block on (ascending; :func:`~daskrec.cooccurrence.item_rows` gathers that), and
    the block's columns in item layout.

    Raises
    ------
    ValueError
        The primary table is not symmetric, or the joint columns do not fit int32 codes.
    """
    n_fields = len(margins.totals)
    n_items = occurrences.n_items // n_fields
    _check_symmetric(margins, n_items)
    if occurrences.n_items > np.iinfo(np.int32).max:
        raise ValueError(f"{occurrences.n_items} item columns do not fit the candidates' int32 codes")
    totals = margins.totals.astype(np.int64)
    n_rows = stop - start
    heaps = _Heaps(
        score=np.empty((n_rows, top_k), dtype=np.float64),
        item=np.empty((n_rows, top_k), dtype=np.int32),
        size=np.zeros(n_rows, dtype=np.int64),
    )
    row_nonzeros = np.zeros(n_rows, dtype=np.int64)
    counts = np.zeros((n_fields, n_rows), dtype=np.int64)
    items = np.empty((n_fields, n_rows * top_k), dtype=np.int64)
    scores = np.empty((n_fields, n_rows * top_k), dtype=np.float64)
    later_rows, later_items, later_scores, n_later = _pair_rows(
        _kernel_matrix(occurrences), (margins.row_sum, margins.column_sum, totals), tables.arrays(), n_items, (start, stop, stop), top_k,
        float(min_score), (heaps.score, heaps.item, heaps.size), row_nonzeros, counts[1:], items[1:], scores[1:], start,
    )
    first = np.array([start], dtype=np.int64)
    _merge_rows(first, np.array([0, n_rows], dtype=np.int64), (heaps.score, heaps.item, heaps.size), start, stop, start, top_k,
                counts[0], items[0], scores[0])
    del heaps
    # Worst first: offered in that order to an empty heap whose root is its worst, each new
    # candidate stays where it lands (best first, each would climb to the root).
    keep = (np.arange(top_k)[None, :] < counts[:, :, None]).ravel()[::-1]
    own = Candidates(
        rows=np.tile(np.repeat(np.arange(start, stop, dtype=np.int32), top_k), n_fields)[::-1][keep],
        items=items.ravel()[::-1][keep].astype(np.int32),  # cross columns come as joint codes
        scores=scores.ravel()[::-1][keep],
    )
    return PairBlock(
        start=start, stop=stop, own=own,
        later=Candidates(later_rows[:n_later].copy(), later_items[:n_later].copy(), later_scores[:n_later].copy()),
        cooccurrence_nonzeros=int(row_nonzeros.sum()),
    )


def merged_block(  # noqa: PLR0913
    start: int, stop: int, candidates: Iterable[Candidates], margins: Marginals, top_k: int, cooccurrence_nonzeros: int
) -> IndicatorBlock:
    """The indicators of the rows ``[start, stop)``: each field's best ``top_k`` of their
    candidates (their block's ``own`` and the earlier blocks' ``later``: :func:`pair_block`)."""
    n_fields = len(margins.totals)
    n_items = len(margins.row_sum) // n_fields
    n_rows = stop - start
    heap_rows = n_fields * n_rows
    heaps = (np.empty((heap_rows, top_k), dtype=np.float64), np.empty((heap_rows, top_k), dtype=np.int32),
             np.zeros(heap_rows, dtype=np.int64))
    threshold = np.full(heap_rows, -np.inf)
    for group in candidates:
        _offer_candidates(heaps, threshold, top_k, (group.rows, group.items, group.scores), start, n_rows, n_items)
    counts = heaps[2].reshape(n_fields, n_rows).copy()
    items = np.empty((n_fields, n_rows * top_k), dtype=np.int64)
    scores = np.empty((n_fields, n_rows * top_k), dtype=np.float64)
    _drain_all(heaps, n_fields, n_rows, top_k, items, scores)
    return IndicatorBlock(start=start, stop=stop, fields=_ragged(counts, items, scores, top_k, n_items),
                          cooccurrence_nonzeros=cooccurrence_nonzeros)


@_jit
def _offer_candidates(  # noqa: PLR0913
    heaps: tuple[np.ndarray, ...], threshold: np.ndarray, top_k: int, candidates: tuple[np.ndarray, ...], start: int, n_rows: int, n_items: int
) -> None:
    """Offer candidates (rows, joint items, scores) to the heaps of rows ``start..start+n_rows-1``,
    field ``f``'s at ``f·n_rows`` on."""
    heap_score, heap_item, heap_size = heaps
    rows, items, scores = candidates
    for c in range(len(rows)):
        item = items[c]
        heap_row = (0 if item < n_items else item // n_items) * n_rows + rows[c] - start
        _keep_best(heap_score, heap_item, heap_size, threshold, heap_row, top_k, -np.inf, scores[c], item)


@_jit
def _drain_all(heaps: tuple[np.ndarray, ...], n_fields: int, n_rows: int, top_k: int, out_items: np.ndarray, out_scores: np.ndarray) -> None:
    """Every heap into ``out[f, row·top_k ...]``, best first."""
    heap_score, heap_item, heap_size = heaps
    for f in range(n_fields):
        for row in range(n_rows):
            heap_row = f * n_rows + row
            _drain(heap_score, heap_item, heap_row, heap_size[heap_row], out_scores[f], out_items[f], row * top_k)


@_jit
def _counting_order(rows: np.ndarray, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An order of ``rows`` grouped by the ranges ``[cuts[k], cuts[k+1])`` (stable), and each
    group's bounds in it: a counting sort, in one pass to count and one to place."""
    n_ranges = len(cuts) - 1
    range_of = np.empty(len(rows), dtype=np.int64)
    sizes = np.zeros(n_ranges + 1, dtype=np.int64)
    for c in range(len(rows)):
        k = np.searchsorted(cuts, rows[c], side="right") - 1
        range_of[c] = k if 0 <= k < n_ranges else n_ranges  # outside every range: a last group, dropped
        sizes[range_of[c]] += 1
    bounds = np.zeros(n_ranges + 2, dtype=np.int64)
    bounds[1:] = np.cumsum(sizes)
    placed = bounds[:-1].copy()
    order = np.empty(len(rows), dtype=np.int64)
    for c in range(len(rows)):
        order[placed[range_of[c]]] = c
        placed[range_of[c]] += 1
    return order, bounds[: n_ranges + 1]


@_jit
def _xlogx_tables(largest_margin: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """xLogX of the counts a primary pair's table holds most often, so that scoring a pair reads
    its logarithms rather than taking them (the same function, so the same bits): of ``0..m`` for
    k11, k12 and k21, and of ``total - s`` for k22 by ``s = k11 + k12 + k21`` in ``0..2m``, with
    ``m`` the largest item margin but at most :data:`_XLOGX_TABLE`."""
    m = min(largest_margin, _XLOGX_TABLE)
    xlogx_count = np.empty(m + 1, dtype=np.float64)
    for k in range(m + 1):
        xlogx_count[k] = xlogx(float(k))
    xlogx_rest = np.empty(2 * m + 1, dtype=np.float64)
    for k in range(2 * m + 1):
        xlogx_rest[k] = xlogx(float(total - k))
    return xlogx_count, xlogx_rest


@_no_counts
def _xlogx_read(table: np.ndarray, index: int, value: int) -> float:
    """xLogX of ``value``: ``table[index]`` when the table holds it (see :func:`_xlogx_tables`)."""
    if index < len(table):
        return float(table[index])
    return xlogx(float(value))


_WORK_SAMPLE = 8
"""Every how many users :func:`all_indicators` counts the pair work it splits the rows by: the
split only balances the threads (the output does not depend on it), and counting every user's
entries took 0.13–0.70 s of one thread at 50M events while the other idled. One user in eight
splits that log's work within 0.01% of the exact halves (and quarters)."""


@_jit
def _pair_work(user_indptr: np.ndarray, user_items: np.ndarray, n_items: int, every: int) -> np.ndarray:
    """Per primary item, the entries its row accumulates when each pair is taken once: over its
    users, their entries after it (later primary items and every cross column), counted over
    every ``every``-th user (an estimate in an ``every``-th of the time, exact for 1)."""
    work = np.zeros(n_items, dtype=np.int64)
    for user in range(0, len(user_indptr) - 1, every):
        stop = user_indptr[user + 1]
        for q in range(user_indptr[user], stop):
            item = user_items[q]
            if item >= n_items:
                break
            work[item] += stop - q - 1
    return work


@_jit
def _pair_rows(  # noqa: PLR0913 - a compiled kernel takes arrays, not objects
    matrix: tuple[np.ndarray, ...],
    margins: tuple[np.ndarray, ...],
    tables: tuple[np.ndarray, ...],
    n_items: int,
    rows: tuple[int, int, int],
    top_k: int,
    min_score: float,
    heaps: tuple[np.ndarray, ...],
    row_nonzeros: np.ndarray,
    cross_counts: np.ndarray,
    cross_items: np.ndarray,
    cross_scores: np.ndarray,
    first_row: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Rows ``[start, stop)`` with ``rows = (start, stop, resident_stop)`` (``margins``: row and
    column sums, totals; ``tables``: :class:`PairTables`' arrays, in order): each primary pair
    ``i < j`` scored both ways, into the heaps of rows ``start..resident_stop-1`` (``heaps``:
    :class:`_Heaps`' arrays, row ``r`` at ``r - start``)
    and, for a later row ``j``, into the spilled candidates returned (row ``j``, item ``i``,
    score, and how many) if it passes the score test; cross columns into ``cross_*`` (field ``f``
    at ``f - 1``) at once. ``row_nonzeros[i - first_row]`` gets row ``i``'s nonzeros with each
    pair counted twice in its lower row: a random write per pair to count it in both rows cost
    ~20%; the cross outputs are indexed from ``first_row`` too."""
    start, stop, resident_stop = rows
    user_indptr, user_items, user_counts, item_indptr, item_users, item_counts = matrix
    row_sum, column_sum, totals = margins
    heap_score, heap_item, heap_size = heaps
    xlogx_total, xlogx_column, xlogx_column_rest, records, xlogx_count, xlogx_rest = tables
    n_fields = len(totals)
    n_columns = len(item_indptr) - 1
    n_users = len(user_indptr) - 1
    cooc_row = np.zeros(n_columns, dtype=np.int64)
    touched = np.empty(n_columns, dtype=np.int64)
    cursor = np.full(n_users, -1, dtype=user_indptr.dtype)  # a user's entry of the current row (-1: not met yet)
    most_users = 0
    for c in range(n_items):
        most_users = max(most_users, item_indptr[c + 1] - item_indptr[c])
    span = np.empty((most_users, 2), dtype=np.int64)  # a row's users' entries after it: [first, stop)
    # The resident rows' records (see PairTables.records), their own copy: the third slot is the
    # worst score the row's heap keeps once full, raised as it fills. A later row's is read from
    # ``records``, where it stays -inf.
    resident = records[start:resident_stop].copy()
    entropy, threshold = resident[:, 1], resident[:, 2]
    pair_count = np.empty(n_columns, dtype=np.int64)
    other = np.empty((n_columns, 3), dtype=np.float64)
    xlogx_row = np.empty(n_fields, dtype=np.float64)
    xlogx_row_rest = np.empty(n_fields, dtype=np.float64)
    cross_score = np.empty((n_fields, top_k), dtype=np.float64)
    cross_item = np.empty((n_fields, top_k), dtype=np.int64)
    cross_size = np.zeros(n_fields, dtype=np.int64)
    n_resident = resident_stop - start
    n_blocks = (n_resident + _PENDING_ROWS - 1) // _PENDING_ROWS
    pending_score = np.empty((n_blocks, _PENDING_SLOTS), dtype=np.float64)
    pending_item = np.empty((n_blocks, _PENDING_SLOTS), dtype=np.int32)
    pending_row = np.empty((n_blocks, _PENDING_SLOTS), dtype=np.int32)
    pending_size = np.zeros(n_blocks, dtype=np.int64)
    spill_row = np.empty(0, dtype=np.int32)
    spill_item = np.empty(0, dtype=np.int32)
    spill_score = np.empty(0, dtype=np.float64)
    n_spilled = 0
    for i in range(start, stop):
        # Row i's share of occᵀ·occ: over the users u of item i, occ[u, i]·occ[u, j] for the
        # entries j after i in u's sorted row. A user's rows come in ascending order here, so its
        # cursor moves one entry per row; the first time, it is found by bisection. Every user's
        # span is found before any is accumulated, so that those random reads are in flight
        # together; a user's cursor and row bounds are asked for _USERS_AHEAD users early, and the
        # first entry of its span as soon as it is known (_prefetch).
        first_p, last_p = item_indptr[i], item_indptr[i + 1]
        for p in range(first_p, last_p):
            user = item_users[p]
            if p + _USERS_AHEAD < last_p:
                user_ahead = item_users[p + _USERS_AHEAD]
                _prefetch(cursor, user_ahead)
                _prefetch(user_indptr, user_ahead)
            position = cursor[user]
            if position < 0:
                position = first_at_least(user_items, user_indptr[user], user_indptr[user + 1], i)
            else:
                position += 1
            cursor[user] = position
            _prefetch(user_items, position + 1)
            span[p - first_p, 0] = position + 1
            span[p - first_p, 1] = user_indptr[user + 1]
        n_touched = 0
        for p in range(first_p, last_p):
            weight = item_counts[p]
            for q in range(span[p - first_p, 0], span[p - first_p, 1]):
                j = user_items[q]
                if cooc_row[j] == 0:
                    touched[n_touched] = j
                    n_touched += 1
                cooc_row[j] += weight * user_counts[q]
        row_i = row_sum[i]
        if n_spilled + n_touched > len(spill_score) and resident_stop < n_items:
            # Room for every nonzero of the row, made here rather than per candidate: arrays
            # replaced inside the scoring loop cost the whole kernel ~25% (10.5–11.3 s against 8.3 s).
            spill_row, spill_item, spill_score = _grown(spill_row, spill_item, spill_score, n_spilled + n_touched)
        for f in range(1, n_fields):
            xlogx_row[f] = xlogx(float(row_sum[f * n_items + i]))
            xlogx_row_rest[f] = xlogx(float(totals[f] - row_sum[f * n_items + i]))
        cross_size[:] = 0
        primary = 0
        # Gather, then score: a loop of independent random reads keeps many cache misses in
        # flight, where the scoring loop waited for each in turn (they were half its time). The
        # other row's threshold may rise meanwhile; a stale one lets more candidates through, to
        # be tested again when offered.
        for t in range(n_touched):
            j = touched[t]
            pair_count[t] = cooc_row[j]
            cooc_row[j] = 0
            if j < n_items:
                r = j - start
                if r < n_resident:
                    other[t, 0], other[t, 1], other[t, 2] = resident[r, 0], resident[r, 1], resident[r, 2]
                else:  # scalar reads: a row view made per pair is reference-counted (see _no_counts)
                    other[t, 0], other[t, 1], other[t, 2] = records[j, 0], records[j, 1], records[j, 2]
        for t in range(n_touched):
            j = touched[t]
            k11 = pair_count[t]
            # The logarithm tables' entries for k21 and k22 of a pair further on: random reads in
            # tables of up to 24 MB, which the scoring loop would otherwise wait for.
            ahead = t + _CANDIDATES_AHEAD
            if ahead < n_touched and touched[ahead] < n_items:
                k21_ahead = int(other[ahead, 0]) - pair_count[ahead]
                _prefetch(xlogx_count, k21_ahead)
                _prefetch(xlogx_rest, row_i + k21_ahead)  # k11 + k12 + k21 = row_i + k21
            if j < n_items:
                primary += 1
                k12 = row_i - k11
                r = j - start
                k21 = int(other[t, 0]) - k11
                k22 = totals[0] - k11 - k12 - k21
                # Each orientation's sign test first (llr.negated, as signed_root applies it): a
                # negated root never passes the score test, so a pair that neither row keeps
                # costs no logarithm.
                keep_i = not negated(float(k11), float(k12), float(k21), float(k22))
                keep_j = not negated(float(k11), float(k21), float(k12), float(k22))
                if not (keep_i or keep_j):
                    continue
                log11, log12, log21 = _xlogx_read(xlogx_count, k11, k11), _xlogx_read(xlogx_count, k12, k12), _xlogx_read(xlogx_count, k21, k21)
                log22 = _xlogx_read(xlogx_rest, k11 + k12 + k21, k22)
                both = entropy[i - start] + other[t, 1]
                # as llr_from_margins and signed_root compute them, row i's table then row j's
                if keep_i:
                    score = math.sqrt(llr_from_entropies(both, xlogx_total[0] - log11 - log12 - log21 - log22))
                    _keep_best(heap_score, heap_item, heap_size, threshold, i - start, top_k, min_score, score, j)
                if keep_j:
                    score = math.sqrt(llr_from_entropies(both, xlogx_total[0] - log11 - log21 - log12 - log22))
                    if not _may_enter(score, min_score, other[t, 2]):  # a row past the resident ones: -inf
                        continue
                    if r >= n_resident:
                        spill_row[n_spilled], spill_item[n_spilled], spill_score[n_spilled] = j, i, score
                        n_spilled += 1
                    else:
                        block = r // _PENDING_ROWS
                        slot = pending_size[block]
                        pending_score[block, slot] = score
                        pending_item[block, slot] = i
                        pending_row[block, slot] = r
                        pending_size[block] = slot + 1
                        if slot + 1 == _PENDING_SLOTS:
                            _flush(heaps, threshold, top_k, min_score, (pending_score[block], pending_item[block], pending_row[block]), _PENDING_SLOTS)
                            pending_size[block] = 0
                continue
            f = j // n_items
            row_f = row_sum[f * n_items + i]
            k12 = row_f - k11
            k21 = column_sum[j] - k11
            k22 = totals[f] - k11 - k12 - k21
            value = llr_from_margins(
                float(k11), float(k12), float(k21), float(k22),
                xlogx_total[f], xlogx_row[f], xlogx_row_rest[f], xlogx_column[j], xlogx_column_rest[j],
            )
            score = signed_root(value, float(k11), float(k12), float(k21), float(k22))
            if score > 0.0 and score >= min_score:
                cross_size[f] = _offer(cross_score, cross_item, f, cross_size[f], top_k, score, j)
        row_nonzeros[i - first_row] = n_touched + primary  # a pair counts in this row and in its other's
        for f in range(1, n_fields):
            cross_counts[f - 1, i - first_row] = cross_size[f]
            _drain(cross_score, cross_item, f, cross_size[f], cross_scores[f - 1], cross_items[f - 1], (i - first_row) * top_k)
    for block in range(n_blocks):
        _flush(heaps, threshold, top_k, min_score, (pending_score[block], pending_item[block], pending_row[block]), pending_size[block])
    return spill_row, spill_item, spill_score, n_spilled


@_jit
def _grown(rows: np.ndarray, items: np.ndarray, scores: np.ndarray, needed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spilled candidates' arrays with room for ``needed`` (twice their size at least), the
    current ones copied in."""
    size = len(scores)
    room = max(2 * size, needed)
    more_rows = np.empty(room, dtype=rows.dtype)
    more_items = np.empty(room, dtype=items.dtype)
    more_scores = np.empty(room, dtype=scores.dtype)
    more_rows[:size], more_items[:size], more_scores[:size] = rows, items, scores
    return more_rows, more_items, more_scores


@_jit
def _flush(heaps: tuple[np.ndarray, ...], threshold: np.ndarray, top_k: int, min_score: float, pending: tuple[np.ndarray, ...], size: int) -> None:
    """Offer a block's pending candidates (``pending``: score, item, heap row) to their heaps."""
    heap_score, heap_item, heap_size = heaps
    pending_score, pending_item, pending_row = pending
    for slot in range(size):
        _keep_best(heap_score, heap_item, heap_size, threshold, pending_row[slot], top_k, min_score, pending_score[slot], pending_item[slot])


@_jit
def _may_enter(score: float, min_score: float, threshold: float) -> bool:
    """Whether a candidate passes the score test and reaches a row's worst kept (``threshold``,
    ``-inf`` until its heap is full)."""
    return score > 0.0 and score >= min_score and score >= threshold


@_no_counts
def _keep_best(  # noqa: PLR0913
    heap_score: np.ndarray,
    heap_item: np.ndarray,
    heap_size: np.ndarray,
    threshold: np.ndarray,
    r: int,
    top_k: int,
    min_score: float,
    score: float,
    item: int,
) -> None:
    """Offer a candidate to resident row ``r``'s heap, unless it fails the score test or falls
    below the row's worst kept (``threshold[r]``, set once the heap is full)."""
    if _may_enter(score, min_score, threshold[r]):
        heap_size[r] = _offer(heap_score, heap_item, r, heap_size[r], top_k, score, item)
        if heap_size[r] == top_k:
            threshold[r] = heap_score[r, 0]


@_jit
def _merge_rows(  # noqa: PLR0913
    starts: np.ndarray,
    heap_first: np.ndarray,
    heaps: tuple[np.ndarray, ...],
    start: int,
    stop: int,
    first_row: int,
    top_k: int,
    counts: np.ndarray,
    out_items: np.ndarray,
    out_scores: np.ndarray,
) -> None:
    """Rows ``[start, stop)`` of the primary field into outputs that begin at row ``first_row``:
    every thread's heap of the row (threads whose first row is at most it; ``heaps``: score, item,
    size) merged into the best ``top_k``, best first."""
    heap_score, heap_item, heap_size = heaps
    merged_score = np.empty((1, top_k), dtype=np.float64)
    merged_item = np.empty((1, top_k), dtype=np.int64)
    for i in range(start, stop):
        size = 0
        row = i - first_row
        for t in range(len(starts)):
            if starts[t] > i:
                break
            r = heap_first[t] + i - starts[t]
            for slot in range(heap_size[r]):
                size = _offer(merged_score, merged_item, 0, size, top_k, heap_score[r, slot], heap_item[r, slot])
        counts[row] = size
        _drain(merged_score, merged_item, 0, size, out_scores, out_items, row * top_k)
