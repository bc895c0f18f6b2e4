"""The indicators stage alone, A/B: the kernel the pipeline runs per block of item rows
(:func:`daskrec.indicators.indicator_block` over ranges of equal work on a pool of threads) against
the kernel for a matrix held whole (:func:`daskrec.indicators.all_indicators`: each pair of items
once), on the same occurrence matrix, in alternating rounds, outputs checked identical.

The matrix comes from a seeded generated log through ``inprocess_build.py``'s ingest and
occurrence steps. ``work`` is W = Σ_users (kept items)², the multiply-adds the per-row kernel
does, and ``*_work_per_s`` W over each kernel's best time, so the ratio is the speed-up in the
unit the performance issue counts in.

``--json FILE`` writes ``{"events", "mode", "threads", "work", "nonzeros", "blocks_s", "pairs_s",
"blocks_work_per_s", "pairs_work_per_s", "ratio", "pairs_extra_gb", "outputs_match"}`` (``ratio``
is pairs over blocks in W per second; ``pairs_extra_gb`` is :func:`pair_kernel_bytes`).

Usage: ``python bench/bench_kernel.py --events 10000000 --mode all --json bench/results/kernel-10M-all.json``
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from inprocess_build import occurrences_of
from measure import events_file, report

from daskrec import cooccurrence as co
from daskrec.config import PRESETS, BuildConfig, IngestConfig
from daskrec.indicators import IndicatorBlock, all_indicators, indicator_block, pair_kernel_bytes


def same(blocks: list[IndicatorBlock], others: list[IndicatorBlock]) -> bool:
    """Whether two lists of blocks hold exactly the same rows, block by block, and as many
    nonzeros in all."""
    return len(blocks) == len(others) and sum(b.cooccurrence_nonzeros for b in blocks) == sum(b.cooccurrence_nonzeros for b in others) and all(
        (a.start, a.stop) == (b.start, b.stop)
        and np.array_equal(a.counts, b.counts) and np.array_equal(a.item_codes, b.item_codes) and np.array_equal(a.scores, b.scores)
        for a, b in zip(blocks, others)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--mode", choices=["transaction", "all"], default="all")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tutorial")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=2, help="Alternating runs of each kernel; the best counts.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    base = PRESETS[args.preset].build
    config = BuildConfig(ingest=IngestConfig(event_types=None if args.mode == "all" else ("transaction",), recent=base.ingest.recent),
                         indicators=base.indicators)
    chosen = config.indicators
    _, occurrences, summary = occurrences_of(str(events_file(args.events, 0)), config, {})
    margins = summary.margins
    plan = co.split_by_work(summary.work, 8 * args.threads)

    def blocks() -> list[IndicatorBlock]:
        with ThreadPoolExecutor(args.threads) as pool:
            return list(pool.map(lambda span: indicator_block(occurrences, margins, span[0], span[1], chosen.top_k, chosen.min_llr), plan))

    def pairs() -> list[IndicatorBlock]:
        return list(all_indicators(occurrences, margins, chosen.top_k, chosen.min_llr, args.threads, plan))

    seconds: dict[str, list[float]] = {"blocks": [], "pairs": []}
    results: dict[str, list[IndicatorBlock]] = {}
    for _ in range(args.rounds):
        for name, kernel in (("blocks", blocks), ("pairs", pairs)):
            started = time.perf_counter()
            results[name] = kernel()
            seconds[name].append(time.perf_counter() - started)
            print(f"{name}: {seconds[name][-1]:.2f} s", flush=True)
    work = int(summary.work.sum())
    blocks_s, pairs_s = min(seconds["blocks"]), min(seconds["pairs"])
    report({
        "events": args.events, "mode": args.mode, "threads": args.threads, "work": work,
        "nonzeros": sum(b.cooccurrence_nonzeros for b in results["pairs"]),
        "blocks_s": round(blocks_s, 3), "pairs_s": round(pairs_s, 3),
        "blocks_work_per_s": round(work / blocks_s), "pairs_work_per_s": round(work / pairs_s),
        "ratio": round(blocks_s / pairs_s, 3),
        "pairs_extra_gb": round(pair_kernel_bytes(occurrences.n_items, 1, chosen.top_k, args.threads, max(b - a for a, b in plan)) / 1e9, 3),
        "outputs_match": same(results["blocks"], results["pairs"]),
    }, args.json)


if __name__ == "__main__":
    main()
