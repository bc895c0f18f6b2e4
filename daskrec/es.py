"""Elasticsearch connection settings and the checked connection (the only place a client is made).

Secrets (API key, password) live in :class:`EsSettings` but never in its ``repr``, in logs or in
error messages. The library takes them as arguments; only the CLI reads them from the environment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch.exceptions import (
    ApiError,
    AuthenticationException,
    AuthorizationException,
)
from elasticsearch.exceptions import ConnectionError as EsConnectionError
from elasticsearch.serializer import OrjsonSerializer

from .errors import ConfigError, ServiceError

log = logging.getLogger(__name__)

__all__ = ["EsSettings", "connect_es"]


@dataclass(frozen=True)
class EsSettings:
    """How to reach Elasticsearch."""

    url: str = "http://127.0.0.1:9200"
    """Base URL of a node (``https://`` for TLS)."""

    api_key: str | None = field(default=None, repr=False)
    """API key (``id:key`` or its base64 form); never logged."""

    username: str | None = None
    """User for basic authentication (with ``password``)."""

    password: str | None = field(default=None, repr=False)
    """Password for basic authentication; never logged."""

    ca_certs: str | None = None
    """CA certificate file that signs the server's certificate."""

    verify_certs: bool = True
    """Check the server's TLS certificate."""

    request_timeout: float = 30.0
    """Seconds before a request times out."""

    max_retries: int = 5
    """Retries of a request refused with 429/502/503/504 or timed out, with backoff."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"es_url: must start with http:// or https://, got {self.url!r}.")
        if (self.username is None) != (self.password is None):
            raise ConfigError("username/password: give both or neither.")
        if self.api_key is not None and self.username is not None:
            raise ConfigError("api_key: give an API key or a username and password, not both.")
        if self.request_timeout <= 0 or self.max_retries < 0:
            raise ConfigError("request_timeout/max_retries: must be positive / not negative.")

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`elasticsearch.Elasticsearch`."""
        options: dict[str, Any] = {
            "hosts": [self.url],
            "serializer": OrjsonSerializer(),  # bulk bodies are mostly JSON encoding on the client
            "request_timeout": self.request_timeout,
            "max_retries": self.max_retries,
            "retry_on_status": (429, 502, 503, 504),
            "retry_on_timeout": True,
            "verify_certs": self.verify_certs,
        }
        if self.ca_certs:
            options["ca_certs"] = self.ca_certs
        if self.api_key:
            options["api_key"] = self.api_key
        if self.username is not None:
            options["basic_auth"] = (self.username, self.password)
        return options


def connect_es(settings: EsSettings) -> Elasticsearch:
    """A client for ``settings``, checked: reachable, credentials accepted, same major version.

    Raises
    ------
    ServiceError
        Unreachable, wrong credentials, or a server whose major version the client cannot speak to.
    """
    client = Elasticsearch(**settings.client_options())
    try:
        # GET _nodes/_local rather than GET /: minimal distributions may lack the root endpoint.
        info = client.nodes.info(node_id="_local", metric="_none")
    except (AuthenticationException, AuthorizationException) as err:
        raise ServiceError(
            f"Elasticsearch at {settings.url} refused the credentials ({err.meta.status}); "
            "check DASKREC_ES_API_KEY or DASKREC_ES_USERNAME/DASKREC_ES_PASSWORD."
        ) from None
    except EsConnectionError as err:
        raise ServiceError(
            f"Elasticsearch at {settings.url} is unreachable ({type(err).__name__}); "
            "start it (make es-up) or check --es-url."
        ) from None
    except ApiError as err:
        raise ServiceError(f"Elasticsearch at {settings.url} answered {err.meta.status}; check --es-url.") from None
    server_version = str(next(iter(info["nodes"].values()))["version"])
    client_version = version("elasticsearch")
    if server_version.split(".")[0] != client_version.split(".")[0]:
        raise ServiceError(
            f"Elasticsearch {server_version} at {settings.url} does not match the {client_version} Python client; "
            f"install elasticsearch=={server_version.split('.')[0]}.* or use a {client_version.split('.')[0]}.x server."
        )
    log.info("elasticsearch: %s %s at %s", info["cluster_name"], server_version, settings.url)
    return client
