"""The SPEC recipe as a straightforward single-process, vectorised pandas + scipy program.

This is the reference that bench_build.py times daskrec against: what a careful data scientist
would write on one machine (no per-element loops, no dense matrices, scores and top k taken in
chunks of rows), reading the whole log into memory. Usage: ``python bench/reference_build.py EVENTS.csv OUT.parquet [--event all]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from daskrec.llr import root_llr


def reference_indicators(path: str, event: str, recent: int, top_k: int, min_llr: float) -> pa.Table:
    events = pd.read_csv(path, usecols=["timestamp", "visitorid", "event", "itemid"], engine="pyarrow")
    if event != "all":
        events = events[events["event"].isin(event.split(","))]
    events = events.reset_index(drop=True)
    # Most recent N per visitor: latest timestamp first, later rows first on ties.
    events["position"] = np.arange(len(events))
    events = events.sort_values(["visitorid", "timestamp", "position"], ascending=[True, False, False])
    events = events[events.groupby("visitorid", sort=False).cumcount() < recent]
    users, _ = pd.factorize(events["visitorid"])
    items, item_ids = pd.factorize(events["itemid"], sort=True)
    n_items = len(item_ids)
    del events
    occ = sp.csr_array((np.ones(len(items), np.int64), (users, items)), shape=(users.max() + 1, n_items))
    occ.sum_duplicates()
    cooc = sp.csr_array(occ.T @ occ)
    cooc.setdiag(0)
    cooc.eliminate_zeros()
    row_sum = np.asarray(cooc.sum(axis=1)).astype(np.float64)
    total = row_sum.sum()
    # Score and select in chunks of rows, so that no array of all nonzeros' scores is ever held.
    offsets, kept_cols, kept_scores = [np.zeros(1, np.int64)], [], []
    chunk_rows = max(1, int(n_items * 20_000_000 / max(cooc.nnz, 1)))
    for start in range(0, n_items, chunk_rows):
        block = cooc[start : start + chunk_rows].tocoo()
        rows, cols, values = block.row, block.col, block.data.astype(np.float64)
        k12 = row_sum[rows + start] - values
        k21 = row_sum[cols] - values
        scores = root_llr(values, k12, k21, total - values - k12 - k21)
        keep = (scores > 0) & (scores >= min_llr)
        rows, cols, scores = rows[keep], cols[keep], scores[keep]
        order = np.lexsort((cols, -scores, rows))  # by row, score descending, smaller item first
        rows, cols, scores = rows[order], cols[order], scores[order]
        rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
        top = rank < top_k
        kept_cols.append(cols[top])
        kept_scores.append(scores[top])
        counts = np.bincount(rows[top], minlength=block.shape[0])
        offsets.append(offsets[-1][-1] + np.cumsum(counts))
    offsets_array = pa.array(np.concatenate(offsets).astype(np.int32))
    ids = pa.array(np.asarray(item_ids))
    return pa.table(
        {
            "item": ids,
            "indicators": pa.ListArray.from_arrays(offsets_array, ids.take(pa.array(np.concatenate(kept_cols)))),
            "scores": pa.ListArray.from_arrays(offsets_array, pa.array(np.concatenate(kept_scores))),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("events")
    parser.add_argument("out")
    parser.add_argument("--event", default="transaction")
    parser.add_argument("--recent", type=int, default=50)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--min-llr", type=float, default=5.0)
    args = parser.parse_args()
    table = reference_indicators(args.events, args.event, args.recent, args.top_k, args.min_llr)
    pq.write_table(table, args.out)


if __name__ == "__main__":
    main()
