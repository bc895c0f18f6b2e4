"""The indicators stage alone, A/B: the kernel the pipeline runs per block of item rows
(:func:`daskrec.indicators.indicator_block` over ranges of equal work on a pool of threads) against
the kernel for a matrix held whole (:func:`daskrec.indicators.all_indicators`: each pair of items
once), on the same occurrence matrix, in alternating rounds, outputs checked identical.

The matrix comes from a seeded generated log through ``inprocess_build.py``'s ingest and
occurrence steps. ``work`` is W = Σ_users (kept items)², the multiply-adds the per-row kernel
does, and ``*_work_per_s`` W over each kernel's best time, so the ratio is the speed-up in the
unit the performance issue counts in.

``--reference DIR`` adds the same two kernels of an earlier checkout (``git worktree add DIR
REV``), loaded beside today's under another package name and timed in the same rounds, so that a
kernel change is measured against the code before it: ``reference_blocks_s``,
``reference_pairs_s``, and ``speedup_over_reference_blocks`` / ``speedup_over_reference_pairs``
(today's pair kernel in W per second over each); their outputs must match today's too.

``--json FILE`` writes ``{"events", "mode", "preset", "threads", "work", "nonzeros", "blocks_s",
"pairs_s", "blocks_work_per_s", "pairs_work_per_s", "ratio", "pairs_extra_gb", "outputs_match"}``
(``ratio`` is pairs over blocks in W per second; ``pairs_extra_gb`` is :func:`pair_kernel_bytes`),
and the reference's fields when given.

Usage: ``python bench/bench_kernel.py --events 10000000 --mode all --reference /tmp/before --json bench/results/kernel-10M-all.json``
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import shutil
import sys
import tempfile
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


def load_reference(checkout: Path) -> object:
    """The ``daskrec.indicators`` module of another checkout, copied into a temporary folder as
    package ``daskrec_reference`` (its relative imports resolve inside it). A copy, not the checkout
    itself: numba's cache beside the source is keyed by file, not by package name, so the
    checkout's own cache entries would name the wrong package."""
    if not (checkout / "daskrec" / "indicators.py").exists():
        sys.exit(f"--reference: no daskrec package in {checkout}")
    into = Path(tempfile.mkdtemp(prefix="daskrec-reference-"))
    atexit.register(shutil.rmtree, into, True)
    shutil.copytree(checkout / "daskrec", into / "daskrec_reference", ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(into))
    return importlib.import_module("daskrec_reference.indicators")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--mode", choices=["transaction", "all"], default="all")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tutorial")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=2, help="Alternating runs of each kernel; the best counts.")
    parser.add_argument("--reference", type=Path, default=None, help="A checkout of an earlier commit whose kernels to time too.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    reference = load_reference(args.reference) if args.reference else None

    base = PRESETS[args.preset].build
    config = BuildConfig(ingest=IngestConfig(event_types=None if args.mode == "all" else ("transaction",), recent=base.ingest.recent),
                         indicators=base.indicators)
    chosen = config.indicators
    _, occurrences, summary = occurrences_of(str(events_file(args.events, 0)), config, {})
    margins = summary.margins
    plan = co.split_by_work(summary.work, 8 * args.threads)

    def blocks(module: object = None) -> list[IndicatorBlock]:
        per_block = module.indicator_block if module else indicator_block  # type: ignore[attr-defined]
        with ThreadPoolExecutor(args.threads) as pool:
            return list(pool.map(lambda span: per_block(occurrences, margins, span[0], span[1], chosen.top_k, chosen.min_llr), plan))

    def pairs(module: object = None) -> list[IndicatorBlock]:
        every_pair = module.all_indicators if module else all_indicators  # type: ignore[attr-defined]
        return list(every_pair(occurrences, margins, chosen.top_k, chosen.min_llr, args.threads, plan))

    kernels = {"blocks": blocks, "pairs": pairs}
    if reference is not None:
        kernels |= {"reference_blocks": lambda: blocks(reference), "reference_pairs": lambda: pairs(reference)}
    for kernel in kernels.values():
        kernel()  # numba compiles (or loads from its cache) outside the timed rounds
    seconds: dict[str, list[float]] = {name: [] for name in kernels}
    results: dict[str, list[IndicatorBlock]] = {}
    for _ in range(args.rounds):
        for name, kernel in kernels.items():
            started = time.perf_counter()
            results[name] = kernel()
            seconds[name].append(time.perf_counter() - started)
            print(f"{name}: {seconds[name][-1]:.2f} s", flush=True)
    work = int(summary.work.sum())
    blocks_s, pairs_s = min(seconds["blocks"]), min(seconds["pairs"])
    compared = {}
    if reference is not None:
        before = {name: min(seconds[f"reference_{name}"]) for name in ("blocks", "pairs")}
        compared = {
            "reference": str(args.reference),
            "reference_blocks_s": round(before["blocks"], 3), "reference_pairs_s": round(before["pairs"], 3),
            "speedup_over_reference_blocks": round(before["blocks"] / pairs_s, 3),
            "speedup_over_reference_pairs": round(before["pairs"] / pairs_s, 3),
        }
    report({
        "events": args.events, "mode": args.mode, "preset": args.preset, "threads": args.threads, "work": work,
        "nonzeros": sum(b.cooccurrence_nonzeros for b in results["pairs"]),
        "blocks_s": round(blocks_s, 3), "pairs_s": round(pairs_s, 3),
        "blocks_work_per_s": round(work / blocks_s), "pairs_work_per_s": round(work / pairs_s),
        "ratio": round(blocks_s / pairs_s, 3),
        "pairs_extra_gb": round(pair_kernel_bytes(occurrences.n_items, 1, chosen.top_k, args.threads, max(b - a for a, b in plan)) / 1e9, 3),
        "outputs_match": all(same(results["blocks"], results[name]) for name in kernels if name != "blocks"),
        **compared,
    }, args.json)


if __name__ == "__main__":
    main()
