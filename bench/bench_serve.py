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
service's overhead is its p50 less the direct p50.

``--json FILE`` writes a list of rows ``{"route", "rate", "p50_ms", "p95_ms", "p99_ms", "errors",
"sent"}`` (``route`` is ``user``, ``similar``, ``direct-user`` or ``direct-similar``).

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


def row(route: str, rate: float, latencies: list[float], errors: int) -> dict[str, object]:
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies else (float("nan"),) * 3
    return {"route": route, "rate": rate, "p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2),
            "p99_ms": round(float(p99), 2), "errors": errors, "sent": len(latencies)}


async def measure(args: argparse.Namespace, base: str, es: EsSettings, users: list[str], items: list[object]) -> list[dict[str, object]]:
    from elasticsearch import AsyncElasticsearch

    rows: list[dict[str, object]] = []
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(base, connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as client:
        node = AsyncElasticsearch(**es.client_options())
        history = {}
        for user in users:
            async with client.get(f"/users/{user}/recommendations", params={"k": 1}) as answer:
                history[user] = (await answer.json())["history"]
        layout = (await node.indices.get_mapping(index=ALIAS)).body
        chosen = "weighted" if next(iter(layout.values()))["mappings"]["_meta"]["daskrec_layout"] == "weighted" else "keyword"

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
            for body in history_searches(visitor, 200, ["transaction"], []):
                lines += [{"index": events_index(ALIAS)}, body]
            await node.msearch(searches=lines)
            body = recommendation_body(history[visitor], 10, chosen)  # type: ignore[arg-type]
            answer = await node.search(index=ALIAS, body=body)
            return bool(answer["hits"]["hits"])

        async def direct_similar(i: int) -> bool:
            answer = await node.get(index=ALIAS, id=str(items[i % len(items)]), source_includes=["indicators", "scores"])
            return bool(answer["found"])

        routes = {"user": user, "similar": similar, "direct-user": direct_user, "direct-similar": direct_similar}
        for name, send in routes.items():
            await open_loop(send, 50, 2, 100)  # warm the connections and the node's caches
            for rate in (float(r) for r in args.rates.split(",")):
                latencies, errors = await open_loop(send, rate, args.seconds, args.requests)
                rows.append(row(name, rate, latencies, errors))
                print(json.dumps(rows[-1]), file=sys.stderr)
        await node.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="Size of the generated log indexed.")
    parser.add_argument("--users", type=int, default=500, help="Users given a live history.")
    parser.add_argument("--rates", default="25,50,100,200", help="Requests per second, comma-separated.")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--requests", type=int, default=5000, help="Most requests per route and rate.")
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
    server = subprocess.Popen([sys.executable, "-m", "daskrec", "serve", "--es-url", args.es_url, "--index", ALIAS,
                               "--port", str(args.port), "--workers", str(args.workers), "--event", "all"],
                              env={**os.environ, "DASKREC_API_KEY": ""}, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{args.port}"
    try:
        started = time.perf_counter()
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.perf_counter() - started > 60:
                sys.exit(f"the service did not start: {server.stderr.read() if server.stderr else ''}")
            time.sleep(0.05)
        print(f"service answering {time.perf_counter() - started:.2f}s after start", file=sys.stderr)
        for user in users:  # ten events each, on items with indicators
            chosen = [items[i] for i in rng.choice(len(items), 10)]
            body = json.dumps([{"visitorid": user, "event": "transaction", "itemid": i} for i in chosen]).encode()
            request = urllib.request.Request(f"{base}/events", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as answer:
                assert answer.status == 200
        rows = asyncio.run(measure(args, base, es, users, items))
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
