#!/usr/bin/env bash
# Start or stop a Dask scheduler and worker processes on this machine (loopback), for
# `daskrec build --scheduler tcp://127.0.0.1:PORT` and for watching builds in the dashboard.
#
#   cluster/dask-local.sh up   [--port 8786] [--dashboard 8787] [--workers 2] [--threads 1] [--memory-limit 4GiB]
#   cluster/dask-local.sh down
#
# State (pids, logs) lives in $DASKREC_STATE (default .cache/dask). Uses the `dask` command of the
# Python environment on PATH (make's .venv/bin when run from the Makefile).
set -euo pipefail

state=${DASKREC_STATE:-.cache/dask}
command=${1:-}
shift || true
port=8786 dashboard=8787 workers=2 threads=1 memory=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port=$2; shift 2 ;;
    --dashboard) dashboard=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --memory-limit) memory=$2; shift 2 ;;
    *) echo "dask-local.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

stop_all() {
  for pidfile in "$state"/*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

case "$command" in
  up)
    mkdir -p "$state"
    stop_all
    address="tcp://127.0.0.1:$port"
    dask scheduler --host 127.0.0.1 --port "$port" --dashboard-address "127.0.0.1:$dashboard" \
      >"$state/scheduler.log" 2>&1 &
    echo $! >"$state/scheduler.pid"
    for n in $(seq "$workers"); do
      # glibc's huge pages for the worker processes, as the daskrec command gives itself
      # (daskrec/allocator.py); a GLIBC_TUNABLES already set is left as it is.
      GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1} dask worker "$address" --nthreads "$threads" --memory-limit "$memory" --name "worker-$n" \
        --local-directory "$state/worker-$n" >"$state/worker-$n.log" 2>&1 &
      echo $! >"$state/worker-$n.pid"
    done
    python - "$address" "$workers" <<'PY'
import sys
from distributed import Client
with Client(sys.argv[1], timeout="60s") as client:
    client.wait_for_workers(int(sys.argv[2]), timeout=60)
    print(f"scheduler {sys.argv[1]}, {len(client.scheduler_info()['workers'])} workers, dashboard {client.dashboard_link}")
PY
    ;;
  down)
    stop_all
    ;;
  *)
    echo "usage: cluster/dask-local.sh up|down [options]" >&2
    exit 2
    ;;
esac
