"""What the benchmarks share: seeded inputs, measured subprocess runs, output comparison."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq

from daskrec import SynthConfig, generate_events

HERE = Path(__file__).resolve().parent


def events_file(events: int, seed: int, data_dir: Path = HERE / "data") -> Path:
    """The seeded log of ``events`` rows in ``data_dir``, generated on first use."""
    data = data_dir / f"events-{events}-seed{seed}.csv"
    if not data.exists():
        print(f"generating {data} ...", file=sys.stderr)
        data_dir.mkdir(parents=True, exist_ok=True)
        generate_events(str(data), SynthConfig(events=events, seed=seed))
    return data


def report(result: object, path: Path | None) -> None:
    """Print ``result`` as JSON, and write it to ``path`` when given (the benchmarks' ``--json``)."""
    text = json.dumps(result, indent=2)
    print(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def run_measured(command: list[str]) -> tuple[float, int]:
    """Run ``command``; return (wall seconds, peak bytes of RSS summed over its process tree),
    sampled every 50 ms."""
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
    return wall, peak


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
