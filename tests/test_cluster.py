"""A build submitted to a real scheduler and worker processes equals a local build."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from daskrec import BuildConfig, IngestConfig, build_indicators, generate_events
from daskrec.synth import SynthConfig

SCRIPT = Path(__file__).resolve().parents[1] / "cluster" / "dask-local.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def scheduler_address(tmp_path: Path) -> Iterator[str]:
    port, dashboard = free_port(), free_port()
    env = {**os.environ, "DASKREC_STATE": str(tmp_path / "dask"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    up = [str(SCRIPT), "up", "--port", str(port), "--dashboard", str(dashboard), "--workers", "2"]
    started = subprocess.run(up, env=env, capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stderr
        assert "2 workers" in started.stdout
        yield f"tcp://127.0.0.1:{port}"
    finally:
        subprocess.run([str(SCRIPT), "down"], env=env, timeout=60, check=True)
    assert not list((tmp_path / "dask").glob("*.pid"))


def test_build_on_a_scheduler_with_two_worker_processes(tmp_path: Path, scheduler_address: str) -> None:
    events = tmp_path / "events.csv"
    generate_events(str(events), SynthConfig(events=80_000, seed=11))
    built = subprocess.run(
        [sys.executable, "-m", "daskrec", "build", str(events), "--out", str(tmp_path / "out"),
         "--event", "all", "--blocksize", "500000", "--scheduler", scheduler_address, "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr
    local = build_indicators([str(events)], BuildConfig(ingest=IngestConfig(event_types=None, blocksize=500_000)))
    assert pq.read_table(tmp_path / "out" / "indicators.parquet").equals(local.table)
