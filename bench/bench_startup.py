"""A whole small ``daskrec build`` process, start to exit, against the floor of its libraries.

Issue 15 asks for a build of ml-latest-small (it ships in ``tests/data``) in at most 2 s, start to
exit. Most of such a process is loading libraries, so each round runs, as fresh processes:

* ``build``: ``python -m daskrec build`` of ml-latest-small (in the process, Dask's threaded
  scheduler: the default for a small input);
* ``dashboard``: the same with ``--dashboard`` (a LocalCluster and its dashboard);
* ``floor``: a script that only imports what a build cannot do without (numpy, pandas, pyarrow,
  the dask scheduler, scipy.sparse, fsspec, click, numba), calls one numba function compiled
  before (from numba's cache, as the build's kernels are: the first call sets up numba's
  compiler), and exits as the CLI does (without the last garbage collection). No build can start
  and end faster on the same machine.

Rounds alternate the three, after one round that fills the caches; the machine's speed drifts,
so compare within a run. Writes ``{"rounds", "build_s", "dashboard_s", "floor_s"}`` (each a list
of wall seconds) with their medians, ``build_over_floor_s`` (median build minus median floor)
and ``outputs_match`` (the two builds' tables are equal).

Usage: ``python bench/bench_startup.py --rounds 5 --json bench/results/startup.json``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from measure import HERE, report, run_measured

SMALL = HERE.parent / "tests" / "data" / "ml-latest-small" / "events.csv"
FLOOR = """\
import gc
import click, dask.delayed, dask.threaded, fsspec, numba, numpy, pandas, pyarrow.csv, pyarrow.parquet, scipy.sparse


@numba.njit(cache=True)
def total(values):
    result = 0.0
    for value in values:
        result += value
    return result


total(numpy.ones(3))
gc.freeze()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        floor = Path(tmp) / "floor.py"
        floor.write_text(FLOOR)
        runs = {
            "build": [sys.executable, "-m", "daskrec", "build", str(SMALL), "--out", f"{tmp}/build", "--no-progress"],
            "dashboard": [sys.executable, "-m", "daskrec", "build", str(SMALL), "--out", f"{tmp}/dashboard",
                          "--no-progress", "--dashboard", "--dashboard-address", ":0"],
            "floor": [sys.executable, str(floor)],
        }
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for round_number in range(args.rounds + 1):
            for name, command in runs.items():
                wall, _ = run_measured(command)
                if round_number:  # the first round fills numba's and Python's caches
                    seconds[name].append(round(wall, 2))
            print({name: times[-1:] for name, times in seconds.items()}, file=sys.stderr)
        same = pq.read_table(f"{tmp}/build/indicators.parquet").equals(pq.read_table(f"{tmp}/dashboard/indicators.parquet"))
    medians = {f"{name}_median_s": round(statistics.median(times), 2) for name, times in seconds.items()}
    report(
        {
            "rounds": args.rounds,
            **{f"{name}_s": times for name, times in seconds.items()},
            **medians,
            "build_over_floor_s": round(medians["build_median_s"] - medians["floor_median_s"], 2),
            "outputs_match": same,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
