"""Running graphs on whichever Dask scheduler is active, with progress bars."""

from __future__ import annotations

import os
from typing import Any

from dask.base import persist

__all__ = ["materialise", "scheduler_threads"]


def scheduler_threads() -> int:
    """Threads the active scheduler runs tasks on."""
    try:
        from distributed import get_client

        return max(1, int(sum(get_client().nthreads().values())))
    except ValueError:
        return os.cpu_count() or 1


def materialise(collections: Any, show_progress: bool) -> Any:
    """Persist ``collections`` (any nesting of lists and tuples) and wait until they are in memory,
    with a progress bar if asked (distributed's when a client is active)."""
    try:
        from distributed import get_client

        client = get_client()
    except ValueError:
        client = None
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
