"""Running graphs on whichever Dask scheduler is active, with progress bars."""

from __future__ import annotations

import os
import sys
from typing import Any

import dask
from dask.base import persist

__all__ = ["materialise", "scheduler_threads", "scheduler_workers", "task_memory_bytes", "worker_memory_bytes"]


def _active_client() -> Any:
    """The distributed client in use, or None when the work runs on a local scheduler."""
    if "distributed" not in sys.modules:  # no client can exist, and importing it costs ~1 s here
        return None
    from distributed import get_client

    try:
        return get_client()
    except ValueError:
        return None


def _local_threads() -> int:
    """Threads of Dask's local schedulers (``num_workers`` if set, else every core)."""
    return int(dask.config.get("num_workers", None) or os.cpu_count() or 1)


def scheduler_threads() -> int:
    """Threads the active scheduler runs tasks on."""
    client = _active_client()
    return _local_threads() if client is None else max(1, int(sum(client.nthreads().values())))


def scheduler_workers() -> int:
    """Worker processes of the active scheduler (1 for the local schedulers)."""
    client = _active_client()
    return 1 if client is None else max(1, len(client.nthreads()))


WORKER_RESERVE_BYTES = 512 * 2**20
"""Memory of a worker process that its tasks cannot count on: interpreter, libraries, compiled
kernels, Dask itself (an idle in-process worker with its client measured ~0.45 GB here)."""


def worker_memory_bytes() -> int:
    """Memory the tasks of the smallest worker may use together: its limit (the machine's
    memory without one, and for the local schedulers) less its reserve (at most half of it)."""
    return min(usable for usable, _ in _worker_sizes())


def task_memory_bytes() -> int:
    """Memory one task may use: the smallest share of a worker's usable memory among its threads."""
    return min(usable // threads for usable, threads in _worker_sizes())


def _worker_sizes() -> list[tuple[int, int]]:
    """(usable memory in bytes, threads) of every worker."""
    import psutil

    def usable(limit: int) -> int:
        return limit - min(WORKER_RESERVE_BYTES, limit // 2)

    machine = int(psutil.virtual_memory().total)
    client = _active_client()
    if client is None:
        return [(usable(machine), _local_threads())]
    workers = list(client.scheduler_info(n_workers=-1)["workers"].values())
    sizes = [(usable(int(w["memory_limit"]) or machine), max(1, int(w["nthreads"]))) for w in workers]
    return sizes or [(usable(machine), _local_threads())]


def materialise(collections: Any, show_progress: bool) -> Any:
    """Persist ``collections`` (any nesting of lists and tuples) and wait until they are in memory,
    with a progress bar if asked (distributed's when a client is active)."""
    client = _active_client()
    if client is None:
        if not show_progress:
            return persist(collections)[0]
        from dask.diagnostics.progress import ProgressBar

        with ProgressBar():
            return persist(collections)[0]
    from distributed import futures_of, progress, wait

    persisted = persist(collections)[0]
    if show_progress:
        progress(persisted)
    wait(futures_of(persisted))
    return persisted
