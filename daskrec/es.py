"""Elasticsearch connection settings and the checked connection (the only place a client is made).

Secrets (API key, password) live in :class:`EsSettings` but never in its ``repr``, in logs or in
error messages. The library takes them as arguments; only the CLI reads them from the environment.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import ConfigError, ServiceError

if TYPE_CHECKING:  # the client is imported where a connection is made, not with the settings:
    # every CLI command reads EsSettings for its options, and importing the client (aiohttp and
    # all) took ~0.8 s of a process that builds without indexing (measured: `import daskrec.cli`).
    from elastic_transport import TlsError
    from elasticsearch import Elasticsearch
    from elasticsearch.exceptions import ApiError

log = logging.getLogger(__name__)

__all__ = ["EsSettings", "connect_es", "error_reason", "settled_operations", "write_blocked", "NO_VERIFY_WARNING"]

NO_VERIFY_WARNING = (
    "TLS certificate verification is off (--es-no-verify-certs): the connection is encrypted, but "
    "the node's identity is not checked, so anyone in between could read the credentials and the "
    "data. Give the CA that signed the node's certificate (--es-ca-certs FILE) instead."
)
"""What a user is told when certificate verification is turned off."""
_CREDENTIALS = "DASKREC_ES_USERNAME/DASKREC_ES_PASSWORD or DASKREC_ES_API_KEY"


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
        from elasticsearch.serializer import OrjsonSerializer

        options: dict[str, Any] = {
            "hosts": [self.url],
            "serializer": OrjsonSerializer(),  # bulk bodies are mostly JSON encoding on the client
            "request_timeout": self.request_timeout,
            "max_retries": self.max_retries,
            "retry_on_status": (429, 502, 503, 504),
            "retry_on_timeout": True,
            "verify_certs": self.verify_certs,
        }
        if not self.verify_certs:
            options["ssl_show_warn"] = False  # said once, by whoever turned it off (NO_VERIFY_WARNING)
        if self.ca_certs:
            options["ca_certs"] = self.ca_certs
        if self.api_key:
            options["api_key"] = self.api_key
        if self.username is not None:
            options["basic_auth"] = (self.username, self.password)
        return options


def connect_es(settings: EsSettings) -> Elasticsearch:
    """A client for ``settings``, checked: reachable, its certificate trusted, credentials accepted,
    same major version.

    Raises
    ------
    ConfigError
        The CA file is missing or is not a PEM certificate.
    ServiceError
        Unreachable, an untrusted certificate, plain HTTP to an HTTPS node, wrong or missing
        credentials, or a server whose major version the client cannot speak to.
    """
    from elastic_transport import TlsError
    from elasticsearch import Elasticsearch
    from elasticsearch.exceptions import ApiError, AuthenticationException, AuthorizationException
    from elasticsearch.exceptions import ConnectionError as EsConnectionError

    if settings.ca_certs is not None:
        if not os.path.isfile(settings.ca_certs):
            raise ConfigError(f"es_ca_certs: {settings.ca_certs} is not a file; give the CA certificate (PEM) of the node.")
        try:
            ssl.create_default_context(cafile=settings.ca_certs)  # the client would only fail at the first request
        except ssl.SSLError as err:
            raise ConfigError(f"es_ca_certs: {settings.ca_certs} holds no CA certificate in PEM form ({err.reason}).") from None
    client = Elasticsearch(**settings.client_options())
    try:
        # GET _nodes/_local rather than GET /: minimal distributions may lack the root endpoint.
        info = client.nodes.info(node_id="_local", metric="_none")
    except AuthenticationException as err:
        given = settings.api_key is not None or settings.username is not None
        raise ServiceError(
            f"Elasticsearch at {settings.url} "
            + (f"refused the credentials ({err.meta.status}); check {_CREDENTIALS}." if given
               else f"needs credentials ({err.meta.status}); set {_CREDENTIALS}.")
        ) from None
    except AuthorizationException:
        # A least-privilege user (a reader) may not see node information: the credentials are
        # good if the node says who they are. The version check is then left to the first request.
        _authenticated(client, settings)
        log.info("elasticsearch: %s (node information not visible to this user)", settings.url)
        return client
    except TlsError as err:
        raise ServiceError(
            f"the TLS certificate of Elasticsearch at {settings.url} is not trusted ({_tls_reason(err)}); "
            "give the CA that signed it (--es-ca-certs FILE), or, for a test node only, --es-no-verify-certs."
        ) from None
    except EsConnectionError as err:
        if settings.url.startswith("http://") and _speaks_tls(settings.url):
            https = "https://" + settings.url[len("http://") :]
            raise ServiceError(f"Elasticsearch at {settings.url} speaks HTTPS; use --es-url {https}.") from None
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


def error_reason(err: ApiError) -> str:
    """The node's own words for an error (``error.reason`` of its body), else the error's text.

    Examples
    --------
    >>> from elastic_transport import ApiResponseMeta, HttpHeaders
    >>> from elasticsearch.exceptions import AuthorizationException
    >>> meta = ApiResponseMeta(403, "1.1", HttpHeaders(), 0.0, None)
    >>> error_reason(AuthorizationException("no", meta, {"error": {"reason": "action [x] is unauthorized"}}))
    'action [x] is unauthorized'
    """
    body = err.body if isinstance(err.body, dict) else {}
    error = body.get("error")
    reason = error.get("reason") if isinstance(error, dict) else None
    return str(reason) if reason else str(err)


def _authenticated(client: Elasticsearch, settings: EsSettings) -> None:
    """Check that the node accepts the credentials (any authenticated user may ask who it is)."""
    from elasticsearch.exceptions import ApiError

    try:
        client.security.authenticate()
    except ApiError as err:
        raise ServiceError(
            f"Elasticsearch at {settings.url} refused the credentials ({err.meta.status}); check {_CREDENTIALS}."
        ) from None


def _tls_reason(err: TlsError) -> str:
    """The certificate problem in a TLS error, without the client's retry wrapping."""
    text = str(err.message if hasattr(err, "message") else err)
    for reason in ("self-signed certificate in certificate chain", "unable to get local issuer certificate",
                   "self-signed certificate", "certificate has expired", "Hostname mismatch", "IP address mismatch"):
        if reason in text:
            return reason
    return "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in text else text[:200]


def _speaks_tls(url: str) -> bool:
    """Whether the server at ``url``'s host and port completes a TLS handshake (certificate unchecked)."""
    parts = urlsplit(url)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 9200), timeout=3) as raw:
            with context.wrap_socket(raw, server_hostname=parts.hostname):
                return True
    except (OSError, ssl.SSLError):
        return False


def write_blocked(err: ApiError) -> bool:
    """Whether the node refused a write because the index takes no more (a generation that the
    alias has just left: a load blocks writes to it once it carried their properties over).

    Examples
    --------
    >>> from elastic_transport import ApiResponseMeta, HttpHeaders
    >>> from elasticsearch.exceptions import AuthorizationException
    >>> meta = ApiResponseMeta(403, "1.1", HttpHeaders(), 0.0, None)
    >>> write_blocked(AuthorizationException("no", meta, {"error": {"type": "cluster_block_exception"}}))
    True
    """
    body = err.body if isinstance(err.body, dict) else {}
    error = body.get("error")
    return isinstance(error, dict) and error.get("type") == "cluster_block_exception"


def settled_operations(client: Elasticsearch, target: str) -> int:
    """Refresh ``target`` (an alias or indices) and return a sequence number up to which every
    write to each of its shards is now searchable (the least of its primaries' local
    checkpoints; -1 when it does not exist). A later write has a higher number on its shard, so
    ``_seq_no > settled`` finds every document written since (and maybe a few before)."""
    if not client.indices.exists(index=target):
        return -1
    stats = client.indices.stats(index=target, level="shards")["indices"]
    checkpoint = min(
        int(copy["seq_no"]["local_checkpoint"])
        for index in stats.values() for listed in index["shards"].values() for copy in listed if copy["routing"]["primary"]
    )
    client.indices.refresh(index=target)  # every write through the checkpoint was applied: now all are searchable
    return checkpoint
