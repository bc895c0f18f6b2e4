"""Occurrence matrices and what the co-occurrence scoring needs from them (pure functions).

``occ[u, i]`` counts the kept rows of user ``u`` on item ``i``. The co-occurrence matrix
``cooc = occᵀ·occ`` with its diagonal zeroed is never built whole: :mod:`daskrec.indicators`
computes it one block of item rows at a time. What the 2x2 tables need besides a co-occurrence
count are marginals, and those come straight from the occurrences:

* ``cooccurrence`` table (the SPEC): ``row_sum[i] = Σ_{j≠i} cooc[i, j] = Σ_u occ[u,i]·(R_u − occ[u,i])``
  with ``R_u = Σ_j occ[u, j]``; the matrix is symmetric so ``column_sum = row_sum``, and
  ``total = Σ_i row_sum[i]``.
* ``users`` table (Apache Mahout): occurrences are binarised (and optionally downsampled);
  ``row_sum[i] = column_sum[i]`` = users who have item ``i``; ``total`` = all users.

With cross-occurrence types the matrix has *joint* columns: field ``f`` (0 the primary events,
``1 + t`` the cross type ``t``) owns the columns ``[f·n, (f+1)·n)``, and only users with primary
rows are kept. Row ``i`` of ``occᵀ·occ`` restricted to field ``f`` is then row ``i`` of ``Aᵀ·A``
(f = 0) or ``Aᵀ·B_t``, and each field has its own marginals (see :func:`marginals`).

Counts are int64 throughout: an int8 or int16 occurrence matrix wraps silently in sparse products.
The one exception is the matrix :func:`stack_occurrences` stacks ``narrow`` for the kernels of
:mod:`daskrec.indicators` alone (int32 indices and int16 counts, 12 bytes an entry in both
layouts instead of 32; their arithmetic is int64).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = [
    "Occurrences",
    "Compressed",
    "Layouts",
    "Marginals",
    "BlockSummary",
    "occurrence_block",
    "stack_blocks",
    "stack_occurrences",
    "marginals",
    "summarise",
    "combine_summaries",
    "item_rows",
    "first_at_least",
    "downsample",
    "split_by_work",
]

COUNT_DTYPE = np.int64
"""Type of occurrence and co-occurrence counts."""

Compressed = tuple[np.ndarray, np.ndarray, np.ndarray]
"""A compressed sparse layout's arrays: its pointers, its indices and its values."""
Layouts = tuple[Compressed, Compressed, tuple[int, int]]
"""A block's rows (CSR) and columns (CSC), and its shape, as arrays."""


@dataclass(frozen=True)
class Occurrences:
    """The user x item occurrence matrix in both compressed layouts.

    ``by_user`` (CSR) gives a user's items; ``by_item`` (CSC) gives an item's users.
    """

    by_user: sp.csr_array
    by_item: sp.csc_array

    @property
    def n_users(self) -> int:
        """Number of users (rows)."""
        return int(self.by_user.shape[0])

    @property
    def n_items(self) -> int:
        """Number of items (columns)."""
        return int(self.by_user.shape[1])


@dataclass(frozen=True)
class Marginals:
    """Marginal counts of the 2x2 tables: ``k12 = row_sum[i] − k11``, ``k21 = column_sum[j] − k11``,
    ``k22 = total − k11 − k12 − k21``.

    With cross-occurrence the columns are *joint*: field ``f`` (0 the primary matrix, ``1 + t``
    the cross type ``t``) owns the columns ``[f·n, (f+1)·n)``, and every array is field-major.
    """

    row_sum: np.ndarray
    """Per field and primary item ``i``, at ``f·n + i``: the row margin of ``i`` in field ``f``'s table."""
    column_sum: np.ndarray
    """Per joint column: its column margin in its field's table."""
    totals: np.ndarray
    """Per field: the table's grand total (int64)."""

    @property
    def total(self) -> int:
        """The primary table's grand total."""
        return int(self.totals[0])


def occurrence_block(user: np.ndarray, item_code: np.ndarray, n_users: int, n_items: int) -> sp.csr_array:
    """Count rows per (user, item) into a ``n_users x n_items`` CSR block with int64 counts.

    Examples
    --------
    >>> occurrence_block(np.array([0, 0, 1]), np.array([2, 2, 0]), 2, 3).toarray()
    array([[0, 0, 2],
           [1, 0, 0]])
    """
    ones = np.ones(len(user), dtype=COUNT_DTYPE)
    block = sp.csr_array((ones, (user, item_code)), shape=(n_users, n_items))
    block.sum_duplicates()
    block.data = block.data.astype(COUNT_DTYPE, copy=False)
    return block


def stack_blocks(blocks: list[sp.csr_array]) -> Occurrences:
    """Stack user blocks (disjoint users, the same item columns) into one occurrence matrix,
    in both layouts."""
    nonempty = [b for b in blocks if b.shape[0]]
    by_user = (
        sp.csr_array(sp.vstack(nonempty, format="csr"))
        if nonempty
        else sp.csr_array((0, blocks[0].shape[1]), dtype=COUNT_DTYPE)
    )
    by_user.data = by_user.data.astype(COUNT_DTYPE, copy=False)
    by_item = sp.csc_array(by_user)
    by_item.sort_indices()
    by_user.sort_indices()
    return Occurrences(by_user=by_user, by_item=by_item)


def stack_occurrences(
    blocks: Iterable[Layouts], n_users: int, column_entries: np.ndarray, threads: int = 1, *, narrow: bool = False
) -> Occurrences:
    """Stack blocks of disjoint users (the same item columns, each in both layouts, as arrays: a
    block file's memory-mapped, :func:`daskrec.scratch.map_layouts`, which are then copied
    straight from the page cache) into one occurrence matrix, as :func:`stack_blocks` would,
    holding one block at a time: its rows are copied after the blocks' before it, and each
    item's users after theirs, on ``threads`` threads (ranges of items of equal entries).
    Building the item layout from the rows instead scatters every entry to its item (~60 ns an
    entry on this machine, 3.5 s of one thread at 50M events), where the blocks' own item
    layouts were made in parallel, by the tasks that counted them.

    Parameters
    ----------
    blocks
        The blocks' layouts, in user order (read one at a time).
    n_users
        Their users, together.
    column_entries
        Their entries per item column, together.
    threads
        Threads that copy the item layouts.
    narrow
        Hold the indices as int32 where they fit and the counts as int16 (12 bytes an entry in
        both layouts instead of 32), for a matrix only the kernels of :mod:`daskrec.indicators`
        read (their arithmetic is int64 whatever the arrays hold). Scipy's own products on it
        would wrap.

    Raises
    ------
    ValueError
        The blocks hold other users or entries than ``n_users`` and ``column_entries`` say, or a
        count too large for int16 when ``narrow``.

    Examples
    --------
    >>> def layouts(block: Occurrences) -> Layouts:
    ...     rows, columns = block.by_user, block.by_item
    ...     return (rows.indptr, rows.indices, rows.data), (columns.indptr, columns.indices, columns.data), rows.shape
    >>> first = stack_blocks([occurrence_block(np.array([0, 0]), np.array([0, 2]), 1, 3)])
    >>> second = stack_blocks([occurrence_block(np.array([0, 1]), np.array([2, 1]), 2, 3)])
    >>> stack_occurrences([layouts(first), layouts(second)], 3, np.array([1, 1, 2])).by_item.toarray()
    array([[1, 0, 1],
           [0, 0, 1],
           [0, 1, 0]])
    """
    n_items = len(column_entries)
    item_indptr = np.r_[0, np.cumsum(column_entries)].astype(np.int64)
    entries = int(item_indptr[-1])
    small, count = _stacked_types(narrow, entries, n_users, n_items)
    item_indptr = item_indptr.astype(small)  # scipy keeps int32 indices only beside an int32 indptr
    indptr = np.zeros(n_users + 1, dtype=small)
    indices = np.empty(entries, dtype=small)
    data = np.empty(entries, dtype=count)
    item_users = np.empty(entries, dtype=small)
    item_data = np.empty(entries, dtype=count)
    filled = item_indptr[:-1].astype(np.int64)  # where each item's next users go
    cuts = np.r_[0, np.searchsorted(item_indptr, np.arange(1, threads) * (entries / threads)), n_items].astype(np.int64)
    first_user = 0
    mismatch = "the blocks hold other users or entries than n_users and column_entries say"
    with ThreadPoolExecutor(threads) as pool:
        for (row_indptr, row_items, row_counts), columns, (block_users, block_items) in blocks:
            _check_counts_fit(row_counts, count)  # both layouts hold the same counts
            stop_user, at, block_entries = first_user + block_users, int(indptr[first_user]), len(row_items)
            if stop_user > n_users or at + block_entries > entries or block_items != n_items:
                raise ValueError(mismatch)
            indptr[first_user + 1 : stop_user + 1] = at + row_indptr[1:]
            indices[at : at + block_entries] = row_items
            data[at : at + block_entries] = row_counts
            copies = [
                pool.submit(_append_columns, columns, first_user, (int(first), int(stop)), item_indptr, filled, (item_users, item_data))
                for first, stop in zip(cuts[:-1], cuts[1:])
            ]
            if not all(copy.result() for copy in copies):
                raise ValueError(mismatch)
            first_user = stop_user
    if first_user != n_users or not np.array_equal(filled, item_indptr[1:]):
        raise ValueError(mismatch)
    shape = (n_users, n_items)
    return Occurrences(
        by_user=sp.csr_array((data, indices, indptr), shape=shape),
        by_item=sp.csc_array((item_data, item_users, item_indptr), shape=shape),
    )


@numba.njit(nogil=True, cache=True)
def _append_columns(  # noqa: PLR0913 - a compiled kernel takes arrays, not objects
    layout: tuple[np.ndarray, np.ndarray, np.ndarray],
    first_user: int,
    items: tuple[int, int],
    item_indptr: np.ndarray,
    filled: np.ndarray,
    out: tuple[np.ndarray, np.ndarray],
) -> bool:
    """Append a block's users (and counts) of the items ``[first, stop)`` (``layout``: its item
    layout's indptr, block-local users and counts) to each item's in ``out`` (users, counts), at
    ``filled[j]``, shifted by ``first_user``; ``filled`` moves on. False, with nothing written
    past an item's end (``item_indptr[j + 1]``), if the block holds more of an item than is left."""
    indptr, users, data = layout
    out_users, out_data = out
    for j in range(items[0], items[1]):
        at = filled[j]
        if at + indptr[j + 1] - indptr[j] > item_indptr[j + 1]:
            return False
        for q in range(indptr[j], indptr[j + 1]):
            out_users[at] = users[q] + first_user
            out_data[at] = data[q]
            at += 1
        filled[j] = at
    return True


def _stacked_types(narrow: bool, entries: int, n_users: int, n_items: int) -> tuple[type[np.integer], type[np.integer]]:
    """Types of a stacked matrix's positions and counts: int32 positions where they fit and int16
    counts when ``narrow``, else int64 both."""
    int32_max = int(np.iinfo(np.int32).max)
    small: type[np.integer] = np.int32 if narrow and max(entries, n_users, n_items) <= int32_max else np.int64
    return small, (np.int16 if narrow else COUNT_DTYPE)


def _check_counts_fit(values: np.ndarray, count: type[np.integer]) -> None:
    """Raise ``ValueError`` if a count of ``values`` would wrap as ``count``."""
    if values.dtype.itemsize > np.dtype(count).itemsize and len(values):
        _check_largest_fits(int(values.max()), count)


def _check_largest_fits(largest: int, count: type[np.integer]) -> None:
    """Raise ``ValueError`` if the count ``largest`` would wrap as ``count``."""
    if largest > int(np.iinfo(count).max):
        raise ValueError(f"a count of {largest} does not fit {np.dtype(count)}: stack without narrow")


def item_rows(blocks: Sequence[Callable[[], Layouts]], items: tuple[int, int], *, narrow: bool = False) -> Occurrences:
    """What the pairs of the items ``[start, stop)`` with the items after them read
    (:func:`~daskrec.indicators.pair_block`), from blocks of disjoint users: the rows of the users
    who have an item in the range, each from the first such item on (in block order, then user
    order), and the range's columns in item layout (the other columns are empty). A user gives
    every range it touches less of its row each time: about half of what whole rows would take.

    Each of ``blocks`` gives a block's layouts when called (twice: once to size the result, once
    to fill it). Their columns find the users (only the range's are read) and each user's row is
    read from its first item in the range on, so that a block whose arrays are memory-mapped
    (:func:`daskrec.scratch.map_layouts`) is read only where the range needs it and held only
    while it is read. Each user's items must be in ascending order, as :func:`stack_blocks` leaves
    them (not checked: that would read every row). ``narrow`` as in :func:`stack_occurrences`
    (and the same ``ValueError``).
    """
    start, stop = items
    found = [_users_in(layouts(), items) for layouts in blocks]  # each block's mapping goes as soon as it is read
    n_columns = max((n for *_, n in found), default=0)
    lengths = np.concatenate([length for _, _, length, _, _ in found]) if found else np.zeros(0, np.int64)
    entries = int(lengths.sum())
    range_indptr = np.r_[0, np.cumsum(sum((columns for *_, columns, _ in found), np.zeros(stop - start, np.int64)))]
    small, count = _stacked_types(narrow, entries, len(lengths), n_columns)
    indices, data = np.empty(entries, dtype=small), np.empty(entries, dtype=count)
    item_users, item_data = np.empty(int(range_indptr[-1]), dtype=small), np.empty(int(range_indptr[-1]), dtype=count)
    filled, at, first_user, largest = range_indptr[:-1].copy(), 0, 0, 0
    for layouts, (users, firsts, length, _, _) in zip(blocks, found):
        rows, columns, (n_users, _) = layouts()
        copied = at + int(length.sum())
        largest = max(largest, _copy_from(rows, users, firsts, (indices[at:copied], data[at:copied])))
        _copy_columns(columns, users, n_users, first_user, items, filled, (item_users, item_data))
        at, first_user = copied, first_user + len(users)
        del rows, columns
    _check_largest_fits(largest, count)
    item_indptr = np.empty(n_columns + 1, dtype=small)  # scipy keeps int32 indices only beside an int32 indptr
    item_indptr[: start + 1] = 0
    item_indptr[start : stop + 1] = range_indptr
    item_indptr[stop + 1 :] = range_indptr[-1]
    shape = (len(lengths), n_columns)
    return Occurrences(
        by_user=sp.csr_array((data, indices, np.r_[0, np.cumsum(lengths)].astype(small)), shape=shape),
        by_item=sp.csc_array((item_data, item_users, item_indptr), shape=shape),
    )


def _users_in(layouts: Layouts, items: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """A block's users with an item in the range ``items``, each one's position of its first such
    item, its row's length from there, the range's entries per column, and the block's columns."""
    (indptr, indices, _), (item_indptr, item_users, _), (n_users, n_columns) = layouts
    users, firsts = _first_in_range(indptr, indices, item_indptr, item_users, n_users, items[0], items[1])
    return users, firsts, indptr[users + 1] - firsts, np.diff(item_indptr[items[0] : items[1] + 1]).astype(np.int64), n_columns


@numba.njit(nogil=True, cache=True)
def _first_in_range(
    indptr: np.ndarray, indices: np.ndarray, item_indptr: np.ndarray, item_users: np.ndarray, n_users: int, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    """The users (ascending) with an item in ``[start, stop)``, found from the columns' users, and
    the position of each one's first such item in ``indices``."""
    touched = np.zeros(n_users, dtype=np.bool_)
    for q in range(item_indptr[start], item_indptr[stop]):
        touched[item_users[q]] = True
    users = np.flatnonzero(touched)
    firsts = np.empty(len(users), dtype=np.int64)
    for k in range(len(users)):
        firsts[k] = first_at_least(indices, indptr[users[k]], indptr[users[k] + 1], start)
    return users, firsts


# Without numba's reference counting (its private switch, absent from its type stubs): the pair
# kernel calls this once per user and row, and counting the array passed at every call cost it
# time (see daskrec.indicators._no_counts).
@numba.njit(nogil=True, cache=True, error_model="numpy", _nrt=False)  # type: ignore[call-overload, untyped-decorator]
def first_at_least(values: np.ndarray, low: int, high: int, target: int) -> int:
    """The first position in ``values[low:high]`` (ascending) whose value is at least ``target``
    (``high`` if none); compiled."""
    while low < high:
        middle = (low + high) // 2
        if values[middle] < target:
            low = middle + 1
        else:
            high = middle
    return low


@numba.njit(nogil=True, cache=True)
def _copy_from(rows: Compressed, users: np.ndarray, firsts: np.ndarray, out: tuple[np.ndarray, np.ndarray]) -> int:
    """Each of ``users``' items and counts from its position in ``firsts`` on into ``out``, one
    row after another, converted as copied; returns the largest count copied (0 if none)."""
    indptr, indices, data = rows
    out_indices, out_data = out
    at, largest = 0, 0
    for k in range(len(users)):
        for q in range(firsts[k], indptr[users[k] + 1]):
            out_indices[at] = indices[q]
            out_data[at] = data[q]
            largest = max(largest, data[q])
            at += 1
    return largest


@numba.njit(nogil=True, cache=True)
def _copy_columns(  # noqa: PLR0913 - a compiled kernel takes arrays, not objects
    columns: Compressed,
    users: np.ndarray,
    n_users: int,
    first_user: int,
    items: tuple[int, int],
    filled: np.ndarray,
    out: tuple[np.ndarray, np.ndarray],
) -> None:
    """Append the columns ``[start, stop)`` of a block's item layout to each column's users (and
    counts) in ``out``, at ``filled[j - start]`` (which moves on), each user renumbered as its
    place in ``users`` (ascending, holding every user of those columns) after ``first_user``."""
    indptr, column_users, data = columns
    out_users, out_data = out
    place = np.empty(n_users, dtype=np.int64)
    for k in range(len(users)):
        place[users[k]] = first_user + k
    for j in range(items[0], items[1]):
        at = filled[j - items[0]]
        for q in range(indptr[j], indptr[j + 1]):
            out_users[at] = place[column_users[q]]
            out_data[at] = data[q]
            at += 1
        filled[j - items[0]] = at


def binarise(block: sp.csr_array) -> sp.csr_array:
    """The block with every stored count set to 1."""
    ones = block.copy()
    ones.data = np.ones_like(ones.data)
    return ones


def marginals(occurrences: Occurrences, llr_table: str, n_fields: int = 1) -> Marginals:
    """Marginals of the 2x2 tables for every item (see the module docstring).

    Parameters
    ----------
    occurrences
        Counts for ``cooccurrence``; binarised (and downsampled) occurrences for ``users``. With
        ``n_fields > 1`` the columns are joint (see :class:`Marginals`) and every row is a user
        with primary occurrences.
    llr_table
        ``cooccurrence`` or ``users``.
    n_fields
        1 + the number of cross-occurrence types.
    """
    by_item = occurrences.by_item
    n_items = occurrences.n_items // n_fields
    if llr_table == "users":
        users_per_column = np.diff(by_item.indptr).astype(COUNT_DTYPE)
        row_sum = np.tile(users_per_column[:n_items], n_fields)
        if n_fields == 1:
            row_sum = users_per_column  # one array: the table is symmetric
        totals = np.full(n_fields, occurrences.n_users, dtype=COUNT_DTYPE)
        return Marginals(row_sum=row_sum, column_sum=users_per_column, totals=totals)
    by_user = occurrences.by_user
    row_sum, column_sum = _count_margins(
        (by_user.indptr, by_user.indices, by_user.data), (by_item.indptr, by_item.indices, by_item.data), n_items, n_fields
    )
    if n_fields == 1:
        return Marginals(row_sum=column_sum, column_sum=column_sum, totals=np.array([column_sum.sum()], COUNT_DTYPE))
    totals = row_sum.reshape(n_fields, n_items).sum(axis=1, dtype=COUNT_DTYPE)
    return Marginals(row_sum=row_sum, column_sum=column_sum, totals=totals)


# The block summaries are compiled passes over the two layouts rather than numpy expressions: those
# made a temporary array of every entry per step (repeat, where, fancy indexing, weighted bincount),
# 0.09–0.20 s a bucket of the 50M-event log (1M entries), up to half of its occurrence task; these
# passes read each entry once, 0.03 s.
@numba.njit(nogil=True, cache=True)
def _count_margins(rows: Compressed, columns: Compressed, n_items: int, n_fields: int) -> tuple[np.ndarray, np.ndarray]:
    """The counts table's row sums (per field and primary item, field-major) and column sums (per
    joint column) of a block (see :func:`marginals`), exact in int64."""
    indptr, indices, data = rows
    n_users = len(indptr) - 1
    field_totals = np.zeros((n_fields, n_users), dtype=np.int64)  # R_u per field
    for u in range(n_users):
        for q in range(indptr[u], indptr[u + 1]):
            field_totals[indices[q] // n_items, u] += np.int64(data[q])
    item_indptr, users, counts = columns
    n_columns = len(item_indptr) - 1
    column_sum = np.zeros(n_columns, dtype=np.int64)
    row_sum = np.zeros(n_fields * n_items, dtype=np.int64)
    for c in range(n_columns):
        primary = c < n_items
        total = np.int64(0)
        for q in range(item_indptr[c], item_indptr[c + 1]):
            u, count = users[q], np.int64(counts[q])
            # Σ_u occ[u,c]·(R_u − occ[u,c]), the diagonal only in the primary table
            total += count * (field_totals[0, u] - (count if primary else 0))
            if primary:
                for field in range(1, n_fields):
                    row_sum[field * n_items + c] += count * field_totals[field, u]
        column_sum[c] = total
        if primary:
            row_sum[c] = total
    return row_sum, column_sum


@dataclass(frozen=True)
class BlockSummary:
    """What a block of users adds to the item-wide arrays; summed over blocks with
    :func:`combine_summaries` they give the marginals and the work of every item row."""

    margins: Marginals
    work: np.ndarray
    """Per item, ``Σ_{u has i} |items of u|``: the multiply-adds its co-occurrence row costs,
    and a bound on the entries of the rows it reads (float64, exact below 2**53)."""
    entries: int
    """Stored (user, item) entries."""
    suffix_entries: np.ndarray
    """Per item, ``Σ_{u has i}`` the entries of ``u`` from ``i`` on (its items ascending): what
    the pairs of ``i`` with the items after it read, and a bound on what a block of rows holding
    ``i`` gathers for it (:func:`item_rows`; float64, exact below 2**53)."""


def summarise(occurrences: Occurrences, llr_table: str, n_fields: int = 1) -> BlockSummary:
    """The :class:`BlockSummary` of one block of users (pure); ``work`` covers the primary items."""
    n_items = occurrences.n_items // n_fields
    by_user = occurrences.by_user if occurrences.by_user.has_sorted_indices else occurrences.by_user.sorted_indices()
    by_item = occurrences.by_item
    work, suffix_entries = _work_and_suffixes(by_user.indptr, by_user.indices, (by_item.indptr, by_item.indices), n_items)
    return BlockSummary(margins=marginals(occurrences, llr_table, n_fields), work=work.astype(np.float64), entries=int(by_user.nnz),
                        suffix_entries=suffix_entries.astype(np.float64))


@numba.njit(nogil=True, cache=True)
def _work_and_suffixes(
    indptr: np.ndarray, indices: np.ndarray, columns: tuple[np.ndarray, np.ndarray], n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per primary item, a block's ``work`` and ``suffix_entries`` (see :class:`BlockSummary`;
    ``indices`` sorted within each row), exact in int64."""
    work = np.zeros(n_items, dtype=np.int64)
    suffix_entries = np.zeros(n_items, dtype=np.int64)
    for u in range(len(indptr) - 1):
        stop = indptr[u + 1]
        for q in range(indptr[u], stop):
            if indices[q] < n_items:
                suffix_entries[indices[q]] += stop - q
    item_indptr, users = columns
    for i in range(n_items):
        for q in range(item_indptr[i], item_indptr[i + 1]):
            work[i] += indptr[users[q] + 1] - indptr[users[q]]
    return work, suffix_entries


def combine_summaries(summaries: list[BlockSummary]) -> BlockSummary:
    """The summary of the union of disjoint user blocks: every count adds up (exact int64).

    Symmetric tables (one array for both sums) stay one array.
    """
    first = summaries[0].margins
    symmetric = first.column_sum is first.row_sum
    row_sum, totals = first.row_sum.copy(), first.totals.copy()
    column_sum = row_sum if symmetric else first.column_sum.copy()
    work = summaries[0].work.astype(np.float64)  # np.bincount gives int64 for an empty block
    suffix_entries = summaries[0].suffix_entries.astype(np.float64)
    for summary in summaries[1:]:
        row_sum += summary.margins.row_sum
        if not symmetric:
            column_sum += summary.margins.column_sum
        totals += summary.margins.totals
        work += summary.work
        suffix_entries += summary.suffix_entries
    margins = Marginals(row_sum=row_sum, column_sum=column_sum, totals=totals)
    return BlockSummary(margins=margins, work=work, entries=sum(s.entries for s in summaries), suffix_entries=suffix_entries)


def uniform_draws(user_key: np.ndarray, item_code: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) numbers, one per (user, item), from a counter-based hash (splitmix64).

    A draw depends only on the seed, the user's key and the item's code, so downsampling gives
    the same matrix however the work is partitioned.
    """
    with np.errstate(over="ignore"):
        x = (
            user_key.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            ^ item_code.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
            ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        )
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    draws: np.ndarray = (x >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)
    return draws


def user_keys(visitor_ids: pd.Series) -> np.ndarray:
    """A stable 64-bit key per visitor id, the same in every process and partitioning."""
    keys: np.ndarray = pd.util.hash_pandas_object(visitor_ids, index=False).to_numpy(dtype=np.uint64)
    return keys


def downsample(
    block: sp.csr_array,
    block_user_keys: np.ndarray,
    users_per_item: np.ndarray,
    max_per_user: int | None,
    max_per_item: int | None,
    seed: int,
) -> sp.csr_array:
    """Mahout's ``sampleDownAndBinarize`` on a block of binarised occurrences.

    Entry ``(u, i)`` is kept when its draw (:func:`uniform_draws`) is at most
    ``min(min(1, max_per_user / n_u), min(1, max_per_item / n_i))``, with ``n_u`` the user's
    items and ``n_i`` the item's users (over all users).
    """
    items_per_user = np.diff(block.indptr)
    user_of_entry = np.repeat(np.arange(block.shape[0]), items_per_user)
    rate = np.ones(block.nnz)
    if max_per_user is not None:
        rate = np.minimum(rate, max_per_user / items_per_user[user_of_entry])
    if max_per_item is not None:
        rate = np.minimum(rate, max_per_item / users_per_item[block.indices])
    keep = uniform_draws(block_user_keys[user_of_entry], block.indices, seed) <= rate
    kept = sp.csr_array((block.data[keep], (user_of_entry[keep], block.indices[keep])), shape=block.shape)
    kept.data = kept.data.astype(COUNT_DTYPE, copy=False)
    return kept


def split_by_work(work: np.ndarray, n_blocks: int) -> list[tuple[int, int]]:
    """Split the items into at most ``n_blocks`` contiguous ranges of about equal work.

    ``work`` is :attr:`BlockSummary.work`. Equal-count ranges would not do: popular items cost
    far more. An item heavier than a share stays alone in its range.
    """
    if len(work) == 0:
        return []
    cumulative = np.cumsum(work + 1.0)  # +1: every row has a fixed cost too
    targets = cumulative[-1] * np.arange(1, n_blocks) / n_blocks
    cuts = np.unique(np.r_[0, np.searchsorted(cumulative, targets, side="right"), len(work)])
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
