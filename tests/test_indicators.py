"""The fused kernel against a dense numpy reference: co-occurrence, LLR, top k and ties."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from conftest import layouts_of

from daskrec import cooccurrence as co
from daskrec.indicators import (
    Candidates,
    IndicatorBlock,
    _prefetch,
    _xlogx_read,
    _xlogx_tables,
    all_indicators,
    indicator_block,
    merged_block,
    pair_block,
    pair_tables,
)
from daskrec.llr import root_llr, xlogx


def dense_indicators(occurrences: co.Occurrences, margins: co.Marginals, top_k: int, min_score: float) -> list[list[tuple[int, float]]]:
    dense = occurrences.by_user.toarray()
    cooc = dense.T @ dense
    np.fill_diagonal(cooc, 0)
    rows = []
    for i in range(cooc.shape[0]):
        j = np.flatnonzero(cooc[i])
        k11 = cooc[i, j].astype(float)
        k12 = margins.row_sum[i] - k11
        k21 = margins.column_sum[j] - k11
        scores = root_llr(k11, k12, k21, margins.total - k11 - k12 - k21)
        order = np.lexsort((j, -scores))  # score descending, then smaller code
        rows.append([(int(j[o]), float(scores[o])) for o in order if scores[o] > 0 and scores[o] >= min_score][:top_k])
    return rows


@pytest.mark.parametrize("llr_table", ["cooccurrence", "users"])
@pytest.mark.parametrize("trial", range(12))
def test_matches_dense_reference(rng: np.random.Generator, llr_table: str, trial: int) -> None:
    n_users, n_items = int(rng.integers(1, 60)), int(rng.integers(1, 40))
    n_rows = int(rng.integers(0, 400))
    occurrences = co.stack_blocks(
        [co.occurrence_block(rng.integers(0, n_users, n_rows), rng.integers(0, n_items, n_rows), n_users, n_items)]
    )
    if llr_table == "users":
        occurrences = co.stack_blocks([co.binarise(occurrences.by_user)])
    margins = co.marginals(occurrences, llr_table)
    top_k, min_score = int(rng.integers(1, 6)), float(rng.choice([0.0, 0.5, 2.0]))
    expected = dense_indicators(occurrences, margins, top_k, min_score)
    # Any split into blocks gives the same rows.
    cuts = sorted({0, n_items, *rng.integers(0, n_items + 1, 3).tolist()})
    got: list[list[tuple[int, float]]] = []
    for start, stop in zip(cuts[:-1], cuts[1:]):
        block = indicator_block(occurrences, margins, start, stop, top_k, min_score)
        offsets = np.r_[0, np.cumsum(block.counts)]
        got += [
            list(zip(block.item_codes[a:b].tolist(), block.scores[a:b].tolist()))
            for a, b in zip(offsets[:-1], offsets[1:])
        ]
    assert got == expected


def test_ties_go_to_the_smaller_item_code() -> None:
    # Item 0 co-occurs identically with items 1..5: equal scores; top 3 must be 1, 2, 3.
    user = np.repeat(np.arange(5), 2)
    item = np.ravel(np.column_stack([np.zeros(5, np.int64), np.arange(1, 6)]))
    extra_users = np.arange(5, 25)
    occurrences = co.stack_blocks(
        [co.occurrence_block(np.r_[user, extra_users], np.r_[item, 6 + extra_users % 3], 25, 9)]
    )
    margins = co.marginals(occurrences, "cooccurrence")
    block = indicator_block(occurrences, margins, 0, 1, top_k=3, min_score=0.0)
    assert block.item_codes.tolist() == [1, 2, 3]
    assert len(set(block.scores.tolist())) == 1


def test_counts_nonzeros_and_skips_the_diagonal() -> None:
    occurrences = co.stack_blocks([co.occurrence_block(np.array([0, 0, 0]), np.array([0, 0, 1]), 1, 3)])
    margins = co.marginals(occurrences, "cooccurrence")
    block = indicator_block(occurrences, margins, 0, 3, top_k=5, min_score=0.0)
    assert block.cooccurrence_nonzeros == 2  # (0,1) and (1,0); never (0,0)
    assert 0 not in block.item_codes[: block.counts[0]]


def _fields_equal(a: IndicatorBlock, b: IndicatorBlock) -> bool:
    return all(
        np.array_equal(x.counts, y.counts) and np.array_equal(x.item_codes, y.item_codes) and np.array_equal(x.scores, y.scores)
        for x, y in zip(a.fields, b.fields, strict=True)
    )


def random_joint(rng: np.random.Generator) -> tuple[co.Occurrences, co.Marginals, int, int, float]:
    """A random joint occurrence matrix (1 to 3 fields, either table), its margins, its primary
    items, and a top k and a least score."""
    n_users, n_items, n_fields = int(rng.integers(1, 80)), int(rng.integers(1, 50)), int(rng.choice([1, 1, 2, 3]))
    n_rows = int(rng.integers(0, 600))
    users, items, fields = rng.integers(0, n_users, n_rows), rng.integers(0, n_items, n_rows), rng.integers(0, n_fields, n_rows)
    primary_users = np.isin(users, users[fields == 0])  # every row of a joint matrix is a user with primary occurrences
    users, items, fields = users[primary_users], items[primary_users], fields[primary_users]
    llr_table = str(rng.choice(["cooccurrence", "users"]))
    occurrences = co.stack_blocks([co.occurrence_block(users, fields * n_items + items, n_users, n_items * n_fields)])
    if llr_table == "users":
        occurrences = co.stack_blocks([co.binarise(occurrences.by_user)])
    return occurrences, co.marginals(occurrences, llr_table, n_fields), n_items, int(rng.integers(1, 6)), float(rng.choice([0.0, 0.5, 2.0]))


@pytest.mark.parametrize("trial", range(40))
def test_each_pair_once_gives_the_per_row_kernel_to_the_bit(rng: np.random.Generator, trial: int) -> None:
    """all_indicators scores each unordered pair once, in both orientations: the same lists and
    the same float64 scores as the per-row kernel, slice by slice, and the same nonzero count, for
    both tables, with cross-occurrence fields, on 1 to 3 threads."""
    occurrences, margins, n_items, top_k, min_score = random_joint(rng)
    n_users = occurrences.n_users
    cuts = sorted({0, n_items, *rng.integers(0, n_items + 1, 3).tolist()})
    slices = list(zip(cuts[:-1], cuts[1:]))
    pairs = list(all_indicators(occurrences, margins, top_k, min_score, int(rng.integers(1, 4)), slices))
    assert [(b.start, b.stop) for b in pairs] == slices
    per_row = [indicator_block(occurrences, margins, start, stop, top_k, min_score) for start, stop in slices]
    for block, expected in zip(pairs, per_row, strict=True):
        assert _fields_equal(block, expected)
    assert sum(b.cooccurrence_nonzeros for b in pairs) == sum(b.cooccurrence_nonzeros for b in per_row)
    # The pipeline's shared matrix (int32 indices, int16 counts) gives both kernels the same bits.
    narrow = co.stack_occurrences([layouts_of(occurrences.by_user)()], n_users, np.diff(occurrences.by_item.indptr), narrow=True)
    narrow_pairs = all_indicators(narrow, margins, top_k, min_score, int(rng.integers(1, 4)), slices)
    for block, (start, stop), expected in zip(narrow_pairs, slices, per_row, strict=True):
        assert _fields_equal(block, expected)
        assert _fields_equal(indicator_block(narrow, margins, start, stop, top_k, min_score), expected)


@pytest.mark.parametrize("trial", range(40))
def test_blocks_of_pairs_from_cut_rows_give_the_per_row_kernel_to_the_bit(rng: np.random.Generator, trial: int) -> None:
    """What a build does when the matrix is not shared: two buckets of users, their rows cut by
    item block from each block's first item on (narrow or not), each
    block's pairs with the items after it, its later rows' candidates grouped by block, then each
    block's own merged with what the blocks before it found: the per-row kernel's lists and bits,
    for both tables and with cross fields, and the same nonzeros in all."""
    occurrences, margins, n_items, top_k, min_score = random_joint(rng)
    cuts = np.array(sorted({0, n_items, *rng.integers(0, n_items + 1, 4).tolist()}))
    narrow = bool(rng.integers(2))
    middle = int(rng.integers(0, occurrences.n_users + 1))
    buckets = [occurrences.by_user[:middle], occurrences.by_user[middle:]]
    tables = pair_tables(margins)
    blocks = []
    for start, stop in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        rows = co.item_rows([layouts_of(bucket) for bucket in buckets], (start, stop), narrow=narrow)
        blocks.append(pair_block(rows, margins, tables, start, stop, top_k, min_score))
    later = [list(block.later.by_block(cuts[k + 1 :])) for k, block in enumerate(blocks)]
    for k, block in enumerate(blocks):
        merged = merged_block(block.start, block.stop, [block.own, *(later[p][k - p - 1] for p in range(k))], margins, top_k, 0)
        assert _fields_equal(merged, indicator_block(occurrences, margins, block.start, block.stop, top_k, min_score))
    assert sum(b.cooccurrence_nonzeros for b in blocks) == indicator_block(occurrences, margins, 0, n_items, top_k, min_score).cooccurrence_nonzeros


def test_candidates_group_by_block_in_order_and_drop_rows_outside() -> None:
    candidates = Candidates(rows=np.array([7, 2, 9, 3, 2, 12], np.int32), items=np.arange(6, dtype=np.int32), scores=np.arange(6.0))
    groups = list(candidates.by_block(np.array([2, 4, 10])))
    assert [g.rows.tolist() for g in groups] == [[2, 3, 2], [7, 9]]
    assert [g.items.tolist() for g in groups] == [[1, 3, 4], [0, 2]]
    assert [g.scores.tolist() for g in groups] == [[1.0, 3.0, 4.0], [0.0, 2.0]]


@pytest.mark.parametrize("llr_table", ["cooccurrence", "users"])
def test_each_pair_once_when_candidates_wait_in_full_blocks(rng: np.random.Generator, llr_table: str) -> None:
    """Hundreds of items over few users: every block of heap rows gets many times more of its
    rows' later candidates than it holds pending, so they are offered block by block mid-run."""
    n_users, n_items = 60, 700
    users, items = rng.integers(0, n_users, 9000), rng.integers(0, n_items, 9000)
    occurrences = co.stack_blocks([co.occurrence_block(users, items, n_users, n_items)])
    if llr_table == "users":
        occurrences = co.stack_blocks([co.binarise(occurrences.by_user)])
    margins = co.marginals(occurrences, llr_table)
    for threads in (1, 2):
        (block,) = all_indicators(occurrences, margins, 7, 0.0, threads)
        assert _fields_equal(block, indicator_block(occurrences, margins, 0, n_items, 7, 0.0))


def test_the_logarithm_tables_read_as_xlogx_to_the_bit() -> None:
    """The pair kernel's tables hold xLogX of counts and of the total less a sum, the same bits as
    taking it; past a table's end the value is taken."""
    total = 10_007
    count, rest = _xlogx_tables(40, total)
    assert len(count) == 41 and len(rest) == 81
    for k in range(200):
        assert _xlogx_read(count, k, k) == xlogx(float(k))
        assert _xlogx_read(rest, k, total - k) == xlogx(float(total - k))


@numba.njit
def _sum_with_hints(values: np.ndarray) -> int:
    total = 0
    for k in range(len(values)):
        _prefetch(values, k + 16)  # past the end for the last 16: a hint never faults
        _prefetch(values, np.int32(k + 8))  # an index of any integer type
        total += values[k]
    return total


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.float64])
def test_a_prefetch_is_only_a_hint(dtype: type) -> None:
    """The pair kernel's prefetch compiles for each array type and index type it is given and
    changes nothing."""
    values = np.arange(1, 1001).astype(dtype)
    assert _sum_with_hints(values) == 500_500


def test_each_pair_once_needs_a_symmetric_table() -> None:
    occurrences = co.stack_blocks([co.occurrence_block(np.array([0, 0, 1]), np.array([0, 1, 1]), 2, 2)])
    margins = co.marginals(occurrences, "cooccurrence")
    skewed = co.Marginals(row_sum=margins.row_sum + 1, column_sum=margins.column_sum, totals=margins.totals)
    with pytest.raises(ValueError, match="not symmetric"):
        next(all_indicators(occurrences, skewed, 3, 0.0, 1))


def test_a_narrow_matrix_never_wraps_its_products() -> None:
    """Counts near int16's largest (a visitor's kept rows, with --recent up to 32767) multiply to
    far beyond it: both kernels read the narrow matrix's counts into int64 arithmetic."""
    users = np.repeat([0, 0, 1, 1, 2], [32000, 31000, 30000, 29000, 5])
    items = np.repeat([0, 1, 0, 1, 2], [32000, 31000, 30000, 29000, 5])
    wide = co.stack_blocks([co.occurrence_block(users, items, 3, 3)])
    narrow = co.stack_occurrences([layouts_of(wide.by_user)()], 3, np.diff(wide.by_item.indptr), narrow=True)
    assert narrow.by_user.data.dtype == np.int16
    margins = co.marginals(wide, "cooccurrence")
    expected = indicator_block(wide, margins, 0, 3, 2, 0.0)
    assert expected.cooccurrence_nonzeros == 2
    assert _fields_equal(next(all_indicators(narrow, margins, 2, 0.0, 2)), expected)
    assert _fields_equal(indicator_block(narrow, margins, 0, 3, 2, 0.0), expected)
