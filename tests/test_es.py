"""Connection settings and the checked client: secrets hidden, credentials and version checked
first, against loopback stubs (no Elasticsearch needed)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from daskrec import ConfigError, IndexConfig, ServiceError
from daskrec.es import EsSettings, connect_es


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
