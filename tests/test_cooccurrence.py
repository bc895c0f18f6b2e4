"""Occurrence blocks, marginals, downsampling and item blocks against dense numpy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from conftest import layouts_of

from daskrec import cooccurrence as co


def random_occurrences(rng: np.random.Generator, n_users: int, n_items: int, n_rows: int) -> co.Occurrences:
    user = rng.integers(0, n_users, n_rows)
    item = rng.integers(0, n_items, n_rows)
    return co.stack_blocks([co.occurrence_block(user, item, n_users, n_items)])


def dense_cooccurrence(occurrences: co.Occurrences) -> np.ndarray:
    dense = occurrences.by_user.toarray()
    cooc = dense.T @ dense
    np.fill_diagonal(cooc, 0)
    return cooc


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (40, 25), (200, 60)])
def test_cooccurrence_marginals_match_dense(rng: np.random.Generator, shape: tuple[int, int]) -> None:
    occurrences = random_occurrences(rng, *shape, n_rows=shape[0] * 4)
    cooc = dense_cooccurrence(occurrences)
    margins = co.marginals(occurrences, "cooccurrence")
    np.testing.assert_array_equal(margins.row_sum, cooc.sum(axis=1))
    np.testing.assert_array_equal(margins.column_sum, cooc.sum(axis=0))
    assert margins.total == cooc.sum()


@pytest.mark.parametrize("n_fields", [1, 2, 3])
def test_block_summary_matches_dense_with_cross_fields(rng: np.random.Generator, n_fields: int) -> None:
    # Joint columns (field f owns [f·n, (f+1)·n)); every user has a primary row, as the pipeline
    # keeps only those. Marginals per field from A_0ᵀ·A_f with the primary diagonal left out.
    for _ in range(20):
        n_users, n_items = int(rng.integers(1, 30)), int(rng.integers(1, 12))
        n_rows = int(rng.integers(1, 200))
        user = np.r_[np.arange(n_users), rng.integers(0, n_users, n_rows)]
        column = np.r_[rng.integers(0, n_items, n_users), rng.integers(0, n_fields * n_items, n_rows)]
        occurrences = co.stack_blocks([co.occurrence_block(user, column, n_users, n_fields * n_items)])
        dense = occurrences.by_user.toarray()
        primary = dense[:, :n_items]
        products = [primary.T @ dense[:, f * n_items : (f + 1) * n_items] for f in range(n_fields)]
        np.fill_diagonal(products[0], 0)
        summary = co.summarise(occurrences, "cooccurrence", n_fields)
        margins = summary.margins
        np.testing.assert_array_equal(margins.row_sum, np.concatenate([p.sum(axis=1) for p in products]))
        np.testing.assert_array_equal(margins.column_sum, np.concatenate([p.sum(axis=0) for p in products]))
        np.testing.assert_array_equal(margins.totals, [p.sum() for p in products])
        assert margins.totals.dtype == np.int64 and margins.row_sum.dtype == np.int64
        items_per_user = (dense != 0).sum(axis=1)
        np.testing.assert_array_equal(summary.work, ((primary != 0) * items_per_user[:, None]).sum(axis=0))
        assert summary.work.dtype == np.float64 and summary.entries == int((dense != 0).sum())


def test_users_marginals_count_users(rng: np.random.Generator) -> None:
    occurrences = random_occurrences(rng, 30, 10, 200)
    binary = co.stack_blocks([co.binarise(occurrences.by_user)])
    margins = co.marginals(binary, "users")
    np.testing.assert_array_equal(margins.row_sum, (occurrences.by_user.toarray() > 0).sum(axis=0))
    assert margins.total == 30


def test_counts_that_would_wrap_in_small_integer_types() -> None:
    # One user with 300 rows on item 0 and 300 on item 1: cooc = 90,000, which int8 and int16
    # (the tutorial's type) wrap silently; so would their marginals.
    user = np.zeros(600, dtype=np.int64)
    item = np.repeat([0, 1], 300)
    block = co.occurrence_block(user, item, 1, 2)
    assert block.dtype == np.int64
    wrapped = sp.csr_array(block.astype(np.int8))
    assert (wrapped.T @ wrapped).toarray()[0, 1] != 90_000  # what the tutorial's type does
    occurrences = co.stack_blocks([block])
    assert dense_cooccurrence(occurrences)[0, 1] == 90_000
    margins = co.marginals(occurrences, "cooccurrence")
    assert margins.row_sum.tolist() == [90_000, 90_000]
    assert margins.total == 180_000


def test_stacking_blocks_of_disjoint_users(rng: np.random.Generator) -> None:
    whole = random_occurrences(rng, 20, 8, 80).by_user
    blocks = [sp.csr_array(whole[0:7]), sp.csr_array(whole[7:7]), sp.csr_array(whole[7:20])]
    stacked = co.stack_blocks(blocks)
    np.testing.assert_array_equal(stacked.by_user.toarray(), whole.toarray())
    np.testing.assert_array_equal(stacked.by_item.toarray(), whole.toarray())


def test_downsampling_keeps_rates_and_is_reproducible(rng: np.random.Generator) -> None:
    n_users, n_items = 2000, 50
    dense = (rng.random((n_users, n_items)) < 0.5).astype(np.int64)
    block = sp.csr_array(dense)
    keys = co.user_keys(pd.Series(np.arange(n_users)))
    users_per_item = dense.sum(axis=0)
    sampled = co.downsample(block, keys, users_per_item, 10, None, seed=7)
    per_user = np.diff(sampled.indptr)
    assert abs(per_user.mean() - 10) < 0.5  # each row kept with rate 10/n_u
    again = co.downsample(block, keys, users_per_item, 10, None, seed=7)
    np.testing.assert_array_equal(sampled.toarray(), again.toarray())
    other = co.downsample(block, keys, users_per_item, 10, None, seed=8)
    assert (sampled.toarray() != other.toarray()).any()
    by_item = co.downsample(block, keys, users_per_item, None, 100, seed=7)
    assert abs(by_item.toarray().sum(axis=0).mean() - 100) < 10
    # The same user (by id) gets the same draws in any block: split the users and compare.
    halves = [co.downsample(sp.csr_array(dense[s]), keys[s], users_per_item, 10, None, 7) for s in
              (slice(0, 700), slice(700, None))]
    np.testing.assert_array_equal(sp.vstack(halves).toarray(), sampled.toarray())


def test_uniform_draws_are_uniform() -> None:
    draws = co.uniform_draws(np.arange(100_000, dtype=np.uint64), np.zeros(100_000, np.int64), seed=1)
    assert 0.0 <= draws.min() and draws.max() < 1.0
    counts, _ = np.histogram(draws, bins=10, range=(0, 1))
    assert counts.min() > 9_500 and counts.max() < 10_500


def test_item_blocks_cover_items_and_balance_work(rng: np.random.Generator) -> None:
    occurrences = random_occurrences(rng, 500, 300, 5000)
    work = co.summarise(occurrences, "cooccurrence").work
    blocks = co.split_by_work(work, 8)
    assert blocks[0][0] == 0 and blocks[-1][1] == 300
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    assert 1 < len(blocks) <= 8
    block_work = [work[a:b].sum() for a, b in blocks]
    assert max(block_work) < 2 * work.sum() / len(blocks)
    assert co.split_by_work(np.zeros(0), 4) == []


@pytest.mark.parametrize("llr_table", ["cooccurrence", "users"])
def test_block_summaries_add_up_to_the_whole(rng: np.random.Generator, llr_table: str) -> None:
    occurrences = random_occurrences(rng, 400, 120, 3000)
    whole = co.summarise(occurrences, llr_table)
    halves = co.combine_summaries([co.summarise(co.stack_blocks([occurrences.by_user[:150]]), llr_table),
                                   co.summarise(co.stack_blocks([occurrences.by_user[150:]]), llr_table)])
    if llr_table == "cooccurrence":
        np.testing.assert_array_equal(halves.margins.row_sum, whole.margins.row_sum)
        assert halves.margins.total == whole.margins.total
    np.testing.assert_array_equal(halves.work, whole.work)
    np.testing.assert_array_equal(halves.suffix_entries, whole.suffix_entries)
    dense = occurrences.by_user.toarray() != 0
    from_here = dense[:, ::-1].cumsum(axis=1)[:, ::-1]  # a user's entries from each item on
    np.testing.assert_array_equal(whole.suffix_entries, (from_here * dense).sum(axis=0))


@pytest.mark.parametrize("narrow", [False, True])
def test_item_rows_give_a_range_its_users_rows_from_their_first_item_in_it(rng: np.random.Generator, narrow: bool) -> None:
    block = random_occurrences(rng, 300, 50, 2000).by_user
    dense = block.toarray()
    pieces = [layouts_of(block[:0]), layouts_of(block[:100]), layouts_of(block[100:101]), layouts_of(block[101:])]
    assert co.item_rows(pieces, (30, 30), narrow=narrow).by_user.shape == (0, 50)
    for start, stop in [(0, 7), (7, 10), (10, 20), (20, 21), (21, 50)]:
        rows = co.item_rows(pieces, (start, stop), narrow=narrow)
        wanted = dense[(dense[:, start:stop] != 0).any(axis=1)]
        first = (wanted[:, start:stop] != 0).argmax(axis=1) + start
        wanted[np.arange(wanted.shape[1])[None, :] < first[:, None]] = 0
        np.testing.assert_array_equal(rows.by_user.toarray(), wanted)
        columns = rows.by_item.toarray()  # only the range's columns, users ascending
        np.testing.assert_array_equal(columns[:, start:stop], wanted[:, start:stop])
        assert columns[:, :start].sum() == 0 and columns[:, stop:].sum() == 0
        assert rows.by_item.has_sorted_indices and rows.by_user.has_sorted_indices
        for layout in (rows.by_user, rows.by_item):
            assert layout.indices.dtype == (np.int32 if narrow else np.int64)
            assert layout.data.dtype == (np.int16 if narrow else co.COUNT_DTYPE)
    whole = co.item_rows([layouts_of(block)], (0, 50))
    np.testing.assert_array_equal(whole.by_item.toarray(), dense)


def test_item_rows_refuse_a_count_that_would_wrap() -> None:
    rows = co.occurrence_block(np.zeros(40000, dtype=np.int64), np.zeros(40000, dtype=np.int64), 1, 3)
    with pytest.raises(ValueError, match="a count of 40000 does not fit int16"):
        co.item_rows([layouts_of(rows)], (0, 3), narrow=True)


@pytest.mark.parametrize(("threads", "narrow"), [(1, False), (3, False), (2, True)])
def test_stacked_layouts_equal_the_stacked_rows(rng: np.random.Generator, threads: int, narrow: bool) -> None:
    block = random_occurrences(rng, 300, 50, 2000).by_user
    pieces = [block[:0], block[:120], block[120:121], block[121:121], block[121:]]
    wanted = co.stack_blocks([block])
    column_entries = np.diff(wanted.by_item.indptr)
    stacked = co.stack_occurrences((layouts_of(piece)() for piece in pieces), 300, column_entries, threads, narrow=narrow)
    if narrow:
        assert {a.dtype for a in (stacked.by_user.indptr, stacked.by_user.indices,
                                  stacked.by_item.indptr, stacked.by_item.indices)} == {np.dtype(np.int32)}
        assert stacked.by_user.data.dtype == stacked.by_item.data.dtype == np.int16
    for got, expected in ((stacked.by_user, wanted.by_user), (stacked.by_item, wanted.by_item)):
        assert got.shape == expected.shape
        for name in ("indptr", "indices", "data"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
    assert stacked.by_item.has_sorted_indices
    with pytest.raises(ValueError, match="other users or entries"):
        co.stack_occurrences((layouts_of(piece)() for piece in pieces[:2]), 300, column_entries)
    with pytest.raises(ValueError, match="other users or entries"):  # more entries than said: never written past
        co.stack_occurrences([layouts_of(block)()], 300, np.maximum(column_entries - 1, 0))
    wider = sp.csr_array(sp.hstack([block, sp.csr_array((300, 10), dtype=block.dtype)], format="csr"))
    with pytest.raises(ValueError, match="other users or entries"):  # the same entries, more items
        co.stack_occurrences([layouts_of(wider)()], 300, column_entries)
    huge = block.copy()
    huge.data[0] = 2**15  # one more than int16 holds
    with pytest.raises(ValueError, match="does not fit int16"):
        co.stack_occurrences([layouts_of(huge)()], 300, column_entries, narrow=True)
