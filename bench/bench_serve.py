"""The recommendation service under an open-loop load, against the same queries sent straight to
the node, on loopback.

Builds and indexes a seeded log (once), starts ``daskrec serve`` as its own process, gives
``--users`` users a live history through ``POST /events``, then, for each route and rate, sends
requests on a fixed schedule (open loop: request i leaves at ``i / rate`` whatever the answers
before it, and its latency counts from that instant, so a slow server cannot slow the load
down) for ``--seconds`` seconds or ``--requests`` requests, whichever comes first.

Routes: ``user`` = ``GET /users/{id}/recommendations`` (live history), ``similar`` =
``GET /items/{id}/similar``. ``direct`` sends the requests the service would send (the history
``_msearch`` then the search, or the GET) straight to the node with the async client: the
service's overhead (``overhead_p50_ms`` in the service's rows) is its p50 less the direct p50.
``hop`` = ``GET /``, a static page the service answers without the node: what one request
through the HTTP stack costs on both ends, to set the overhead against. Each rate runs a route and its twins in
``--rounds`` alternating slices, so that a drift in the machine's speed (which is large on a
shared VM) hits them alike.

``--json FILE`` writes a list of rows ``{"route", "rate", "p50_ms", "p95_ms", "p99_ms", "errors",
"sent", "node_cpu_ms", "service_cpu_ms", "client_cpu_ms", "rate_bound"}`` (``route`` is ``user``,
``similar``, ``direct-user``, ``direct-similar`` or ``hop``). The ``*_cpu_ms`` are CPU milliseconds per
request spent by the node (its own ``process.cpu`` statistic), the service's processes and this
load generator; ``rate_bound`` is the rate at which they would use every core of this machine
(``cores × 1000 / Σ cpu_ms``): no rate near it can keep a low p99, whatever the code.

Usage: ``python bench/bench_serve.py --rates 25,50,100,200 --json bench/results/serve.json``
(needs ``make es-up``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import numpy as np
from measure import events_file, report

from daskrec import BuildConfig, EsSettings, IndexConfig, IngestConfig, build_indicators, build_manifest, write_index, write_output
from daskrec.events import events_index, history_searches
from daskrec.schema import history_of, indicator_field, layout_of, scores_field
from daskrec.serve import recommendation_body

ALIAS = "bench-serve"


GRACE_S = 5.0
"""How long after the last scheduled request the answers are awaited; later ones count as errors."""


async def open_loop(send: Callable[[int], Awaitable[bool]], rate: float, seconds: float, limit: int) -> tuple[list[float], int]:
    """Latencies (ms, from each request's scheduled instant) and errors of an open-loop run,
    bounded in requests and in time (requests unanswered ``GRACE_S`` after the schedule ends
    are cancelled and counted as errors, with the time waited as their latency)."""
    count = min(limit, int(rate * seconds))
    start = time.perf_counter() + 0.05
    latencies: list[float] = []
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        try:
            ok = await send(i)
        except asyncio.CancelledError:
            latencies.append((time.perf_counter() - scheduled) * 1000)
            errors += 1
            raise
        except Exception:  # noqa: BLE001 - any failure is an error of the run
            ok = False
        latencies.append((time.perf_counter() - scheduled) * 1000)
        errors += not ok

    tasks = [asyncio.ensure_future(one(i)) for i in range(count)]
    _, late = await asyncio.wait(tasks, timeout=count / rate + GRACE_S)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    return latencies, errors


def row(route: str, rate: float, latencies: list[float], errors: int, cpu_s: dict[str, float] | None = None) -> dict[str, object]:
    """One result row; ``cpu_s`` holds each process's CPU seconds over the run."""
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies else (float("nan"),) * 3
    found: dict[str, object] = {"route": route, "rate": rate, "p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2),
                                "p99_ms": round(float(p99), 2), "errors": errors, "sent": len(latencies)}
    if cpu_s is not None and latencies:
        per_request = {name: 1000 * seconds / len(latencies) for name, seconds in cpu_s.items()}
        found.update({f"{name}_cpu_ms": round(ms, 2) for name, ms in per_request.items()})
        found["rate_bound"] = round((os.cpu_count() or 1) * 1000 / sum(per_request.values()), 1)
    return found


class Run:
    """Latencies, errors and CPU seconds of one route at one rate, summed over its slices."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.cpu_s: dict[str, float] = {}

    def add(self, latencies: list[float], errors: int, cpu_s: dict[str, float]) -> None:
        self.latencies += latencies
        self.errors += errors
        for what, seconds in cpu_s.items():
            self.cpu_s[what] = self.cpu_s.get(what, 0.0) + seconds


class CpuClock:
    """CPU seconds used so far by the node, the service's processes and this process."""

    def __init__(self, node: object, service_pid: int) -> None:
        import psutil

        self.node, self.service = node, psutil.Process(service_pid)

    async def read(self, with_service: bool) -> dict[str, float]:
        stats = (await self.node.nodes.stats(node_id="_local", metric="process")).body  # type: ignore[attr-defined]
        seconds = {"node": next(iter(stats["nodes"].values()))["process"]["cpu"]["total_in_millis"] / 1000}
        if with_service:
            processes = [self.service, *self.service.children(recursive=True)]
            seconds["service"] = sum(sum(p.cpu_times()[:2]) for p in processes)
        seconds["client"] = time.process_time()
        return seconds


async def measure(args: argparse.Namespace, base: str, es: EsSettings, users: list[str], items: list[object], service_pid: int) -> list[dict[str, object]]:
    from elasticsearch import AsyncElasticsearch

    rows: list[dict[str, object]] = []
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(base, connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as client:
        node = AsyncElasticsearch(**es.client_options())
        history = {}
        for user in users:
            async with client.get(f"/users/{user}/recommendations", params={"k": 1}) as answer:
                history[user] = (await answer.json())["history"]
        meta = next(iter((await node.indices.get_mapping(index=ALIAS)).body.values()))["mappings"]["_meta"]
        chosen, cut = layout_of(meta), history_of(meta) or {}
        clock = CpuClock(node, service_pid)

        async def fetch(path: str) -> bool:
            async with client.get(path) as answer:
                await answer.read()
                return answer.status == 200

        async def user(i: int) -> bool:
            return await fetch(f"/users/{users[i % len(users)]}/recommendations?k=10")

        async def similar(i: int) -> bool:
            return await fetch(f"/items/{items[i % len(items)]}/similar?k=10")

        async def direct_user(i: int) -> bool:
            visitor = users[i % len(users)]
            lines: list[dict[str, object]] = []
            for body in history_searches(visitor, int(cut["recent"]), cut.get("event_types"), []):  # type: ignore[arg-type, call-overload]
                lines += [{"index": events_index(ALIAS)}, body]
            await node.msearch(searches=lines)
            body = recommendation_body(history[visitor], 10, chosen)  # type: ignore[arg-type]
            answer = await node.search(index=ALIAS, body=body)
            return bool(answer["hits"]["hits"])

        async def direct_similar(i: int) -> bool:
            answer = await node.get(index=ALIAS, id=str(items[i % len(items)]), source_includes=[indicator_field(), scores_field(indicator_field())])
            return bool(answer["found"])

        async def hop(_: int) -> bool:
            return await fetch("/")

        groups = {"user": {"direct-user": direct_user, "hop": hop}, "similar": {"direct-similar": direct_similar}}
        for name, others in groups.items():
            served = user if name == "user" else similar
            for send in (served, *others.values()):
                await open_loop(send, 50, 2, 100)  # warm the connections and the node's caches
            for rate in (float(r) for r in args.rates.split(",")):
                runs = {name: (served, Run()), **{route: (send, Run()) for route, send in others.items()}}
                for _ in range(args.rounds):  # alternating slices: a drift in the machine's speed hits both alike
                    for route, (send, run) in runs.items():
                        before = await clock.read(not route.startswith("direct"))
                        latencies, errors = await open_loop(send, rate, args.seconds / args.rounds, args.requests // args.rounds)
                        after = await clock.read(not route.startswith("direct"))
                        run.add(latencies, errors, {what: after[what] - before[what] for what in after})
                measured = {route: row(route, rate, run.latencies, run.errors, run.cpu_s) for route, (_, run) in runs.items()}
                measured[name]["overhead_p50_ms"] = round(measured[name]["p50_ms"] - measured[f"direct-{name}"]["p50_ms"], 2)  # type: ignore[operator]
                for found in measured.values():
                    rows.append(found)
                    print(json.dumps(found), file=sys.stderr)
        await node.close()
    return rows


def until_healthy(base: str, server: subprocess.Popen[str]) -> float:
    """Seconds until the service at ``base`` answers ``/healthz`` with 200 (exits if it dies)."""
    started = time.perf_counter()
    while True:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        if server.poll() is not None or time.perf_counter() - started > 60:
            sys.exit(f"the service did not start: {server.stderr.read() if server.stderr else ''}")
        time.sleep(0.01)


SERVICE_LIBRARIES = "import click, elasticsearch, fastapi, orjson, prometheus_client, uvicorn"
"""What the service stands on: importing these in a bare interpreter is the floor of its start."""


def startup(command: list[str], base: str, times: int = 3) -> tuple[float, float]:
    """The best of ``times`` starts of ``command`` until ``/healthz`` answers, and the best of as
    many bare interpreters importing :data:`SERVICE_LIBRARIES` (seconds, process start included)."""
    starts, floors = [], []
    for _ in range(times):
        server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        try:
            starts.append(until_healthy(base, server))
        finally:
            server.terminate()
            server.wait(timeout=30)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", SERVICE_LIBRARIES], check=True)
        floors.append(time.perf_counter() - started)
    return min(starts), min(floors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="Size of the generated log indexed.")
    parser.add_argument("--users", type=int, default=500, help="Users given a live history.")
    parser.add_argument("--rates", default="25,50,100,200", help="Requests per second, comma-separated.")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--requests", type=int, default=5000, help="Most requests per route and rate.")
    parser.add_argument("--rounds", type=int, default=4, help="Alternating slices of each route and its direct twin per rate.")
    parser.add_argument("--workers", type=int, default=1, help="Service processes.")
    parser.add_argument("--es-url", default="http://127.0.0.1:9200")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    es = EsSettings(url=args.es_url)
    events = events_file(args.events, 0)
    config = BuildConfig(ingest=IngestConfig(event_types=None))
    with tempfile.TemporaryDirectory() as tmp:
        result = build_indicators([str(events)], config)
        write_output(tmp, result.table, build_manifest([str(events)], config, result.report))
        write_index(tmp, es, IndexConfig(alias=ALIAS, replicas=0))
        table = result.table
    rng = np.random.default_rng(0)
    with_indicators = [r["item"] for r in table.select(["item", "indicators"]).to_pylist() if r["indicators"]]
    items = [with_indicators[i] for i in rng.choice(len(with_indicators), 1000)]
    users = [f"bench-user-{u}" for u in range(args.users)]
    command = [sys.executable, "-m", "daskrec", "serve", "--es-url", args.es_url, "--index", ALIAS,
               "--port", str(args.port), "--workers", str(args.workers), "--event", "all"]
    base = f"http://127.0.0.1:{args.port}"
    started, floor = startup(command, base)
    print(f"start to /healthz: {started:.2f}s (best of 3); importing the libraries it stands on: {floor:.2f}s", file=sys.stderr)
    server = subprocess.Popen(command, env={**os.environ, "DASKREC_API_KEY": ""}, stderr=subprocess.PIPE, text=True)
    try:
        print(f"service answering {until_healthy(base, server):.2f}s after start", file=sys.stderr)
        posted = [{"visitorid": user, "event": "transaction", "itemid": items[i]}  # ten each, on items with indicators
                  for user in users for i in rng.choice(len(items), 10)]
        for first in range(0, len(posted), 1000):  # a batch waits for one refresh, not one per user
            body = json.dumps(posted[first:first + 1000]).encode()
            request = urllib.request.Request(f"{base}/events", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as answer:
                assert answer.status == 200
        rows = asyncio.run(measure(args, base, es, users, items, server.pid))
    finally:
        server.terminate()
        server.wait(timeout=30)
        from daskrec.es import connect_es

        with connect_es(es) as client:
            for index in client.indices.get(index=f"{ALIAS}*", allow_no_indices=True):
                client.indices.delete(index=index)
    report(rows, args.json)


if __name__ == "__main__":
    main()
