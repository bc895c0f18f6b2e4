"""Connection settings and the checked client: secrets hidden, credentials and version checked
first, against loopback stubs; then TLS, credentials and least-privilege roles on a real
secured node (integration)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import real_dataset
from elasticsearch import Elasticsearch, helpers
from fastapi.testclient import TestClient

from daskrec import ConfigError, IndexConfig, IndexingError, ServiceError, write_index, write_output
from daskrec.config import ServiceConfig
from daskrec.es import EsSettings, connect_es
from daskrec.events import events_index
from daskrec.ranking import Scorer
from daskrec.service import create_app


def test_settings_validate_and_hide_secrets() -> None:
    settings = EsSettings(url="https://es:9200", api_key="c2VjcmV0LWtleQ==")
    assert "c2VjcmV0" not in repr(settings)
    assert EsSettings(username="u", password="hunter2").client_options()["basic_auth"] == ("u", "hunter2")
    assert "hunter2" not in repr(EsSettings(username="u", password="hunter2"))
    for bad in (dict(url="es:9200"), dict(username="u"), dict(api_key="k", username="u", password="p")):
        with pytest.raises(ConfigError):
            EsSettings(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="alias"):
        IndexConfig(alias="Items 2")


def test_unreachable_server_is_a_clear_error_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = EsSettings(url="http://127.0.0.1:9", api_key="do-not-print-me", max_retries=0, request_timeout=2)
    with pytest.raises(ServiceError, match="unreachable") as caught:
        connect_es(settings)
    assert "do-not-print-me" not in str(caught.value)
    assert "do-not-print-me" not in caplog.text


class _Answers(BaseHTTPRequestHandler):
    """Answers every request with one status and body, as a server of that kind would."""

    status = 200
    body: dict[str, object] = {}

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        payload = json.dumps(self.body).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering_server(request: pytest.FixtureRequest) -> Iterator[str]:
    status, body = request.param
    handler = type("Handler", (_Answers,), {"status": status, "body": body})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("answering_server", "message"),
    [
        ((401, {"error": {"type": "security_exception"}, "status": 401}), "refused the credentials"),
        ((200, {"cluster_name": "old", "nodes": {"n": {"version": "8.15.0"}}}), "does not match"),
    ],
    indirect=["answering_server"],
    ids=["wrong-credentials", "other-major-version"],
)
def test_credentials_and_version_are_checked_first(answering_server: str, message: str) -> None:
    settings = EsSettings(url=answering_server, username="elastic", password="s3cret-pw", max_retries=0)
    with pytest.raises(ServiceError, match=message) as caught:
        connect_es(settings)
    assert "s3cret-pw" not in str(caught.value)


# ------------------------------------------------------------- against the secured node (es.sh secure-up)

SECURED_ALIAS = "items2"
"""The alias the roles of cluster/elasticsearch/roles.yml are written for."""


def as_user(secured: dict[str, str], role: str, **options: object) -> EsSettings:
    return EsSettings(url=secured["ES_SECURE_URL"], ca_certs=secured["ES_SECURE_CA"], username=secured[f"ES_SECURE_{role}_USER"],
                      password=secured[f"ES_SECURE_{role}_PASSWORD"], max_retries=1, request_timeout=30, **options)  # type: ignore[arg-type]


def user_environment(secured: dict[str, str], role: str | None) -> dict[str, str]:
    """The environment of a daskrec process run as ``role`` (credentials only ever come from it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASKREC_ES_")}
    if role is not None:
        env["DASKREC_ES_USERNAME"] = secured[f"ES_SECURE_{role}_USER"]
        env["DASKREC_ES_PASSWORD"] = secured[f"ES_SECURE_{role}_PASSWORD"]
    return env


def daskrec(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daskrec", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def secured_alias(secured: dict[str, str]) -> Iterator[str]:
    """``items2`` on the secured node, removed afterwards (by the admin)."""
    with Elasticsearch(**as_user(secured, "ADMIN").client_options()) as client:
        client.options(ignore_status=404).indices.delete(index=events_index(SECURED_ALIAS))  # left by a run that died
    yield SECURED_ALIAS
    with Elasticsearch(**as_user(secured, "ADMIN").client_options()) as client:
        for index in client.indices.get(index=f"{SECURED_ALIAS}-*", allow_no_indices=True):
            client.indices.delete(index=index)
        client.options(ignore_status=404).indices.delete(index=events_index(SECURED_ALIAS))
        client.options(ignore_status=404).indices.delete_index_template(name=f"{SECURED_ALIAS}-template")


@pytest.mark.integration
def test_least_privilege_users_over_https(tmp_path: Path, secured: dict[str, str], secured_alias: str) -> None:
    events = str(real_dataset("ml-latest-small"))
    https = ["--es-url", secured["ES_SECURE_URL"], "--es-ca-certs", secured["ES_SECURE_CA"]]
    writer, reader = user_environment(secured, "WRITER"), user_environment(secured, "READER")
    secrets = [secured[f"ES_SECURE_{role}_PASSWORD"] for role in ("WRITER", "READER", "SERVICE", "ADMIN")]
    outputs: list[str] = []

    # The writer builds and indexes over HTTPS; the alias moves to a generation equal to the build.
    built = daskrec("build", events, "--out", "out", *https, "--index", secured_alias, "--no-progress",
                    "--dashboard-address", ":0", "--report", "report.html", cwd=tmp_path, env=writer)
    outputs += [built.stdout, built.stderr]
    assert built.returncode == 0, built.stderr
    table = pq.read_table(tmp_path / "out" / "indicators.parquet")
    with connect_es(as_user(secured, "ADMIN")) as admin:
        (live,) = admin.indices.get_alias(name=secured_alias)
        stored = {hit["_source"]["id"]: hit["_source"]["indicators"] for hit in helpers.scan(admin, index=secured_alias)}
    assert stored == dict(zip(table.column("item").to_pylist(), table.column("indicators").to_pylist()))

    # The reader queries through the alias, as the in-process ranking does.
    item = next(row for row in table.to_pylist() if len(row["indicators"]) >= 3)
    shown = daskrec("similar", str(item["item"]), *https, "--index", secured_alias, cwd=tmp_path, env=reader)
    outputs += [shown.stdout, shown.stderr]
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == [str(i) for i in item["indicators"]]
    history = item["indicators"][:3]
    listed = daskrec("recommend", "--history", ",".join(map(str, history)), "-k", "5", *https, "--index", secured_alias,
                     cwd=tmp_path, env=reader)
    outputs += [listed.stdout, listed.stderr]
    assert listed.returncode == 0, listed.stderr
    expected = Scorer(table).recommend(history, 5)
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == [str(r.item) for r in expected]

    # The writer updates the build with a visitor's new event: the changed documents go into the live generation.
    rows = pd.read_csv(events)
    lightest = rows[rows.visitorid == rows.visitorid.value_counts().index[-1]]
    new = lightest.head(1).assign(itemid=rows.itemid.value_counts().index[-1], timestamp=rows.timestamp.max())
    new.to_csv(tmp_path / "new.csv", index=False)
    updated = daskrec("update", "new.csv", "--build", "out", *https, "--index", secured_alias, "--in-place-max", "1",
                      "--no-progress", "--dashboard-address", ":0", cwd=tmp_path, env=writer)
    outputs += [updated.stdout, updated.stderr]
    assert updated.returncode == 0, updated.stderr
    assert "changed documents sent into" in updated.stderr
    table = pq.read_table(tmp_path / "out" / "indicators.parquet")
    with connect_es(as_user(secured, "ADMIN")) as admin:
        assert list(admin.indices.get_alias(name=secured_alias)) == [live]
        stored = {hit["_source"]["id"]: hit["_source"]["scores"] for hit in helpers.scan(admin, index=secured_alias)}
    assert stored == dict(zip(table.column("item").to_pylist(), table.column("scores").to_pylist()))

    # Without verification it works, and says what it gave up.
    unverified = daskrec("similar", str(item["item"]), "--es-url", secured["ES_SECURE_URL"], "--es-no-verify-certs",
                         "--index", secured_alias, cwd=tmp_path, env=reader)
    outputs += [unverified.stdout, unverified.stderr]
    assert unverified.returncode == 0, unverified.stderr
    assert "TLS certificate verification is off" in unverified.stderr and "identity is not checked" in unverified.stderr

    # The reader cannot write: refused before any computation, naming what it lacks.
    for command in (["build", events, "--out", "out2"], ["index", "out"]):
        refused = daskrec(*command, *https, "--index", secured_alias, "--no-progress", "--dashboard-address", ":0",
                          cwd=tmp_path, env=reader)
        outputs += [refused.stdout, refused.stderr]
        assert refused.returncode == 2, refused.stderr
        assert "may not load the index 'items2'" in refused.stderr
        assert "cluster privilege 'manage_index_templates'" in refused.stderr and "index privilege 'write'" in refused.stderr
        assert "Dask dashboard" not in refused.stderr and not (tmp_path / "out2").exists()

    # A load the node rejects leaves the alias and the live generation untouched.
    write_output(str(tmp_path / "bad"), pa.table({"item": [1], "indicators": [[2]], "scores": [[1.0]], "popularity": ["many"]}),
                 {"test": True})
    with pytest.raises(IndexingError, match="rejected"):
        write_index(str(tmp_path / "bad"), as_user(secured, "WRITER"), IndexConfig(alias=secured_alias, replicas=0))
    with connect_es(as_user(secured, "ADMIN")) as admin:
        assert list(admin.indices.get_alias(name=secured_alias)) == [live]
        assert list(admin.indices.get(index=f"{secured_alias}-*")) == [live]

    # The writer reloads the build: the replaced generation is read for late $sets and closed to writes.
    reloaded = write_index(str(tmp_path / "out"), as_user(secured, "WRITER"), IndexConfig(alias=secured_alias, replicas=0))
    with connect_es(as_user(secured, "ADMIN")) as admin:
        assert list(admin.indices.get_alias(name=secured_alias)) == [reloaded.index]
        blocks = admin.indices.get_settings(index=live, name="index.blocks.write")
        assert blocks[live]["settings"]["index"]["blocks"]["write"] == "true"

    # The service takes events as the service user; run as the reader it is refused, and says so.
    events_in = [{"visitorid": 990_001, "event": "transaction", "itemid": i, "timestamp": 2_000_000_000_000} for i in history]
    with TestClient(create_app(as_user(secured, "READER"), ServiceConfig(alias=secured_alias))) as service:
        refused_event = service.post("/events", json=events_in)
        assert refused_event.status_code == 502 and "refused this service's user (403)" in refused_event.text
    with TestClient(create_app(as_user(secured, "SERVICE"), ServiceConfig(alias=secured_alias))) as service:
        assert service.post("/events", json=events_in).status_code == 200
        assert service.post("/events", json={"event": "$set", "itemid": history[0], "properties": {"genre": "noir"}}).status_code == 200
        mine = service.get("/users/990001/recommendations", params={"k": 5})
        assert mine.status_code == 200 and mine.json()["history"] == [str(i) for i in reversed(history)]

    # The writer brings the build up to date with what the service stored.
    from_store = daskrec("update", "--from-store", "--after", "-1", "--build", "out", *https, "--index", secured_alias, "--no-progress",
                         "--dashboard-address", ":0", cwd=tmp_path, env=writer)
    outputs += [from_store.stdout, from_store.stderr]
    assert from_store.returncode == 0, from_store.stderr
    assert f"{len(history)} events stored" in from_store.stderr
    with connect_es(as_user(secured, "ADMIN")) as admin:
        assert admin.get(index=secured_alias, id=str(history[0]))["_source"]["properties"] == {"genre": "noir"}

    # No secret anywhere: outputs, manifest, Dask's report.
    written = [(tmp_path / "out" / "manifest.json").read_text(), (tmp_path / "report.html").read_text()]
    for secret in secrets:
        assert not any(secret in text for text in [*outputs, *written])


def refusal_cases(secured: dict[str, str]) -> dict[str, tuple[list[str], str | None, str]]:
    url, ca = secured["ES_SECURE_URL"], secured["ES_SECURE_CA"]
    return {
        "wrong-password": (["--es-url", url, "--es-ca-certs", ca], "WRONG", "refused the credentials (401)"),
        "no-credentials": (["--es-url", url, "--es-ca-certs", ca], None, "needs credentials (401)"),
        "missing-ca-file": (["--es-url", url, "--es-ca-certs", "no-such-ca.crt"], "WRITER", "no-such-ca.crt is not a file"),
        "not-a-ca-file": (["--es-url", url, "--es-ca-certs", __file__], "WRITER", "holds no CA certificate in PEM form"),
        "untrusted-certificate": (["--es-url", url, "--es-ca-certs", secured["ES_SECURE_OTHER_CA"]], "WRITER", "is not trusted"),
        "plain-http": (["--es-url", url.replace("https://", "http://")], "WRITER", "speaks HTTPS; use --es-url https://"),
    }


@pytest.mark.integration
@pytest.mark.parametrize(
    "case", ["wrong-password", "no-credentials", "missing-ca-file", "not-a-ca-file", "untrusted-certificate", "plain-http"]
)
def test_connection_problems_are_clear_before_any_work(
    case: str, tmp_path: Path, secured: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from daskrec.cli import main

    options, role, said = refusal_cases(secured)[case]
    for name in ("DASKREC_ES_USERNAME", "DASKREC_ES_PASSWORD", "DASKREC_ES_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    secret = "not-the-password-0451"
    if role is not None:
        monkeypatch.setenv("DASKREC_ES_USERNAME", secured["ES_SECURE_WRITER_USER"])
        monkeypatch.setenv("DASKREC_ES_PASSWORD", secret if role == "WRONG" else secured["ES_SECURE_WRITER_PASSWORD"])
    out = tmp_path / "out"
    argv = ["build", str(real_dataset("ml-latest-small")), "--out", str(out), *options, "--index", SECURED_ALIAS, "--no-progress"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert said in captured.err and "unexpected" not in captured.err
    assert "Dask dashboard" not in captured.err and not out.exists()  # before any cluster or computation
    assert secret not in captured.err + captured.out and secured["ES_SECURE_WRITER_PASSWORD"] not in captured.err + captured.out
