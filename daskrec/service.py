"""The recommendation service: an ASGI application (FastAPI on uvicorn) over the index.

It reads the indicators behind an alias and the live event store beside them
(:mod:`daskrec.events`); it never imports the build engine, Dask or numba, so it starts in a
fraction of a second and follows each new build through the alias, without a restart.

Routes (the shapes the Universal Recommender's users know):

* ``GET /items/{id}/similar?k=``: the item's indicators with their scores.
* ``GET /users/{id}/recommendations?k=&from=``: the user's recent history read live from the
  event store (the most recent N per event type, N and the types recorded with the generation),
  seen items excluded, cross-occurrence fields used when the index has them.
* ``POST /recommendations``: an explicit ``history``, ``cross_history``, ``item``, ``item_set``,
  ``exclude``, business rules (``include``, ``exclude_where``, ``boosts``), ``field_boosts``,
  ``backfill``, ``k``, ``from``.
* ``POST /events``: one event or a batch in the events-log layout, acknowledged once durable
  (the node's translog is synced per request) and visible to the next request (``refresh=wait_for``).
  ``{"event": "$set", "itemid": ..., "properties": {...}}`` sets item properties at once.
* ``GET /healthz`` (open), ``GET /metrics`` (Prometheus), ``/openapi.json``, ``/docs``.

With an API key, every route but ``/healthz``, the page and the schema pages wants it in
``X-API-Key`` (compared in constant time, never logged). A node that cannot be reached gives 503
with ``Retry-After``; the client reconnects by itself.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path as FilePath
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import orjson
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import AsyncElasticsearch
from elasticsearch.exceptions import ApiError, NotFoundError
from fastapi import Body, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from .config import Backfill, ServiceConfig
from .errors import DaskrecError, InputError
from .es import EsSettings, error_reason, write_blocked
from .events import MAX_ID_CHARS, Event, events_index, events_mapping, history_searches, parse_event
from .schema import PROPERTIES, indicator_field, scores_field
from .serve import (
    ItemFilter,
    LayoutMemory,
    Recommendation,
    backfill_body,
    backfill_reason,
    has_history,
    recommendation_body,
    recommendations,
)

log = logging.getLogger(__name__)

__all__ = ["create_app"]

ItemId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)] | int
"""An item id as in the events log (text ids are never blank)."""
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Scored(BaseModel):
    """An item with its score and why it is there."""

    item: ItemId
    score: float
    reason: Literal["indicators", "popularity", "trending"] | None = None


class Recommendations(BaseModel):
    """A ranked list."""

    items: list[Scored]
    generation: str | None = None
    history: list[str] | None = None


class Problem(BaseModel):
    """Every error's body: what went wrong, in words; for a request that does not fit the schema,
    also each field's problem as FastAPI finds it."""

    error: str
    detail: list[dict[str, Any]] | None = None


class Health(BaseModel):
    """``GET /healthz``."""

    status: Literal["ok", "no index", "unavailable"]
    node: bool
    alias: str
    generation: str | None = None


class Stored(BaseModel):
    """``POST /events``: what was stored."""

    events: int
    property_updates: int


_PROBLEMS = {
    400: "The request's values cannot be used (named in the error).",
    401: "A valid X-API-Key header is needed.",
    404: "No such item or index.",
    413: "The body is over the size limit.",
    422: "The request does not fit the schema, or is over a limit.",
    502: "Elasticsearch refused the request.",
    503: "Elasticsearch is unreachable or there is no index yet; see Retry-After.",
}


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each with the :class:`Problem` body."""
    return {code: {"model": Problem, "description": _PROBLEMS[code]} for code in codes}


class Query_(BaseModel):  # noqa: N801 - "Query" is FastAPI's
    """``POST /recommendations``: everything ``daskrec recommend`` can ask."""

    model_config = ConfigDict(extra="forbid")
    history: list[ItemId] = Field(default_factory=list, description="The user's recent primary items.")
    cross_history: dict[str, list[ItemId]] = Field(default_factory=dict, description="Recent items per cross-occurrence event type.")
    item: ItemId | None = Field(default=None, description="Items like this one.")
    item_set: list[ItemId] = Field(default_factory=list, description="Items that go with this basket.")
    exclude: list[ItemId] = Field(default_factory=list, description="Items never recommended.")
    include: dict[str, list[str | int | float | bool]] = Field(default_factory=dict, description="Only items whose property has one of these values.")
    exclude_where: dict[str, list[str | int | float | bool]] = Field(default_factory=dict, description="No item whose property has one of these values.")
    boosts: list[tuple[str, str | int | float | bool, float]] = Field(default_factory=list, description="(property, value, factor) score multipliers.")
    field_boosts: dict[str, float] = Field(default_factory=dict, description="Weight per event type's matches ('primary' for the primary).")
    backfill: Backfill = "popularity"
    k: int = Field(default=10, ge=1)
    from_: int = Field(default=0, ge=0, alias="from")


def create_app(settings: EsSettings, config: ServiceConfig = ServiceConfig()) -> FastAPI:
    """The service over the node of ``settings`` and the alias of ``config``."""
    state = _State(settings, config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.client = AsyncElasticsearch(**{**settings.client_options(), "max_retries": 1})
        try:
            yield
        finally:
            await state.client.close()

    app = FastAPI(title="daskrec", summary="Item-to-item recommendations from LLR indicators in Elasticsearch",
                  default_response_class=_Json, lifespan=lifespan)
    limit_k = Query(10, ge=1, le=config.max_k, description="Items wanted.")
    limit_from = Query(0, ge=0, le=config.max_k, alias="from", description="Items skipped (paging).")

    open_paths = frozenset({"/", "/healthz", app.docs_url, app.openapi_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url})
    app.add_middleware(_Gate, state=state, open_paths=open_paths)

    @app.exception_handler(TransportConnectionError)
    @app.exception_handler(ConnectionTimeout)
    async def unreachable(_: Request, err: Exception) -> JSONResponse:
        state.node_errors.labels(kind=type(err).__name__).inc()
        return _Json({"error": "Elasticsearch is unreachable; retry later."}, status_code=503,
                     headers={"Retry-After": str(config.retry_after_s)})

    @app.exception_handler(DaskrecError)
    async def daskrec_error(_: Request, err: DaskrecError) -> JSONResponse:
        return _Json({"error": str(err)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def refused(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return _Json({"error": str(err.detail)}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        problems = jsonable_encoder(err.errors(), exclude={"input", "url"})
        first = problems[0] if problems else {}
        where = " ".join(str(part) for part in first.get("loc", ()))
        return _Json({"error": f"{where}: {first.get('msg', 'invalid request')}", "detail": problems}, status_code=422)

    @app.exception_handler(ApiError)
    async def node_error(_: Request, err: ApiError) -> JSONResponse:
        if err.meta.status == 400:  # the request's values made a query the node cannot run
            return _Json({"error": f"the query cannot be run: {error_reason(err)}"}, status_code=400)
        state.node_errors.labels(kind=type(err).__name__).inc()
        if err.meta.status == 403:  # the reason names the user and its roles: for the log, not for clients
            log.warning("service: Elasticsearch refused this service's user (%s); grant it the daskrec_service role "
                        "(README, 'Secured Elasticsearch')", error_reason(err))
            return _Json({"error": "Elasticsearch refused this service's user (403); its log says which privilege is missing"},
                         status_code=502)
        log.warning("service: the node answered %s", err.meta.status)
        return _Json({"error": f"Elasticsearch answered {err.meta.status}"}, status_code=502)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return _PAGE

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "The node or the alias is missing."}})
    async def healthz() -> JSONResponse:
        """Whether the node answers and the alias is there, and which generation serves."""
        try:
            generation = await state.generation()
        except (TransportConnectionError, ConnectionTimeout):
            return _Json({"status": "unavailable", "node": False, "alias": config.alias}, status_code=503,
                         headers={"Retry-After": str(config.retry_after_s)})
        body = {"status": "ok" if generation else "no index", "node": True, "alias": config.alias, "generation": generation}
        return _Json(body, status_code=200 if generation else 503)

    @app.get("/metrics", response_class=Response, responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text format."}, **_problems(401)})
    async def metrics() -> Response:
        """Request latency per route, node errors (Prometheus text format)."""
        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/items/{item_id}/similar", response_model=Recommendations, response_model_exclude_none=True,
             responses=_problems(401, 404, 422, 502, 503))
    async def similar(item_id: Annotated[str, Path(max_length=MAX_ID_CHARS)], k: int = limit_k) -> Response:
        """The item's indicators, best first, with their root-LLR scores."""
        try:
            document = await state.client.get(index=config.alias, id=item_id, source_includes=[indicator_field(), scores_field(indicator_field())])
        except NotFoundError as err:
            what = "index" if err.error == "index_not_found_exception" else "item"
            raise HTTPException(404, f"no {what} {item_id!r} in {config.alias!r}") from None
        source = document["_source"]
        pairs = zip(source.get(indicator_field(), []), source.get(scores_field(indicator_field()), []))
        return _answer([{"item": item, "score": score} for item, score in list(pairs)[:k]], document["_index"])

    @app.get("/users/{user_id}/recommendations", response_model=Recommendations, response_model_exclude_none=True,
             responses=_problems(401, 422, 502, 503))
    async def for_user(user_id: Annotated[str, Path(max_length=MAX_ID_CHARS)], k: int = limit_k, offset: int = limit_from) -> Response:
        """Recommendations from the user's live history (seen items excluded)."""
        history, cross = await state.live_history(user_id)
        found, generation = await state.recommend(history, cross, {}, ItemFilter(), "popularity", k + offset)
        return _answer(_listed(found[offset:]), generation, history)

    @app.post("/recommendations", response_model=Recommendations, response_model_exclude_none=True,
              responses=_problems(400, 401, 413, 422, 502, 503))
    async def recommend(query: Query_) -> Response:
        """Recommendations for an explicit history, an item, or a basket, with business rules."""
        wanted = query.k + query.from_
        lists = [query.history, query.item_set, query.exclude, *query.cross_history.values()]
        if wanted > config.max_k or any(len(items) > config.max_history for items in lists):
            raise HTTPException(422, f"k + from may be at most {config.max_k}, a list at most {config.max_history} items")
        history = [*query.history, *query.item_set, *([query.item] if query.item is not None else [])]
        item_filter = ItemFilter(exclude=tuple(query.exclude), include=query.include, exclude_where=query.exclude_where,
                                 boosts=[tuple(b) for b in query.boosts])  # type: ignore[misc]
        boosts = {indicator_field(None if name == "primary" else name): weight for name, weight in query.field_boosts.items()}
        found, generation = await state.recommend(history, query.cross_history, boosts, item_filter, query.backfill, wanted)
        return _answer(_listed(found[query.from_:]), generation)

    @app.post("/events", response_model=Stored, responses=_problems(400, 401, 404, 413, 422, 502, 503))
    async def post_events(payload: Annotated[Any, Body(description="One event, a list of events, or {\"events\": [...]}.")]) -> dict[str, int]:
        """Store events durably (acknowledged after the node's translog sync) and make them visible
        to the next request; ``$set`` events update item properties at once."""
        raw = payload.get("events") if isinstance(payload, Mapping) and "events" in payload else payload
        batch = raw if isinstance(raw, list) else [raw]
        if not batch or len(batch) > config.max_batch:
            raise HTTPException(422, f"a batch holds 1 to {config.max_batch} events")
        now = int(time.time() * 1000)
        events: list[Event] = []
        updates: list[tuple[str, dict[str, Any]]] = []
        for position, raw_event in enumerate(batch):  # all are checked before any is stored
            if isinstance(raw_event, Mapping) and raw_event.get("event") == "$set":
                updates.append(_property_update(raw_event, position))
            else:
                events.append(parse_event(raw_event, now, position))
        if events:
            await state.store(events)
        for item, properties in updates:
            try:
                await state.set_properties(item, properties)
            except NotFoundError:
                raise HTTPException(404, f"no item {item!r} in {config.alias!r}") from None
        return {"events": len(events), "property_updates": len(updates)}

    return app


class _Json(JSONResponse):
    """JSON encoded by orjson (ids of any type, floats as the node gave them)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class _TooLarge(Exception):
    """A body grew past the limit while it was read."""


class _Gate:
    """Wants the API key (when there is one) on every path but ``open_paths``, refuses bodies over
    the limit (by ``Content-Length``, and by counting chunked ones), and records each request's
    latency by route and status.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` (``@app.middleware``) adds a task
    and a memory stream to every request, a measured ~1 ms of the service's CPU per request here.
    The key is checked here rather than by a FastAPI dependency on each route: the dependency cost
    a measured ~0.2 ms of CPU and of median latency per request (A/B in the README).
    """

    def __init__(self, app: ASGIApp, state: _State, open_paths: frozenset[str | None]) -> None:
        self.app, self.state, self.open_paths = app, state, open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        expected = self.state.config.api_key
        if expected is not None and scope["path"] not in self.open_paths and not _same_key(headers.get("x-api-key"), expected):
            await _Json({"error": "a valid X-API-Key header is needed"}, status_code=401, headers={"WWW-Authenticate": "X-API-Key"})(scope, receive, send)
            return
        limit = self.state.config.max_body_bytes
        size = headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > limit):
            await _too_large(limit)(scope, receive, send)
            return
        started, status, received = time.perf_counter(), 500, 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _TooLarge
            return message

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, counted, sent)
        except _TooLarge:
            status = 413
            await _too_large(limit)(scope, receive, send)
        finally:
            route = scope.get("route")
            self.state.latency.labels(route=getattr(route, "path", "unmatched"), method=scope["method"],
                                      status=str(status)).observe(time.perf_counter() - started)


def _too_large(limit: int) -> Response:
    """The 413 answer to a body over ``limit`` bytes."""
    return _Json({"error": f"the body is larger than {limit} bytes"}, status_code=413)


def _answer(items: list[dict[str, Any]], generation: str | None, history: list[str] | None = None) -> Response:
    """A :class:`Recommendations` body, encoded at once: the routes build it from values already
    checked, so FastAPI's second validation of the response model (a measured ~0.3 ms of CPU per
    request here) is skipped; the model still documents the shape in the OpenAPI schema."""
    body: dict[str, Any] = {"items": items}
    if generation is not None:
        body["generation"] = generation
    if history is not None:
        body["history"] = history
    return _Json(body)


def _listed(found: Sequence[Recommendation]) -> list[dict[str, Any]]:
    return [{"item": r.item, "score": r.score, "reason": r.reason} for r in found]


def _property_update(raw: Mapping[str, Any], position: int) -> tuple[str, dict[str, Any]]:
    item, properties = raw.get("itemid"), raw.get("properties")
    where = {"path": "request body", "row": position + 1}
    if isinstance(item, bool) or not isinstance(item, (str, int)):
        raise InputError("a $set event needs the item's id.", column="itemid", value=item, **where)  # type: ignore[arg-type]
    if not isinstance(properties, Mapping) or not properties or not all(isinstance(name, str) and name for name in properties):
        raise InputError("a $set event needs a non-empty object of named properties.", column="properties", **where)  # type: ignore[arg-type]
    return str(item), dict(properties)


def _same_key(sent: str | None, expected: str) -> bool:
    """Whether the client sent the key (compared in constant time)."""
    return sent is not None and secrets.compare_digest(sent.encode(), expected.encode())


class _State:
    """The service's connection, its memory of the alias, and its metrics."""

    def __init__(self, settings: EsSettings, config: ServiceConfig) -> None:
        self.settings, self.config = settings, config
        self.client: AsyncElasticsearch
        self.layouts = LayoutMemory()
        self.events_ready = False
        self.registry = CollectorRegistry()
        self.latency = Histogram("daskrec_request_seconds", "Request latency", ["route", "method", "status"],
                                 registry=self.registry, buckets=_LATENCY_BUCKETS)
        self.node_errors = Counter("daskrec_node_errors", "Failed requests to Elasticsearch", ["kind"], registry=self.registry)

    async def generation(self) -> str | None:
        """The generation behind the alias (None if there is no alias)."""
        try:
            mappings = (await self.client.indices.get_mapping(index=self.config.alias)).body
        except NotFoundError:
            return None
        return self.layouts.remember(self.config.alias, mappings)[0]

    async def _known(self) -> tuple[str, Any]:
        known = self.layouts.get(self.config.alias)
        if known is None:
            mappings = (await self.client.indices.get_mapping(index=self.config.alias)).body
            known = self.layouts.remember(self.config.alias, mappings)
        return known

    async def recommend(
        self,
        history: Sequence[object],
        cross: Mapping[str, Sequence[object]],
        boosts: Mapping[str, float],
        item_filter: ItemFilter,
        backfill: Backfill,
        k: int,
    ) -> tuple[list[Recommendation], str | None]:
        """As :func:`daskrec.serve.recommend` ranks, through the async client."""
        alias = self.config.alias
        try:
            generation, layout = await self._known()
        except NotFoundError:
            raise HTTPException(503, f"there is no index {alias!r} yet", headers={"Retry-After": str(self.config.retry_after_s)}) from None
        hits: list[dict[str, Any]] = []
        if has_history(history, cross):
            body = recommendation_body(history, k, layout, cross_histories=cross, boosts=boosts, item_filter=item_filter)
            hits = (await self.client.search(index=alias, body=body))["hits"]["hits"]
            if self.layouts.stale(alias, hits):
                fresh = self.layouts.remember(alias, (await self.client.indices.get_mapping(index=alias)).body)
                if fresh != (generation, layout):
                    generation, layout = fresh
                    body = recommendation_body(history, k, layout, cross_histories=cross, boosts=boosts, item_filter=item_filter)
                    hits = (await self.client.search(index=alias, body=body))["hits"]["hits"]
        found = recommendations(hits, "indicators")
        fill = backfill_body(history, found, k, item_filter, backfill)
        if fill is not None:
            found += recommendations((await self.client.search(index=alias, body=fill))["hits"]["hits"], backfill_reason(backfill))
        return found, generation

    async def live_history(self, visitor: str) -> tuple[list[str], dict[str, list[str]]]:
        """The user's latest primary items and latest items per cross type, from the event store,
        cut as the generation's build cut histories (else as configured)."""
        await self._known()
        alias = self.config.alias
        cut = self.layouts.history_cut(alias) or {}
        recent = int(cut.get("recent", self.config.recent))  # type: ignore[call-overload]
        types = cut["event_types"] if "event_types" in cut else self.config.event_types
        cross = self.layouts.cross_types(alias)
        lines: list[dict[str, Any]] = []
        for body in history_searches(visitor, recent, types, cross):  # type: ignore[arg-type]
            lines += [{"index": events_index(alias)}, body]
        try:
            answers = (await self.client.msearch(searches=lines))["responses"]
        except NotFoundError:
            return [], {}
        items = [[hit["_source"]["itemid"] for hit in answer.get("hits", {}).get("hits", [])] for answer in answers]
        return items[0], dict(zip(cross, items[1:]))

    async def set_properties(self, item: str, properties: dict[str, Any]) -> None:
        """Merge ``properties`` into the item's document behind the alias; return once searchable.

        A write that reached a generation just as the alias left it is refused by the write
        block the load puts there after carrying that generation's properties over; sent again,
        it goes through the moved alias.
        """
        for attempt in range(2):
            try:
                await self.client.update(index=self.config.alias, id=item, doc={PROPERTIES: properties}, refresh="wait_for")
                return
            except ApiError as err:
                if attempt or not write_blocked(err):
                    raise

    async def store(self, events: Sequence[Event]) -> None:
        """Index ``events`` into the event store; return once durable and searchable."""
        index = events_index(self.config.alias)
        if not self.events_ready:
            if not await self.client.indices.exists(index=index):
                await self.client.options(ignore_status=400).indices.create(index=index, mappings=events_mapping())
            self.events_ready = True
        operations: list[dict[str, Any]] = []
        sequence = time.time_ns()
        for offset, event in enumerate(events):
            operations += [{"index": {"_index": index}}, event.document(sequence + offset)]
        answer = await self.client.bulk(operations=operations, refresh="wait_for")
        if answer["errors"]:
            reasons = [next(iter(item.values())).get("error") for item in answer["items"] if next(iter(item.values())).get("error")]
            raise HTTPException(502, f"the node refused {len(reasons)} events: {reasons[:3]}")


_PAGE = (FilePath(__file__).parent / "static" / "index.html").read_text(encoding="utf-8")
"""A page for people: plain HTML and JavaScript calling the routes above, no build step."""
