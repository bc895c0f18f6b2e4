"""A build submitted to a real scheduler and worker processes equals a local build."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from daskrec import BuildConfig, IngestConfig, build_indicators, generate_events
from daskrec.synth import SynthConfig

pytestmark = pytest.mark.slow  # starts processes

SCRIPT = Path(__file__).resolve().parents[1] / "cluster" / "dask-local.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dask_state(tmp_path: Path) -> Path:
    return tmp_path / "dask"


@pytest.fixture
def scheduler_address(tmp_path: Path, dask_state: Path) -> Iterator[str]:
    port, dashboard = free_port(), free_port()
    env = {**os.environ, "DASKREC_STATE": str(dask_state),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    up = [str(SCRIPT), "up", "--port", str(port), "--dashboard", str(dashboard), "--workers", "2"]
    started = subprocess.run(up, env=env, capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stderr
        assert "2 workers" in started.stdout
        yield f"tcp://127.0.0.1:{port}"
    finally:
        subprocess.run([str(SCRIPT), "down"], env=env, timeout=60, check=True)
    assert not list(dask_state.glob("*.pid"))


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


def test_a_worker_killed_mid_build_leaves_the_output_unchanged(
    tmp_path: Path, scheduler_address: str, dask_state: Path
) -> None:
    events = tmp_path / "events.csv"
    generate_events(str(events), SynthConfig(events=400_000, seed=12))
    out = tmp_path / "out"
    build = subprocess.Popen(
        [sys.executable, "-m", "daskrec", "build", str(events), "--out", str(out), "--event", "all",
         "--blocksize", "400000", "--scheduler", scheduler_address, "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # Wait for the first item block's output: the later blocks need the occurrence files and the
    # persisted marginals, some of which live on the worker about to die.
    deadline = time.monotonic() + 240
    while not list(out.glob(".scratch-*/parts/part-*")):  # a finished part (temporaries start with a dot)
        assert build.poll() is None, build.stderr.read() if build.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.02)
    nanny = psutil.Process(int((dask_state / "worker-2.pid").read_text()))
    worker_processes = nanny.children(recursive=True)
    assert worker_processes
    for process in worker_processes:
        process.send_signal(signal.SIGKILL)
    killed_mid_build = build.poll() is None
    _, stderr = build.communicate(timeout=300)
    assert build.returncode == 0, stderr
    assert killed_mid_build
    local = build_indicators([str(events)], BuildConfig(ingest=IngestConfig(event_types=None, blocksize=400_000)))
    assert pq.read_table(out / "indicators.parquet").equals(local.table)
    assert not list(out.glob(".scratch-*"))
