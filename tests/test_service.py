"""The recommendation service against a real node: each route equals the in-process ranking,
live histories, events in and back out to a build, API key, limits, an unreachable node."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pytest
from conftest import ES_SCRIPT, build_into, real_dataset
from elasticsearch import helpers
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daskrec import BuildConfig, IndexConfig, IngestConfig, build_indicators, write_index
from daskrec.config import ServiceConfig
from daskrec.es import EsSettings, connect_es
from daskrec.events import events_index, export_events
from daskrec.ranking import Scorer
from daskrec.service import create_app

pytestmark = pytest.mark.integration

CROSS = BuildConfig(ingest=IngestConfig(cross_event_types=("view",)))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    """ml-latest-small with view cross-occurrence, built."""
    out = tmp_path_factory.mktemp("service") / "out"
    return out, build_into(out, real_dataset("ml-latest-small"), CROSS)


@pytest.fixture(scope="module")
def indexed(built: tuple[Path, pa.Table], es_settings: EsSettings) -> Iterator[tuple[str, pa.Table]]:
    """The build, indexed behind a throwaway alias."""
    alias = f"test-service-{np.random.default_rng().integers(1 << 40):x}"
    write_index(str(built[0]), es_settings, IndexConfig(alias=alias, replicas=0))
    yield alias, built[1]
    with connect_es(es_settings) as client:
        for index in client.indices.get(index=f"{alias}*", allow_no_indices=True):
            client.indices.delete(index=index)
        client.options(ignore_status=404).indices.delete_index_template(name=f"{alias}-template")


@pytest.fixture
def service(indexed: tuple[str, pa.Table], es_settings: EsSettings) -> Iterator[TestClient]:
    with TestClient(create_app(es_settings, ServiceConfig(alias=indexed[0]))) as client:
        yield client


def listed(answer: dict[str, object]) -> list[tuple[object, np.float32]]:
    """Items and scores of an answer; the node's scores are float32, as JSON prints them."""
    return [(entry["item"], np.float32(entry["score"])) for entry in answer["items"]]  # type: ignore[attr-defined]


def expected(found: list[object]) -> list[tuple[object, np.float32]]:
    return [(r.item, np.float32(r.score)) for r in found]  # type: ignore[attr-defined]


def test_similar_lists_the_indicators_with_scores(service: TestClient, indexed: tuple[str, pa.Table]) -> None:
    row = next(r for r in indexed[1].to_pylist() if len(r["indicators"]) >= 5)
    answer = service.get(f"/items/{row['item']}/similar", params={"k": 5})
    assert answer.status_code == 200
    pairs = [(entry["item"], entry["score"]) for entry in answer.json()["items"]]
    assert pairs == list(zip(row["indicators"][:5], row["scores"][:5]))  # the stored float64 scores, exactly
    missing = service.get("/items/no such item/similar")
    assert missing.status_code == 404 and "no item" in missing.json()["error"]


def test_posted_queries_rank_as_the_scorer_does(service: TestClient, indexed: tuple[str, pa.Table]) -> None:
    scorer = Scorer(indexed[1])
    history, views = [1, 260, 1196], [2571, 2959]
    plain = service.post("/recommendations", json={"history": history, "k": 10})
    assert plain.status_code == 200
    assert listed(plain.json()) == expected(scorer.recommend(history, 10))  # type: ignore[arg-type]
    crossed = service.post("/recommendations", json={"history": history, "cross_history": {"view": views},
                                                      "field_boosts": {"view": 0.5}, "exclude": [2], "k": 8, "from": 2})
    assert crossed.status_code == 200, crossed.text
    wanted = scorer.recommend(history, 10, cross_histories={"view": views}, boosts={"view_indicators": 0.5}, exclude=[2])
    assert listed(crossed.json()) == expected(wanted[2:])  # type: ignore[arg-type]
    basket = service.post("/recommendations", json={"item_set": [1, 2], "item": 3, "k": 5})
    assert listed(basket.json()) == expected(scorer.recommend([1, 2, 3], 5))  # type: ignore[arg-type]


def test_live_histories_read_your_writes(service: TestClient, indexed: tuple[str, pa.Table]) -> None:
    scorer = Scorer(indexed[1])
    user = f"live user {np.random.default_rng().integers(1 << 30)}"
    empty = service.get(f"/users/{user}/recommendations", params={"k": 5})
    assert empty.status_code == 200 and empty.json()["history"] == []
    assert [e["reason"] for e in empty.json()["items"]] == ["popularity"] * 5
    posted = service.post("/events", json={"events": [
        {"visitorid": user, "event": "transaction", "itemid": 1, "timestamp": 1000},
        {"visitorid": user, "event": "view", "itemid": 2571, "timestamp": 1500},
    ]})
    assert posted.status_code == 200 and posted.json()["events"] == 2
    first = service.get(f"/users/{user}/recommendations", params={"k": 5}).json()
    assert first["history"] == ["1"]
    assert listed(first) == expected(scorer.recommend([1], 5, cross_histories={"view": [2571]}))  # type: ignore[arg-type]
    assert service.post("/events", json={"visitorid": user, "event": "transaction", "itemid": 260}).status_code == 200
    second = service.get(f"/users/{user}/recommendations", params={"k": 5}).json()
    assert second["history"] == ["260", "1"]  # latest first; the next request sees the event
    assert listed(second) == expected(scorer.recommend([1, 260], 5, cross_histories={"view": [2571]}))  # type: ignore[arg-type]
    assert listed(second) != listed(first)


def test_item_properties_take_effect_at_once(service: TestClient, indexed: tuple[str, pa.Table]) -> None:
    candidates = [entry["item"] for entry in service.post("/recommendations", json={"history": [1], "k": 3}).json()["items"]]
    chosen = candidates[-1]
    assert service.post("/events", json={"event": "$set", "itemid": chosen, "properties": {"label": "picked"}}).status_code == 200
    only = service.post("/recommendations", json={"history": [1], "k": 3, "include": {"label": ["picked"]}, "backfill": "off"})
    assert [entry["item"] for entry in only.json()["items"]] == [chosen]


def test_bad_requests_get_clear_4xx(service: TestClient) -> None:
    for path, params in (("/items/1/similar", {"k": 10_000}), ("/users/u/recommendations", {"k": 0})):
        assert service.get(path, params=params).status_code == 422
    assert service.post("/recommendations", json={"history": ["x"] * 2000}).status_code == 422
    assert service.post("/recommendations", json={"k": 5, "unknown": 1}).status_code == 422
    assert service.post("/events", json={"events": []}).status_code == 422
    bad = service.post("/events", json={"visitorid": "u", "event": "view", "itemid": "a", "timestamp": "yesterday"})
    assert bad.status_code == 400 and "column 'timestamp'" in bad.json()["error"]
    big = service.post("/events", content=b"[" + b" " * (2 << 20) + b"]", headers={"content-type": "application/json"})
    assert big.status_code == 413
    for item in ("ünïcödé ✓", "with spaces", "-dash-", "x" * 500):
        assert service.get(f"/items/{item}/similar").status_code == 404
    assert service.get(f"/items/{'x' * 10_000}/similar").status_code == 422


def test_api_key(indexed: tuple[str, pa.Table], es_settings: EsSettings) -> None:
    with TestClient(create_app(es_settings, ServiceConfig(alias=indexed[0], api_key="s3cret-key"))) as client:
        assert client.get("/items/1/similar").status_code == 401
        assert client.get("/items/1/similar", headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/events", json={"visitorid": 1, "event": "view", "itemid": 1}).status_code == 401
        assert client.get("/items/1/similar", headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert client.get("/users/u/recommendations", headers={"X-API-Key": "s3cret-key "}).status_code == 401
        for open_path in ("/healthz", "/", "/docs", "/openapi.json"):  # health, the page and the schema stay open
            assert client.get(open_path).status_code == 200
        metrics = client.get("/metrics", headers={"X-API-Key": "s3cret-key"}).text
        assert "daskrec_request_seconds_bucket" in metrics and "s3cret-key" not in metrics


def test_health_and_an_unreachable_node(indexed: tuple[str, pa.Table], es_settings: EsSettings) -> None:
    with TestClient(create_app(es_settings, ServiceConfig(alias=indexed[0]))) as client:
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["generation"].startswith(indexed[0] + "-")
        assert client.get("/openapi.json").json()["paths"].keys() >= {"/items/{item_id}/similar", "/events"}
    down = EsSettings(url="http://127.0.0.1:9", max_retries=0, request_timeout=2)
    with TestClient(create_app(down, ServiceConfig(alias=indexed[0]))) as client:
        for answer in (client.get("/items/1/similar"), client.get("/users/u/recommendations"), client.get("/healthz")):
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
            assert "Traceback" not in answer.text


def test_events_posted_reach_the_next_build(tmp_path: Path, es_settings: EsSettings) -> None:
    alias = f"test-events-{np.random.default_rng().integers(1 << 40):x}"
    base = real_dataset("ml-latest-small")
    out = tmp_path / "out"
    table = build_into(out, base).to_pandas().set_index("item")
    first, second = table.index[table["popularity"] == 1][:2].tolist()  # two rarely bought films
    write_index(str(out), es_settings, IndexConfig(alias=alias, replicas=0))
    try:
        with TestClient(create_app(es_settings, ServiceConfig(alias=alias))) as client:
            # forty new users buy both: a new, strong co-occurrence
            events = [{"visitorid": f"new-{u}", "event": "transaction", "itemid": item, "timestamp": 2_000_000_000_000 + u}
                      for u in range(40) for item in (first, second)]
            assert client.post("/events", json=events).status_code == 200
        with connect_es(es_settings) as node:
            assert export_events(node, alias, str(tmp_path / "live.csv")).events == 80
        after = build_indicators([str(base), str(tmp_path / "live.csv")]).table.to_pandas().set_index("item")
        assert second not in list(table.loc[first, "indicators"])
        assert second in list(after.loc[first, "indicators"])
    finally:
        with connect_es(es_settings) as node:
            for index in node.indices.get(index=f"{alias}*", allow_no_indices=True):
                node.indices.delete(index=index)
            node.options(ignore_status=404).indices.delete_index_template(name=f"{alias}-template")


def test_an_alias_swap_is_followed_without_errors(
    built: tuple[Path, pa.Table], indexed: tuple[str, pa.Table], es_settings: EsSettings
) -> None:
    alias, table = indexed
    scorer = Scorer(table)
    answers: list[tuple[int, str, list[tuple[object, np.float32]]]] = []
    done = threading.Event()

    def ask() -> None:
        with TestClient(create_app(es_settings, ServiceConfig(alias=alias))) as client:
            while not done.is_set():
                answer = client.post("/recommendations", json={"history": [1, 260], "k": 5})
                answers.append((answer.status_code, answer.json().get("generation", ""), listed(answer.json())))

    asking = threading.Thread(target=ask)
    asking.start()
    try:
        time.sleep(0.5)
        for layout in ("keyword", "weighted"):  # a swap to another layout too: the ranking follows it
            write_index(str(built[0]), es_settings, IndexConfig(alias=alias, replicas=0, layout=layout))
    finally:
        time.sleep(0.5)
        done.set()
        asking.join()
    assert answers and {code for code, _, _ in answers} == {200}
    assert len({generation for _, generation, _ in answers}) >= 2  # it saw the new generations
    expected_now = expected(scorer.recommend([1, 260], 5))  # type: ignore[arg-type]
    assert answers[-1][2] == expected_now and all(items for _, _, items in answers)


def test_properties_set_during_reloads_are_kept(
    built: tuple[Path, pa.Table], indexed: tuple[str, pa.Table], es_settings: EsSettings
) -> None:
    alias = indexed[0]
    acknowledged: list[int] = []
    refused: list[str] = []
    done = threading.Event()

    def set_again_and_again() -> None:
        with TestClient(create_app(es_settings, ServiceConfig(alias=alias))) as client:
            while not done.is_set():
                n = len(acknowledged) + len(refused)
                answer = client.post("/events", json={"event": "$set", "itemid": 1, "properties": {"n": n}})
                (acknowledged.append(n) if answer.status_code == 200 else refused.append(answer.text))

    setting = threading.Thread(target=set_again_and_again)
    setting.start()
    try:
        for _ in range(3):
            write_index(str(built[0]), es_settings, IndexConfig(alias=alias, replicas=0))
    finally:
        done.set()
        setting.join()
    assert not refused and len(acknowledged) >= 3  # each waits for a refresh
    with connect_es(es_settings) as node:
        assert node.get(index=alias, id="1")["_source"]["properties"]["n"] == acknowledged[-1]


ids = st.one_of(st.text(max_size=300), st.integers(-(2**70), 2**70).map(str), st.sampled_from(["1", "a b", "-x-", "✓" * 40, "x" * 10_000]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5),
    max_leaves=20,
)
query_fields = st.fixed_dictionaries(
    {},
    optional={
        "history": st.lists(ids | st.integers(), max_size=30), "k": st.integers(-3, 300), "from": st.integers(-3, 300),
        "cross_history": st.dictionaries(st.text(max_size=10), st.lists(ids, max_size=5), max_size=3),
        "include": st.dictionaries(st.text(max_size=10), st.lists(st.text(max_size=10), max_size=3), max_size=2),
        "boosts": st.lists(st.tuples(st.text(max_size=10), st.text(max_size=10), st.floats(allow_nan=False, allow_infinity=False)), max_size=2),
        "field_boosts": st.dictionaries(st.text(max_size=10), st.floats(allow_nan=False, allow_infinity=False), max_size=2),
        "backfill": st.sampled_from(["popularity", "trending", "off", "sometimes"]), "item": ids, "exclude": st.lists(ids, max_size=5),
    },
)
event_fields = st.fixed_dictionaries(
    {},
    optional={"visitorid": ids | st.integers(), "event": st.text(max_size=70), "itemid": ids | st.integers(),
              "timestamp": st.integers(-5, 2**64) | st.text(max_size=5), "transactionid": ids, "extra": json_values},
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(item=ids, user=ids, k=st.integers(-5, 500), query=query_fields | json_values, events=st.lists(event_fields, max_size=4) | json_values)
def test_no_generated_request_gets_a_5xx(service: TestClient, item: str, user: str, k: int, query: object, events: object) -> None:
    answers = [
        service.get(f"/items/{quote(item, safe='')}/similar", params={"k": k}),
        service.get(f"/users/{quote(user, safe='')}/recommendations", params={"k": k}),
        service.post("/recommendations", json=query),
        service.post("/events", json=events),
    ]
    for answer in answers:
        assert answer.status_code < 500, (answer.request.url, answer.text)
        assert "Traceback" not in answer.text


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def listening(app: object) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port, in a thread; its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture(scope="module")
def served(indexed: tuple[str, pa.Table], es_settings: EsSettings) -> Iterator[str]:
    """The service over the indexed build, running on a loopback port: its base URL."""
    with listening(create_app(es_settings, ServiceConfig(alias=indexed[0]))) as base:
        yield base


def _openapi_schema() -> Any:
    """The service's OpenAPI schema (it does not depend on the node or the alias)."""
    import schemathesis

    return schemathesis.openapi.from_dict(create_app(EsSettings(), ServiceConfig()).openapi())


@_openapi_schema().parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_requests_generated_from_the_openapi_schema(case: Any, served: str) -> None:
    """Schemathesis: every operation, requests the schema allows and requests it does not; no
    answer is a 5xx, each status is one the schema documents, each body matches its model."""
    from schemathesis import checks

    case.call_and_validate(base_url=served, checks=[checks.not_a_server_error, checks.status_code_conformance,
                                                    checks.content_type_conformance, checks.response_schema_conformance])


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def browser() -> Iterator[object]:
    """Debian's Chromium, headless, driven by Selenium through Debian's chromedriver."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("DASKREC_BROWSER_TESTS"):
            pytest.fail("DASKREC_BROWSER_TESTS is set but Chromium is missing (apt-get install chromium chromium-driver)")
        pytest.skip("Chromium is not installed; apt-get install chromium chromium-driver (CI does) to run the page test")
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium fetch a browser or a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_shows_what_a_person_asks_for(
    indexed: tuple[str, pa.Table], es_settings: EsSettings, browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    alias, table = indexed
    scorer = Scorer(table)
    driver: Any = browser
    wait = WebDriverWait(driver, 20)

    def shown(box: str) -> list[str]:
        return [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, f"#{box} td.item")]

    with listening(create_app(es_settings, ServiceConfig(alias=alias))) as url:
        driver.get(url)
        wait.until(lambda d: d.find_element(By.ID, "generation").text.startswith(alias))
        # Look an item up: its indicators, best first.
        row = next(r for r in table.to_pylist() if len(r["indicators"]) >= 10)
        driver.find_element(By.ID, "item").send_keys(str(row["item"]))
        driver.find_element(By.CSS_SELECTOR, "#similar-form button").click()
        wait.until(lambda d: shown("similar"))
        assert shown("similar") == [str(i) for i in row["indicators"][:10]]
        # Click an indicator: it joins the history, and the recommendations are the ranking's.
        driver.find_elements(By.CSS_SELECTOR, "#similar td.item")[0].click()
        wait.until(lambda d: shown("recommended"))
        assert shown("recommended") == [str(r.item) for r in scorer.recommend([row["indicators"][0]], 10)]
        # Post an event for a new user: their list moves to what their history ranks.
        user = f"page-user-{np.random.default_rng().integers(1 << 30)}"
        driver.find_element(By.ID, "user").send_keys(user)
        driver.find_element(By.ID, "event-item").send_keys(str(row["item"]))
        driver.find_element(By.ID, "post-event").click()
        wait.until(lambda d: "history:" in d.find_element(By.ID, "user-results").text and shown("user-results"))
        assert f"history: {row['item']}" in driver.find_element(By.ID, "user-results").text
        assert shown("user-results") == [str(r.item) for r in scorer.recommend([row["item"]], 10)]
        driver.save_screenshot(str(tmp_path / "page.png"))


def test_the_node_stopped_under_load_loses_no_acknowledged_event(tmp_path: Path, built: tuple[Path, pa.Table]) -> None:
    """503s while the node is down, answers again once it is back, and every event that was
    acknowledged is in the store afterwards (the spare node of es.sh, stopped and started)."""
    port = 9203
    env = {**os.environ, "ES_PORT": str(port)}
    started = subprocess.run([str(ES_SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    spare = EsSettings(url=f"http://127.0.0.1:{port}", max_retries=0, request_timeout=5)
    try:
        write_index(str(built[0]), spare, IndexConfig(alias="restart", replicas=0))
        acknowledged: list[str] = []
        codes: list[int] = []
        with TestClient(create_app(spare, ServiceConfig(alias="restart", retry_after_s=1))) as client:

            def post(n: int) -> None:
                answer = client.post("/events", json={"visitorid": f"u{n % 7}", "event": "transaction", "itemid": n, "timestamp": n})
                codes.append(answer.status_code)
                if answer.status_code == 200:
                    acknowledged.append(str(n))
                else:
                    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1", answer.text

            for n in range(30):
                post(n)
            subprocess.run([str(ES_SCRIPT), "down"], env=env, timeout=120, check=True)
            for n in range(30, 40):
                post(n)
            assert client.get("/healthz").status_code == 503
            assert subprocess.run([str(ES_SCRIPT), "up"], env=env, capture_output=True, timeout=300).returncode == 0
            for n in range(40, 60):
                post(n)
            assert client.get("/healthz").status_code == 200
        assert codes[:30] == [200] * 30 and set(codes[30:40]) == {503} and codes[-1] == 200
        with connect_es(spare) as node:
            node.indices.refresh(index=events_index("restart"))
            stored = {hit["_source"]["itemid"] for hit in helpers.scan(node, index=events_index("restart"))}
        assert set(acknowledged) <= stored
    finally:
        subprocess.run([str(ES_SCRIPT), "down"], env=env, timeout=120)


def test_daskrec_serve_with_two_workers(indexed: tuple[str, pa.Table], es_settings: EsSettings) -> None:
    """``daskrec serve --workers 2``: two server processes, the API key from the environment, and
    an event posted through one worker read back by whichever worker answers next."""
    import httpx2
    import psutil

    port = free_port()
    command = [sys.executable, "-m", "daskrec", "serve", "--es-url", es_settings.url, "--index", indexed[0], "--port", str(port), "--workers", "2"]
    base, key = f"http://127.0.0.1:{port}", {"X-API-Key": "two-workers"}
    with subprocess.Popen(command, env={**os.environ, "DASKREC_API_KEY": "two-workers"}, stderr=subprocess.PIPE, text=True) as server:
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx2.TransportError):
                    if httpx2.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read() if server.stderr else ""
                time.sleep(0.1)
            spawned = [p for p in psutil.Process(server.pid).children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
            assert len(spawned) == 2
            assert httpx2.get(f"{base}/users/w/recommendations", timeout=10).status_code == 401
            item = next(r["item"] for r in indexed[1].to_pylist() if r["indicators"])
            with httpx2.Client(base_url=base, headers=key, timeout=10) as client:
                for n in range(6):  # each post is read back at once, whichever worker answers
                    user = f"two-workers-{n}"
                    assert client.post("/events", json={"visitorid": user, "event": "transaction", "itemid": item}).status_code == 200
                    for _ in range(4):
                        assert client.get(f"/users/{user}/recommendations").json()["history"] == [str(item)]
        finally:
            server.terminate()
            server.wait(timeout=30)
