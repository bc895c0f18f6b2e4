"""Time ``daskrec build`` against a single-process scipy reference of the SPEC, in the same run.

Generates (or reuses) a seeded log, runs both as subprocesses, samples the resident memory of
each whole process tree (workers included) every 50 ms, checks that the outputs agree, and writes

    {"events", "mode", "daskrec_s", "reference_s", "ratio", "daskrec_peak_gb", "reference_peak_gb",
     "outputs_match", "items", "items_with_indicators", "daskrec_stages_s"}

Usage: ``python bench/bench_build.py --events 10000000 --mode all --json bench/results/10M-all.json``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq

from daskrec import SynthConfig, generate_events

HERE = Path(__file__).resolve().parent


def run_measured(command: list[str]) -> tuple[float, float]:
    """Run ``command``; return (wall seconds, peak GB of RSS summed over its process tree)."""
    started = time.perf_counter()
    process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"{command[:4]} failed:\n{process.stderr.read().decode() if process.stderr else ''}")
    return wall, peak / 1e9


def outputs_match(ours: Path, reference: Path) -> bool:
    """Same items, same indicator lists, scores within 1e-9 relative."""
    a, b = pq.read_table(ours), pq.read_table(reference)
    if a.column("item").to_pylist() != b.column("item").to_pylist():
        return False
    if a.column("indicators").to_pylist() != b.column("indicators").to_pylist():
        return False
    x = a.column("scores").combine_chunks().flatten().to_numpy()
    y = b.column("scores").combine_chunks().flatten().to_numpy()
    return bool(np.allclose(x, y, rtol=1e-9, atol=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--mode", choices=["transaction", "all"], default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=HERE / "data")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    data = args.data_dir / f"events-{args.events}-seed{args.seed}.csv"
    if not data.exists():
        print(f"generating {data} ...", file=sys.stderr)
        generate_events(str(data), SynthConfig(events=args.events, seed=args.seed))
    with tempfile.TemporaryDirectory() as tmp:
        out, ref = Path(tmp) / "daskrec", Path(tmp) / "reference.parquet"
        event = "all" if args.mode == "all" else "transaction"
        daskrec_s, daskrec_peak = run_measured(
            [sys.executable, "-m", "daskrec", "build", str(data), "--out", str(out), "--event", event,
             "--no-progress", "--dashboard-address", ":0"]
        )
        reference_s, reference_peak = run_measured(
            [sys.executable, str(HERE / "reference_build.py"), str(data), str(ref), "--event", event]
        )
        manifest = json.loads((out / "manifest.json").read_text())
        result = {
            "events": args.events,
            "mode": args.mode,
            "daskrec_s": round(daskrec_s, 2),
            "reference_s": round(reference_s, 2),
            "ratio": round(daskrec_s / reference_s, 3),
            "daskrec_peak_gb": round(daskrec_peak, 2),
            "reference_peak_gb": round(reference_peak, 2),
            "outputs_match": outputs_match(out / "indicators.parquet", ref),
            "items": manifest["counts"]["items"],
            "items_with_indicators": manifest["counts"]["items_with_indicators"],
            "daskrec_stages_s": manifest["timings_s"],
        }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if not result["outputs_match"]:
        sys.exit("daskrec and the reference disagree")


if __name__ == "__main__":
    main()
