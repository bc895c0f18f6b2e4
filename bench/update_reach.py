"""How much of the pair work an exact incremental update could skip, at best (issue 13).

The seeded log is cut as ``bench_update.py`` cuts it (a base and the latest ``--fraction``). For a
uniform sample of item rows, each row's candidates (items it co-occurs with, before or after the
update) are scored before and after with daskrec's own matrix and root LLR, at the given preset,
in one process. An update that keeps every row's old scores could re-rank a row by rescoring
only:

* its old list (the top k) and the pairs whose count changed (``changed_count``), and then
* the other candidates whose old score, raised by the most any of them moved, reaches the k-th
  best of those rescored: the band a bound on the movement would have to search.

The movement used is the largest one that happened in the row (``|new - old|`` over the pairs
outside the first group), which no a priori bound can beat, so ``rescored`` is a lower bound on
that design's work. ``rescored_if_margins`` also rescored every pair whose other item's margin
changed. ``table_scored_share``: the candidates a design still has to score when each row keeps,
for each count, the largest margin of the other item that can reach the row's k-th score (the
old list rescored gives that score): every candidate outside the old list whose other item's
margin is above it is settled by one comparison; ``table_misses`` counts those it would wrongly
settle (0 when the score falls with the margin, as it should). Shares are of the sampled rows'
candidates.

Usage: ``python bench/update_reach.py --events 50000000 --fraction 0.01 [--preset default]
[--sample 2000] [--json FILE]``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from bench_update import split_log
from inprocess_build import occurrences_of
from measure import HERE, events_file, report

from daskrec.config import PRESETS, BuildConfig, IngestConfig
from daskrec.llr import root_llr


def item_rows(path: Path, config: BuildConfig) -> tuple[pd.Index, sp.csr_array, sp.csc_array, np.ndarray, int]:
    """The log's item vocabulary, occurrence matrix in both layouts, item margins and total."""
    vocabulary, occurrences, summary = occurrences_of(str(path), config, {})
    margins = summary.margins
    return vocabulary, occurrences.by_user, occurrences.by_item, margins.row_sum.astype(np.int64), int(margins.totals[0])


def largest_margins(k11: np.ndarray, row: int, total: int, threshold: float) -> np.ndarray:
    """For each count in ``k11``, the largest column margin with which a pair of that count in a
    row of margin ``row`` still scores at least ``threshold`` (``count - 1`` when none does):
    the root LLR falls as the other item's margin grows, for a fixed count (checked by
    ``table_misses``)."""
    values, where = np.unique(k11, return_inverse=True)

    def score(a: np.ndarray, c: np.ndarray) -> np.ndarray:
        a, c = a.astype(np.float64), c.astype(np.float64)
        return root_llr(a, row - a, c - a, total - row - c + a)

    low = values.copy()  # the least margin a pair of count a can have
    high = np.full_like(values, total - row) + values
    passes = score(values, low) >= threshold
    low, high = low[passes], high[passes]
    for _ in range(64):  # binary search on the margin: score(low) passes, score(high + 1) fails
        if not (low < high).any():
            break
        middle = (low + high + 1) // 2
        up = score(values[passes], middle) >= threshold
        low, high = np.where(up, middle, low), np.where(up, high, middle - 1)
    largest = values - 1
    largest[passes] = low
    return largest[where]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000_000)
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    chosen = PRESETS[args.preset].build
    config = BuildConfig(ingest=IngestConfig(event_types=None, recent=chosen.ingest.recent), indicators=chosen.indicators)
    top_k, min_score = config.indicators.top_k, config.indicators.min_llr
    source = events_file(args.events, 0)
    with tempfile.TemporaryDirectory(prefix="update-reach-", dir=HERE / "data") as tmp:
        base_log, _ = split_log(source, args.fraction, Path(tmp))
        after = item_rows(source, config)
        before = item_rows(base_log, config)
    (v_after, users_after, items_after, margin_after, total_after) = after
    (v_before, users_before, items_before, margin_before, total_before) = before
    before_code = v_before.get_indexer(v_after)  # of each item after the update, -1 if new
    sample = np.sort(np.random.default_rng(args.seed).choice(np.flatnonzero(before_code >= 0), args.sample, replace=False))
    to_after = v_after.get_indexer(v_before)
    margin_before_after = np.zeros(len(v_after), np.int64)
    margin_before_after[to_after] = margin_before
    rows_after = sp.csr_array(items_after[:, sample].T @ users_after)
    rows_before = sp.csr_array(items_before[:, before_code[sample]].T @ users_before)
    totals = dict.fromkeys(["candidates", "old_list", "changed_count", "rescored", "rescored_if_margins", "table_scored", "table_misses"], 0)
    for n, item in enumerate(sample):
        count_after = pd.Series(rows_after.data[rows_after.indptr[n] : rows_after.indptr[n + 1]],
                                rows_after.indices[rows_after.indptr[n] : rows_after.indptr[n + 1]])
        count_before = pd.Series(rows_before.data[rows_before.indptr[n] : rows_before.indptr[n + 1]],
                                 to_after[rows_before.indices[rows_before.indptr[n] : rows_before.indptr[n + 1]]])
        counts = pd.concat([count_before.rename("before"), count_after.rename("after")], axis=1).fillna(0).drop(index=item, errors="ignore")
        other = counts.index.to_numpy()
        scores = {}
        for side, margin, total in (("before", margin_before_after, total_before), ("after", margin_after, total_after)):
            k11 = counts[side].to_numpy(np.float64)
            k12, k21 = margin[item] - k11, margin[other] - k11
            scores[side] = np.where(k11 > 0, root_llr(k11, k12, k21, total - k11 - k12 - k21), -np.inf)
        listed = np.flatnonzero(scores["before"] >= min_score)
        old_list = np.zeros(len(other), dtype=bool)
        old_list[listed[np.argsort(-scores["before"][listed], kind="stable")[:top_k]]] = True
        changed_count = (counts["before"] != counts["after"]).to_numpy()
        changed_margin = margin_after[other] != margin_before_after[other]
        for name, known in (("rescored", old_list | changed_count), ("rescored_if_margins", old_list | changed_count | changed_margin)):
            rest = ~known
            moved = np.max(np.abs(scores["after"][rest] - scores["before"][rest]), initial=0.0)
            best = np.sort(scores["after"][known & (scores["after"] >= min_score)])[::-1]
            kth = best[top_k - 1] if len(best) >= top_k else min_score
            totals[name] += int(known.sum() + (rest & (scores["before"] + moved >= kth)).sum())
        # Settled by a table instead of a score: a candidate outside the old list whose column
        # margin is above the largest that its count could still reach the k-th score with.
        best = np.sort(scores["after"][old_list & (scores["after"] >= min_score)])[::-1]
        kth = best[top_k - 1] if len(best) >= top_k else min_score
        k11_after = counts["after"].to_numpy(np.int64)
        reachable = largest_margins(k11_after, int(margin_after[item]), total_after, kth)
        settled = ~old_list & (k11_after > 0) & (margin_after[other] > reachable)
        totals["table_scored"] += int((~settled).sum())
        totals["table_misses"] += int((settled & (scores["after"] >= kth)).sum())
        totals["candidates"] += len(other)
        totals["old_list"] += int(old_list.sum())
        totals["changed_count"] += int(changed_count.sum())
    result: dict[str, object] = {"events": args.events, "fraction": args.fraction, "preset": args.preset, "rows_sampled": args.sample,
                                 "candidates": totals["candidates"], "total_before": total_before, "total_after": total_after}
    result |= {f"{name}_share": round(value / totals["candidates"], 4) for name, value in totals.items() if name != "candidates"}
    report(result, args.json)


if __name__ == "__main__":
    main()
