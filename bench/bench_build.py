"""Time ``daskrec build`` against a single-process scipy reference of the SPEC and against the
same recipe run with daskrec's own kernels in one process (``inprocess_build.py``: no Dask, no
scratch files), in the same run.

Generates (or reuses) a seeded log, runs the three as subprocesses, samples the resident memory
of each whole process tree (workers included) every 50 ms, checks that the outputs agree, and
writes

    {"events", "mode", "daskrec_s", "reference_s", "ratio", "inprocess_s", "inprocess_ratio",
     "daskrec_peak_gb", "reference_peak_gb", "inprocess_peak_gb", "outputs_match", "items",
     "items_with_indicators", "work", "kernel_work_per_s", "inprocess_kernel_work_per_s",
     "daskrec_stages_s", "inprocess_stages_s", "parse_s", "ingest_over_parse", "glibc_tunables"}

``ratio`` is daskrec over the reference, ``inprocess_ratio`` daskrec over the in-process run
(below 1: Dask pays for itself); ``work`` is W = Σ_users (kept items)², the kernel's
multiply-adds, and ``kernel_work_per_s`` W over the indicators stage's seconds. ``parse_s`` is
pyarrow's multi-threaded CSV reader parsing the four columns a build reads, typed, in this
process (imports excluded, as from the stages); ``ingest_over_parse`` is daskrec's ingest stage
over it.

All three, and the parse, run with the glibc tunables the ``daskrec`` command gives itself
(:mod:`daskrec.allocator`, recorded as ``glibc_tunables``): this script starts itself again with
them, so the ratios measure Dask and the recipe, not the allocator.

Usage: ``python bench/bench_build.py --events 10000000 --mode all --json bench/results/10M-all.json``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
from measure import HERE, events_file, outputs_match, run_measured

from daskrec.allocator import relaunch_with_huge_pages


def pyarrow_parse_s(path: Path) -> float:
    """Seconds pyarrow's multi-threaded CSV reader takes to parse the four columns a build reads."""
    types = {"timestamp": pa.int64(), "visitorid": pa.int64(), "event": pa.string(), "itemid": pa.int64()}
    started = time.perf_counter()
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(include_columns=list(types), column_types=types))
    seconds = time.perf_counter() - started
    del table
    return seconds


def main() -> None:
    relaunch_with_huge_pages()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--mode", choices=["transaction", "all"], default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=HERE / "data")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    data = events_file(args.events, args.seed, args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        out, ref, inprocess = Path(tmp) / "daskrec", Path(tmp) / "reference.parquet", Path(tmp) / "inprocess.parquet"
        event = "all" if args.mode == "all" else "transaction"
        daskrec_s, daskrec_peak = run_measured(
            [sys.executable, "-m", "daskrec", "build", str(data), "--out", str(out), "--event", event,
             "--preset", "tutorial", "--no-progress", "--dashboard-address", ":0"]
        )
        reference_s, reference_peak = run_measured(
            [sys.executable, str(HERE / "reference_build.py"), str(data), str(ref), "--event", event]
        )
        inprocess_report = Path(tmp) / "inprocess.json"
        inprocess_s, inprocess_peak = run_measured(
            [sys.executable, str(HERE / "inprocess_build.py"), str(data), str(inprocess), "--event", event,
             "--preset", "tutorial", "--report", str(inprocess_report)]
        )
        parse_s = pyarrow_parse_s(data)
        manifest = json.loads((out / "manifest.json").read_text())
        alone = json.loads(inprocess_report.read_text())
        work = manifest["counts"]["work"]
        result = {
            "events": args.events,
            "mode": args.mode,
            "daskrec_s": round(daskrec_s, 2),
            "reference_s": round(reference_s, 2),
            "ratio": round(daskrec_s / reference_s, 3),
            "inprocess_s": round(inprocess_s, 2),
            "inprocess_ratio": round(daskrec_s / inprocess_s, 3),
            "daskrec_peak_gb": round(daskrec_peak / 1e9, 2),
            "reference_peak_gb": round(reference_peak / 1e9, 2),
            "inprocess_peak_gb": round(inprocess_peak / 1e9, 2),
            "outputs_match": outputs_match(out / "indicators.parquet", ref) and outputs_match(inprocess, ref),
            "items": manifest["counts"]["items"],
            "items_with_indicators": manifest["counts"]["items_with_indicators"],
            "work": work,
            "kernel_work_per_s": round(work / manifest["timings_s"]["indicators"]),
            "inprocess_kernel_work_per_s": round(alone["work"] / alone["timings_s"]["indicators"]),
            "daskrec_stages_s": manifest["timings_s"],
            "inprocess_stages_s": alone["timings_s"],
            "parse_s": round(parse_s, 2),
            "ingest_over_parse": round(manifest["timings_s"]["ingest"] / parse_s, 2),
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if not result["outputs_match"]:
        sys.exit("daskrec, the in-process run and the reference disagree")


if __name__ == "__main__":
    main()
