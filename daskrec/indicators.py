"""Each item's indicators: co-occurrence row → root-LLR scores → top k, fused in one kernel.

For a block of item rows ``[start, stop)`` the kernel computes row ``i`` of ``cooc = occᵀ·occ``
as a sparse accumulation over the users who have item ``i`` (diagonal skipped), scores each
nonzero with the root LLR (:mod:`daskrec.llr`, margins' logarithms computed once per item), and keeps the best ``top_k`` in a bounded heap.
Nothing dense of size items x items, and no sort of a whole row, is ever made; the scratch space
is one int64 vector of length ``n_items`` per task.

Ranking: score descending; equal scores rank the smaller item code first. Item codes follow the
sorted order of the original ids, so ties go to the smaller item id (numeric for integer ids,
lexicographic for string ids), whatever the partitioning. A score of exactly 0 (and anything
below ``min_score``) is never an indicator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .cooccurrence import Marginals, Occurrences
from .llr import llr_from_margins, signed_root, xlogx

__all__ = ["FieldIndicators", "IndicatorBlock", "indicator_block"]


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
    """Nonzeros of these rows over every field (the primary diagonal left out)."""

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
        by_user.indptr, by_user.indices, by_user.data, by_item.indptr, by_item.indices, by_item.data,
        margins.row_sum,
        margins.column_sum,
        margins.totals.astype(np.int64),
        n_items,
        start,
        stop,
        top_k,
        float(min_score),
    )
    keep = np.arange(top_k)[None, :] < counts[:, :, None]
    fields = tuple(
        FieldIndicators(
            counts=counts[f],
            item_codes=item_codes[f].reshape(-1, top_k)[keep[f]] - f * n_items,
            scores=scores[f].reshape(-1, top_k)[keep[f]],
        )
        for f in range(n_fields)
    )
    return IndicatorBlock(start=start, stop=stop, fields=fields, cooccurrence_nonzeros=int(nonzeros))


_jit = numba.njit(nogil=True, cache=True, error_model="numpy")


@_jit
def _worse(score_a: float, item_a: int, score_b: float, item_b: int) -> bool:
    """Whether candidate a ranks below candidate b (lower score; equal score, larger code)."""
    return score_a < score_b or (score_a == score_b and item_a > item_b)


@_jit
def _sift_down(heap_score: np.ndarray, heap_item: np.ndarray, size: int, node: int) -> None:
    """Restore the heap (worst candidate at the root) below ``node``."""
    while True:
        worst = node
        for child in (2 * node + 1, 2 * node + 2):
            if child < size and _worse(heap_score[child], heap_item[child], heap_score[worst], heap_item[worst]):
                worst = child
        if worst == node:
            return
        heap_score[node], heap_score[worst] = heap_score[worst], heap_score[node]
        heap_item[node], heap_item[worst] = heap_item[worst], heap_item[node]
        node = worst


@_jit
def _indicator_rows(  # noqa: PLR0913 - a compiled kernel takes arrays, not objects
    user_indptr: np.ndarray,
    user_items: np.ndarray,
    user_counts: np.ndarray,
    item_indptr: np.ndarray,
    item_users: np.ndarray,
    item_counts: np.ndarray,
    row_sum: np.ndarray,
    column_sum: np.ndarray,
    totals: np.ndarray,
    n_items: int,
    start: int,
    stop: int,
    top_k: int,
    min_score: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
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
    # xLogX of the margins, once per item rather than once per co-occurrence (see llr_from_margins).
    xlogx_total = np.empty(n_fields, dtype=np.float64)
    for f in range(n_fields):
        xlogx_total[f] = xlogx(float(totals[f]))
    xlogx_column = np.empty(n_columns, dtype=np.float64)
    xlogx_column_rest = np.empty(n_columns, dtype=np.float64)
    for c in range(n_columns):
        xlogx_column[c] = xlogx(float(column_sum[c]))
        xlogx_column_rest[c] = xlogx(float(totals[c // n_items] - column_sum[c]))
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
            scores_f, items_f = heap_score[f], heap_item[f]
            size = sizes[f]
            if size < top_k:
                node = size
                scores_f[node] = score
                items_f[node] = j
                sizes[f] = size + 1
                while node > 0:
                    parent = (node - 1) // 2
                    if not _worse(scores_f[node], items_f[node], scores_f[parent], items_f[parent]):
                        break
                    scores_f[node], scores_f[parent] = scores_f[parent], scores_f[node]
                    items_f[node], items_f[parent] = items_f[parent], items_f[node]
                    node = parent
            elif _worse(scores_f[0], items_f[0], score, j):
                scores_f[0] = score
                items_f[0] = j
                _sift_down(scores_f, items_f, size, 0)
        # Pop the worst first into the last slot: each field's row comes out best first.
        base = (i - start) * top_k
        for f in range(n_fields):
            scores_f, items_f = heap_score[f], heap_item[f]
            size = sizes[f]
            counts[f, i - start] = size
            for slot in range(size - 1, -1, -1):
                out_scores[f, base + slot] = scores_f[0]
                out_items[f, base + slot] = items_f[0]
                scores_f[0] = scores_f[slot]
                items_f[0] = items_f[slot]
                _sift_down(scores_f, items_f, slot, 0)
    return counts, out_items, out_scores, nonzeros
