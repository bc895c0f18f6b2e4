"""Connect to Dask: an existing scheduler, or a LocalCluster with its dashboard."""

from __future__ import annotations

import logging
import os

import dask
from distributed import Client

from .allocator import return_freed_memory, worker_environ
from .config import ClusterConfig

log = logging.getLogger(__name__)

__all__ = ["connect"]


def connect(
    config: ClusterConfig = ClusterConfig(), *, dashboard_address: str = ":8787", worker_log_level: int = logging.WARNING
) -> Client:
    """A Dask client for the build, which also becomes the default scheduler.

    Parameters
    ----------
    config
        ``scheduler`` to join an existing cluster; otherwise the LocalCluster's size.
    dashboard_address
        Where a LocalCluster serves its dashboard (``":0"`` picks a free port).
    worker_log_level
        Level below which a LocalCluster's scheduler and workers stay silent (a failing task's
        error reaches the caller anyway, as an exception).

    Returns
    -------
    distributed.Client
        Closing it (or leaving its ``with`` block) also stops a LocalCluster it started.

    Examples
    --------
    >>> with connect(ClusterConfig(threads=2), dashboard_address=":0") as client:
    ...     client.dashboard_link.startswith("http://")
    True
    """
    if config.scheduler is not None:
        client = Client(config.scheduler)
    else:
        # One worker inside this process unless worker processes are asked for: the kernels
        # release the GIL, and an in-process worker hands results over without serialising them
        # (measured: the ingest stage of a 10M-event build took 4.0s in-process, 8.0s in a worker
        # process).
        workers = config.workers or 1
        processes = config.workers is not None
        # An in-process worker shares its process with this client, so it must not pause on the
        # process's memory: nothing else would free it. Worker processes keep Dask's pause and
        # restart (a restarted worker's tasks are retried).
        if processes:
            settings: dict[str, object] = {
                f"distributed.nanny.pre-spawn-environ.{name}": value for name, value in worker_environ().items()
            }
        else:
            settings = {"distributed.worker.memory.pause": False}
            return_freed_memory()
        with dask.config.set(settings):
            client = Client(
                processes=processes,
                n_workers=workers,
                threads_per_worker=config.threads or max(1, (os.cpu_count() or 1) // workers),
                memory_limit=config.memory_limit or "auto",
                dashboard_address=dashboard_address,
                silence_logs=worker_log_level,
            )
    log.info("dask: dashboard at %s", client.dashboard_link)
    return client
