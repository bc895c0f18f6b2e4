"""The least time an exact update that re-ranks only what moved could take, against a full build
of the same log in the same run (issue 13's targets: a 1% update in at most 10% of the build's
time, a 10% update in 40%).

The design measured is the one ``update_reach.py`` bounds: keep every pair's count with the
state, add the changed visitors' differences, and rescore only each row's old list, the pairs
whose count changed, and the candidates that the largest movement that actually happened in the
row could lift to its new k-th score (``rescored_share`` of the sampled candidates in
``bench/results/update-reach-<N>M-<P>pct.json``, which ``make bench-update`` writes). The work
such an update cannot skip is timed here, each part as the least it could be:

* ``start_s``: a process that loads what a build needs and calls one cached numba function
  (``bench_startup.py``'s floor), median of three;
* ``new_events_s``: the update's file read by pyarrow's CSV reader (no checks, no cut), the
  faster of two reads (so from the page cache), as the table reads and writes below;
* ``old_table_s``: the build's ``indicators.parquet`` read (the old lists to compare with);
* ``rescore_s``: ``rescored_share`` of the full build's co-occurrence nonzeros scored as the
  pair kernel scores them (the sign test first, xLogX read from its tables, each item's entropy
  once) and offered to per-row top-k heaps (the kernel's own), on every core, counts and margins
  already in memory (generated: geometric counts, long-tailed margins);
* ``write_s``: the table written uncompressed (the fastest valid ``indicators.parquet``; nearly
  every score changes, so the whole table is written).

Given free, so the floor is below any real update of this design: reading the kept counts and
the changed visitors' rows, computing the count differences, the manifest and the state.
``floor_s`` is the sum and ``ratio_bound = floor_s / full_s``, where ``full_s`` is a whole
``daskrec build`` process of the log in the same run; ``*_best_first`` the same with each row's
candidates offered about best first (by descending count), as an update could offer its old
list first.

And below that, what any exact update pays, whatever its design: every score depends on the
table's totals, so every score of the new table is computed again (``output_scores_s``: as many
root LLRs as the full build's table holds, not ranked), besides the start, the new events and
the write; ``least_s`` is that sum and ``least_ratio = least_s / full_s``.

Usage: ``python bench/update_floor.py --events 50000000 --fractions 0.01,0.1 [--json FILE]``
(``--events 5000000 --reach-events 50000000``: a quick run with the 50M log's shares)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np
import pyarrow.csv as pv
import pyarrow.parquet as pq
from bench_startup import FLOOR
from bench_update import split_log
from measure import HERE, events_file, report, run_measured

from daskrec.indicators import _drain, _offer, _xlogx_read, _xlogx_tables
from daskrec.llr import llr_from_entropies, negated, xlogx

TARGETS = {0.01: 0.10, 0.1: 0.40}


@numba.njit(parallel=True, cache=True)
def rescore(  # noqa: PLR0913 - a compiled kernel takes arrays
    per_row: int, k11: np.ndarray, columns: np.ndarray, row_sum: np.ndarray, column_sum: np.ndarray, total: int,
    top_k: int, min_score: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Row i's candidates ``[i * per_row, (i + 1) * per_row)`` scored and ranked as the pair
    kernel does it (the sign test first, xLogX read from its tables, each side's entropy once per
    item), rows spread over the threads; each row's best ``top_k`` of at least ``min_score``."""
    n_rows = len(row_sum)
    out_scores = np.full(n_rows * top_k, -np.inf)
    out_items = np.full(n_rows * top_k, -1, dtype=np.int64)
    xlogx_total = xlogx(float(total))
    xlogx_count, xlogx_rest = _xlogx_tables(int(max(row_sum.max(), column_sum.max())), total)
    entropy_row = np.empty(n_rows)
    for i in range(n_rows):
        entropy_row[i] = xlogx_total - xlogx(float(row_sum[i])) - xlogx(float(total - row_sum[i]))
    entropy_column = np.empty(len(column_sum))
    for column in range(len(column_sum)):
        entropy_column[column] = xlogx_total - xlogx(float(column_sum[column])) - xlogx(float(total - column_sum[column]))
    threads = numba.get_num_threads()
    for thread in numba.prange(threads):
        heap_score = np.empty((1, top_k))
        heap_item = np.empty((1, top_k), dtype=np.int64)
        for i in range(thread, n_rows, threads):
            size = 0
            row = int(row_sum[i])
            for p in range(i * per_row, (i + 1) * per_row):
                j = columns[p]
                a = int(k11[p])
                b, c = row - a, int(column_sum[j]) - a
                d = total - a - b - c
                if negated(float(a), float(b), float(c), float(d)):
                    continue
                matrix = xlogx_total - _xlogx_read(xlogx_count, a, a) - _xlogx_read(xlogx_count, b, b) - _xlogx_read(xlogx_count, c, c)
                matrix -= _xlogx_read(xlogx_rest, a + b + c, d)
                score = math.sqrt(llr_from_entropies(entropy_row[i] + entropy_column[j], matrix))
                if score >= min_score:
                    size = _offer(heap_score, heap_item, 0, size, top_k, score, j)
            _drain(heap_score, heap_item, 0, size, out_scores, out_items, i * top_k)
    return out_scores, out_items


def rescore_seconds(candidates: int, items: int, users: int, top_k: int, min_score: float, seed: int) -> tuple[float, float]:
    """Wall seconds of :func:`rescore` over ``candidates`` spread evenly over ``items`` rows, with
    counts and margins of the generated log's shape (geometric counts, long-tailed margins): in
    no order, then each row's candidates by descending count (about best first, as an update
    could offer its old list first, so that fewer candidates enter a heap)."""
    rng = np.random.default_rng(seed)
    per_row = max(1, math.ceil(candidates / items))
    k11 = rng.geometric(0.3, per_row * items).astype(np.int32)
    columns = rng.integers(0, items, per_row * items, dtype=np.int32)
    margins = np.minimum(users // 4, (k11.max() + 1) * (1.0 / rng.random(items)) ** 0.8).astype(np.int64)
    rescore(2, k11[:4], columns[:4] % 2, margins[:2], margins[:2], users, top_k, min_score)  # compiled (or cached) first
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        rescore(per_row, k11, columns, margins, margins, users, top_k, min_score)
        seconds.append(time.perf_counter() - started)
        order = np.argsort(-k11.reshape(items, per_row), axis=1, kind="stable")
        k11 = np.take_along_axis(k11.reshape(items, per_row), order, axis=1).ravel()
        columns = np.take_along_axis(columns.reshape(items, per_row), order, axis=1).ravel()
        del order
    return seconds[0], seconds[1]


def best_of(rounds: int, work: Callable[[], object]) -> float:
    """The least wall seconds of ``work`` over ``rounds`` calls (the first warms caches)."""
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return min(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fractions", default="0.01,0.1")
    parser.add_argument("--data-dir", type=Path, default=HERE / "data")
    parser.add_argument("--reach-events", type=int, default=None,
                        help="Take the rescored shares measured on the log of this many events (default: --events).")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    reach_events = args.reach_events or args.events
    source = events_file(args.events, args.seed, args.data_dir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="update-floor-", dir=args.data_dir) as tmp:
        folder = Path(tmp)
        full_s, _ = run_measured([sys.executable, "-m", "daskrec", "build", str(source), "--out", str(folder / "full"),
                                  "--event", "all", "--no-progress"])
        manifest = json.loads((folder / "full" / "manifest.json").read_text())
        counts, options = manifest["counts"], manifest["options"]["indicators"]
        (folder / "floor.py").write_text(FLOOR)
        start_s = statistics.median(run_measured([sys.executable, str(folder / "floor.py")])[0] for _ in range(3))
        table = pq.read_table(folder / "full" / "indicators.parquet")
        old_table_s = best_of(2, lambda: pq.read_table(folder / "full" / "indicators.parquet"))
        write_s = best_of(2, lambda: pq.write_table(table, folder / "written.parquet", compression="none"))
        for fraction in (float(f) for f in args.fractions.split(",")):
            reach_file = HERE / "results" / f"update-reach-{reach_events // 1_000_000}M-{round(fraction * 100)}pct.json"
            share = json.loads(reach_file.read_text())["rescored_share"]
            _, update = split_log(source, fraction, folder)
            new_events_s = best_of(2, lambda: pv.read_csv(update))
            candidates = round(share * counts["cooccurrence_nonzeros"])
            rescore_s, best_first_s = rescore_seconds(candidates, counts["items"], counts["users"], options["top_k"], options["min_llr"], args.seed)
            floor_s = start_s + new_events_s + old_table_s + rescore_s + write_s
            floor_best_first_s = floor_s - rescore_s + best_first_s
            output_scores_s, _ = rescore_seconds(counts["indicators"], counts["items"], counts["users"], options["top_k"], math.inf, args.seed)
            least_s = start_s + new_events_s + output_scores_s + write_s
            rows.append({
                "events": args.events, "fraction": fraction, "full_s": round(full_s, 2), "rescored_share": share,
                "candidates_rescored": candidates, "start_s": round(start_s, 2), "new_events_s": round(new_events_s, 2),
                "old_table_s": round(old_table_s, 2), "rescore_s": round(rescore_s, 2), "write_s": round(write_s, 2),
                "floor_s": round(floor_s, 2), "ratio_bound": round(floor_s / full_s, 3), "target": TARGETS.get(fraction),
                "rescore_best_first_s": round(best_first_s, 2), "floor_best_first_s": round(floor_best_first_s, 2),
                "ratio_bound_best_first": round(floor_best_first_s / full_s, 3),
                "output_scores_s": round(output_scores_s, 2), "least_s": round(least_s, 2), "least_ratio": round(least_s / full_s, 3),
                "full_stages_s": manifest["timings_s"],
            })
            print(json.dumps(rows[-1]), file=sys.stderr)
    report(rows, args.json)


if __name__ == "__main__":
    main()
