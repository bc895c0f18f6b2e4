"""Out-of-core: a build on a log several times larger than the workers' memory limit.

Generates (or reuses) a seeded log, runs ``daskrec build --event all`` once with
``--memory-limit`` (one worker: the limit is the total) and once without, samples the resident
memory of each whole process tree every 50 ms, checks that the two outputs are identical, and
writes to ``--json``

    {"events", "input_bytes", "memory_limit_bytes", "peak_rss_bytes" (all processes of the
     constrained runs, the highest), "baseline_rss_bytes" (an idle client with its worker: the
     overhead a limit cannot cover), "wall_s", "unconstrained_wall_s" (medians),
     "unconstrained_peak_rss_bytes", "median_ratio", "rounds": [{each round's walls, ratio,
     peaks and stages}], "output_matches", "counts", "stages_s" (the last constrained run),
     "scaling": [...]}

With ``--rounds N`` the two builds alternate N times: this VM's speed drifts by 10-30% within
minutes, as much as the gap being measured, so one pair of runs can say 1.12x or 1.39x.

With ``--scaling 1000000,10000000,...`` it also builds each of those logs with the same limit
(single runs) and records events, input bytes, the work W = Σ over users of (distinct kept
items)², wall time and peak memory; ``--plot FILE.png`` draws time and peak memory against
events and against W.

Usage: ``python bench/bench_outofcore.py --events 100000000 --memory-limit 1.1GiB
--scaling 1000000,10000000,50000000,100000000 --json bench/results/outofcore.json
--plot bench/results/outofcore.png``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from dask.utils import parse_bytes

from measure import HERE, events_file, run_measured

BASELINE = (
    "from daskrec import connect, ClusterConfig\n"
    "import time\n"
    "with connect(ClusterConfig(memory_limit='{limit}'), dashboard_address=':0'):\n"
    "    time.sleep(3)\n"
)


def build(data: Path, out: Path, memory_limit: str | None) -> tuple[float, int, dict[str, Any]]:
    """Run ``daskrec build --event all --preset tutorial`` (the recipe the published figures were
    measured with); wall seconds, peak RSS bytes and the manifest."""
    command = [sys.executable, "-m", "daskrec", "build", str(data), "--out", str(out), "--event", "all",
               "--preset", "tutorial", "--no-progress", "--dashboard-address", ":0"]
    if memory_limit is not None:
        command += ["--memory-limit", memory_limit]
    wall, peak = run_measured(command)
    return wall, peak, json.loads((out / "manifest.json").read_text())


def scaling_point(data: Path, wall: float, peak: int, manifest: dict[str, Any]) -> dict[str, Any]:
    """One constrained build's row of the scaling table."""
    return {
        "events": manifest["counts"]["events_read"],
        "input_bytes": data.stat().st_size,
        "work": manifest["counts"]["work"],
        "wall_s": round(wall, 2),
        "peak_rss_bytes": peak,
        "runs": 1,
    }


def scaling_run(events: int, seed: int, memory_limit: str, data_dir: Path) -> dict[str, Any]:
    """One constrained build of a log of ``events`` rows."""
    data = events_file(events, seed, data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        wall, peak, manifest = build(data, Path(tmp) / "out", memory_limit)
    return scaling_point(data, wall, peak, manifest)


def plot(scaling: list[dict[str, Any]], memory_limit: int, path: Path) -> None:
    """Time and peak memory against events and against W (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "events", "events"), (axes[1], "work", "W = Σ users (kept items)²")):
        x = [run[key] for run in scaling]
        ax.loglog(x, [run["wall_s"] for run in scaling], "o-", label="wall time (s)")
        ax.loglog(x, [run["peak_rss_bytes"] / 2**20 for run in scaling], "s-", label="peak RSS (MiB)")
        ax.axhline(memory_limit / 2**20, color="grey", linestyle="--", label="memory limit (MiB)")
        ideal = [run["wall_s"] * x[-1] / run[key] for run in scaling[-1:]]
        ax.loglog([x[0], x[-1]], [ideal[0] * x[0] / x[-1], ideal[0]], ":", color="C0", label="∝ x (from the largest)")
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"daskrec build --event all --memory-limit {memory_limit / 2**30:.2f} GiB (single runs)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000_000)
    parser.add_argument("--memory-limit", default=None, help="Worker memory limit [default: a third of the input].")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, help="Limited and unlimited builds, alternating [default: 1].")
    parser.add_argument("--scaling", default="", help="Comma-separated event counts for the scaling runs.")
    parser.add_argument("--data-dir", type=Path, default=HERE / "data")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()

    data = events_file(args.events, args.seed, args.data_dir)
    input_bytes = data.stat().st_size
    limit = args.memory_limit or str(input_bytes // 3)
    limit_bytes = parse_bytes(limit)
    baseline_s, baseline_peak = run_measured([sys.executable, "-c", BASELINE.format(limit=limit)])
    rounds, same = [], True
    for _ in range(args.rounds):  # alternating, so that the VM's drift falls on both sides alike
        with tempfile.TemporaryDirectory() as tmp:
            constrained, unconstrained = Path(tmp) / "constrained", Path(tmp) / "unconstrained"
            wall, peak, manifest = build(data, constrained, limit)
            free_wall, free_peak, free_manifest = build(data, unconstrained, None)
            same = same and pq.read_table(constrained / "indicators.parquet").equals(pq.read_table(unconstrained / "indicators.parquet"))
        rounds.append({
            "wall_s": round(wall, 2), "unconstrained_wall_s": round(free_wall, 2), "ratio": round(wall / free_wall, 3),
            "peak_rss_bytes": peak, "unconstrained_peak_rss_bytes": free_peak,
            "stages_s": manifest["timings_s"], "unconstrained_stages_s": free_manifest["timings_s"],
        })
        print(json.dumps(rounds[-1]), file=sys.stderr)
    wall = statistics.median(r["wall_s"] for r in rounds)
    peak = max(r["peak_rss_bytes"] for r in rounds)
    result: dict[str, Any] = {
        "events": args.events,
        "input_bytes": input_bytes,
        "memory_limit_bytes": limit_bytes,
        "input_over_limit": round(input_bytes / limit_bytes, 2),
        "peak_rss_bytes": peak,
        "baseline_rss_bytes": baseline_peak,
        "wall_s": round(wall, 2),
        "unconstrained_wall_s": statistics.median(r["unconstrained_wall_s"] for r in rounds),
        "unconstrained_peak_rss_bytes": max(r["unconstrained_peak_rss_bytes"] for r in rounds),
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "rounds": rounds,
        "output_matches": same,
        "counts": manifest["counts"],
        "stages_s": manifest["timings_s"],
        "scaling": [],
    }
    for events in [int(n) for n in args.scaling.split(",") if n]:
        if events == args.events:  # the constrained run above is this point
            result["scaling"].append(scaling_point(data, wall, peak, manifest))
        else:
            result["scaling"].append(scaling_run(events, args.seed, limit, args.data_dir))
        print(json.dumps(result["scaling"][-1]), file=sys.stderr)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot and result["scaling"]:
        plot(result["scaling"], limit_bytes, args.plot)
    if not same:
        sys.exit("the constrained and unconstrained outputs differ")


if __name__ == "__main__":
    main()
