"""Run a daskrec build on a SLURM cluster with dask-jobqueue (``pip install dask-jobqueue``).

Each SLURM job is one Dask worker with ``--cores`` threads and ``--memory`` of memory; the
scheduler runs inside this script (on the login or a submit node), and the workers find it
there. Inputs and ``--out`` must be on storage every node reaches (a shared filesystem or an
object store URL). Example::

    python cluster/slurm/build_on_slurm.py /shared/events/*.csv --out /shared/daskrec/out \\
        --jobs 4 --cores 8 --memory 32GiB --queue normal --account myproject --walltime 02:00:00

``--dry-run`` prints the job script SLURM would get and exits without submitting anything.
"""

from __future__ import annotations

import argparse

from dask_jobqueue import SLURMCluster
from distributed import Client

from daskrec import BuildConfig, IngestConfig, write_build
from daskrec.allocator import HUGE_PAGES


def make_cluster(
    cores: int, memory: str, queue: str | None, account: str | None, walltime: str, local_directory: str
) -> SLURMCluster:
    """A SLURMCluster whose jobs each run one Dask worker with daskrec importable."""
    return SLURMCluster(
        cores=cores,
        processes=1,  # one worker per job, all cores as threads: the kernels release the GIL
        memory=memory,
        queue=queue,
        account=account,
        walltime=walltime,
        local_directory=local_directory,
        job_extra_directives=["--exclusive"],
        # glibc's huge pages for the worker, as the daskrec command gives itself (daskrec/allocator.py)
        job_script_prologue=[f"export GLIBC_TUNABLES={HUGE_PAGES}"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("events", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--event", default="all", help="Event types, comma-separated, or 'all'.")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--cores", type=int, default=8)
    parser.add_argument("--memory", default="32GiB")
    parser.add_argument("--queue", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--walltime", default="02:00:00")
    parser.add_argument("--local-directory", default="$TMPDIR", help="Node-local scratch for the workers.")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()

    cluster = make_cluster(args.cores, args.memory, args.queue, args.account, args.walltime, args.local_directory)
    if args.dry_run:
        print(cluster.job_script())
        cluster.close()
        return
    event_types = None if args.event == "all" else tuple(args.event.split(","))
    with cluster, Client(cluster) as client:
        cluster.scale(jobs=args.jobs)
        print(f"Dask dashboard: {client.dashboard_link}")
        client.wait_for_workers(1)
        report = write_build(args.events, args.out, BuildConfig(ingest=IngestConfig(event_types=event_types)),
                             show_progress=True)
    print(f"{report.counts['items']} items -> {args.out}")


if __name__ == "__main__":
    main()
