"""The HTTP application: routes, request accounting, and the life of the writer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._time import parse_rfc3339
from ..fields import MAX_ID
from . import ingest
from .access import COOKIE, Access, BrowserGuard
from .body import InFlight, is_gzip, read_body
from .config import Config
from .dashboard import PAGE, favicon
from .errors import RequestError, retry_after
from .export import Export
from .metrics import Metrics
from .openapi import DOCUMENT
from .retention import Retention
from .stats import ERRORS_LIMIT, MAX_ERRORS_LIMIT, MAX_SPAN, Filters, query_errors, query_installs, query_stats
from .storage import Storage, StorageError, absolute_url
from .writer import Writer
from .writer_process import Encoded

log = logging.getLogger("ox_telemetry.collector")

#: Bodies larger than this are parsed on a worker thread, so the event loop keeps serving.
_OFFLOAD_BYTES = 1024 * 1024
_STORE_RETRY_S = 5
#: How long /healthz waits for the store: under the few seconds load balancers give a check.
HEALTH_TIMEOUT_S = 2.0
_PARSE_HOLDS = 4  # bytes held while parsing, in body sizes: a 20 MiB body peaked at 60 MiB (3), and a margin
_ENDPOINTS = {
    "/api/v1/telemetry": "telemetry", "/tevents": "tevents", "/api/v1/stats": "stats", "/": "dashboard",
    "/healthz": "healthz", "/metrics": "metrics", "/openapi.json": "openapi", "/api/v1/installs": "installs",
    "/api/v1/errors": "errors", "/api/v1/forget": "forget",
}
#: A forget request's body is one id: anything larger is refused.
_MAX_FORGET_BODY = 4096
#: The ``by=`` an installs view may group by.
GROUPINGS = ("version", "os", "command")
_PAGE_HEADERS = {
    # The page loads nothing from elsewhere; its script and style are inline.
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_PARSERS = {"telemetry": ingest.client_batch, "tevents": ingest.daemon_upload}


def parse_body(endpoint: str, body: bytes, received: int) -> tuple[list[ingest.Rejection], Encoded]:
    """The events of a body refused, and the rest encoded for the writer.

    A request holds no more than this while it waits for the commit: as objects, the rows of the requests
    waiting kept the garbage collector walking them (docs/collector.md, "Measured").
    """
    parsed = _PARSERS[endpoint](body, received)
    return parsed.rejected, Encoded.of(parsed.job())


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response."""
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


def error_response(exc: RequestError) -> Response:
    """The JSON answer for a refused request."""
    return json_response(_error_body(exc), exc.status, exc.headers)


def _error_body(exc: RequestError) -> dict[str, str]:
    return {"error": exc.message, "code": exc.code}


#: What an ingest request is answered: status, JSON body (None for none), extra headers.
Answer = tuple[int, Any, dict[str, str] | None]


async def _send_json(send: Send, answer: Answer) -> None:
    """Send ``answer`` as compact JSON straight to the ASGI server: the ingest path's reply, without building
    a Response object, which is much of the work of a request without events."""
    status, data, headers = answer
    body = b"" if data is None else orjson.dumps(data)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def now_us() -> int:
    """The current time, integer microseconds since the epoch."""
    return time.time_ns() // 1000


class Collector:
    """The running service's state: store, writer, limits and metrics."""

    def __init__(self, config: Config, storage: Storage) -> None:
        self.config = config
        self.storage = storage
        self.writer = Writer(absolute_url(config.db_url), max_pending=config.max_pending)
        self.access = Access(config)
        self.inflight = InFlight(config.max_inflight_bytes)
        self.metrics = Metrics()
        self.metrics.gauge("ox_collector_queued_events", "Events waiting for the writer.",
                           lambda: self.writer.queued_rows)
        self.export = Export(config, self.metrics) if config.otlp_endpoint else None
        self.retention = (None if config.retain_days is None
                          else Retention(storage, config.retain_days, config.retention_interval))
        self._retention_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the writer process (StorageError when it cannot open the store), and retention when asked for."""
        await self.writer.start()
        if self.export is not None:
            self.export.exporter.start()
        if self.retention is not None:
            self._retention_task = asyncio.create_task(self.retention.run())

    async def close(self) -> None:
        """Stop retention, commit what is queued and release the store."""
        if self._retention_task is not None:
            self._retention_task.cancel()
            await asyncio.gather(self._retention_task, return_exceptions=True)
        await self.writer.close()
        if self.export is not None:
            await run_in_threadpool(self.export.exporter.close)
        await run_in_threadpool(self.storage.close)

    async def ingest(self, request: Request, endpoint: str) -> Answer:
        """``POST /api/v1/telemetry`` and ``POST /tevents``: the answer to one request (sent by _IngestEndpoint)."""
        received = now_us()
        address = request.client.host if request.client else "unknown"
        claim = self.inflight.claim()
        try:
            self.access.admit_write(request.headers, address)
            self.writer.admit()
            headers = request.headers
            check_json(headers.get("content-type"))
            gzip = is_gzip(headers.get("content-encoding"))
            body = await read_body(request.stream(), headers.get("content-length"), gzip, claim,
                                   self.config.head_timeout)
            # The pieces read are gone; the body and what parsing makes of it (up to twice as large again) stay
            # until the job is encoded.
            claim.release()
            claim.take(_PARSE_HOLDS * len(body))
            if len(body) > _OFFLOAD_BYTES:
                refused, job = await run_in_threadpool(parse_body, endpoint, body, received)
            else:
                refused, job = parse_body(endpoint, body, received)
            del body
            claim.release()
            stored = await self.writer.submit(job) if job.rows else 0
        except StorageError:
            return self._refused(_STORE_UNAVAILABLE)
        except RequestError as exc:
            return self._refused(exc)
        except ClientDisconnect:
            return 400, None, None  # nobody is left to read it
        finally:
            claim.release()
        accepted = job.rows
        if stored and self.export is not None:
            self.export.stored(job)
        self.metrics.accepted[endpoint] += accepted
        self.metrics.duplicates[endpoint] += accepted - stored
        for rejection in refused:
            self.metrics.rejected[rejection.code] += 1
        extra = None
        if endpoint == "tevents" and self.config.daemon_interval:
            extra = {"X-SageOx-Interval": self.config.daemon_interval}
        rejected = [{"index": r.index, "code": r.code, "reason": r.reason} for r in refused]
        return 200, {"accepted": accepted, "duplicates": accepted - stored, "rejected": rejected}, extra

    def _refused(self, exc: RequestError) -> Answer:
        self.metrics.request_errors[exc.code] += 1
        return exc.status, _error_body(exc), exc.headers

    def _can_read(self, request: Request) -> bool:
        return self.access.read_allowed(request.headers, request.cookies)

    async def stats(self, request: Request) -> Response:
        """``GET /api/v1/stats?from=&to=[&version=&os=&command=]``."""
        return await self._read(request, lambda start, end, params: (query_stats, start, end, read_filters(params)))

    async def installs(self, request: Request) -> Response:
        """``GET /api/v1/installs?from=&to=[&by=version|os|command][&version=&os=&command=]``."""
        def call(start: int, end: int, params: Mapping[str, str]) -> tuple[Any, ...]:
            by = params.get("by") or None
            if by is not None and by not in GROUPINGS:
                raise RequestError(400, "invalid_query", f"'by' must be one of {', '.join(GROUPINGS)}")
            return query_installs, start, end, by, read_filters(params)
        return await self._read(request, call)

    async def errors(self, request: Request) -> Response:
        """``GET /api/v1/errors?from=&to=[&version=&os=&command=][&limit=50]``."""
        def call(start: int, end: int, params: Mapping[str, str]) -> tuple[Any, ...]:
            limit = params.get("limit") or str(ERRORS_LIMIT)
            if not limit.isdigit() or not 1 <= int(limit) <= MAX_ERRORS_LIMIT:
                raise RequestError(400, "invalid_query", f"'limit' must be a whole number from 1 to {MAX_ERRORS_LIMIT}")
            return query_errors, start, end, read_filters(params), int(limit)
        return await self._read(request, call)

    async def _read(self, request: Request, call: Callable[[int, int, Mapping[str, str]], tuple[Any, ...]],
                    ) -> Response:
        """A read endpoint: the read token, the range (``from``/``to``), then ``call``'s query (function and its
        arguments after the store) on a worker thread."""
        if not self._can_read(request):
            return _unauthorized()
        params = request.query_params
        try:
            start, end = stats_range(params.get("from"), params.get("to"), time.time())
            query, *args = call(start, end, params)
        except RequestError as exc:
            return error_response(exc)
        try:
            data = await run_in_threadpool(query, self.storage, *args)
        except StorageError:
            return _store_unavailable()
        return json_response(data, headers={"Cache-Control": "no-store"})

    async def forget(self, request: Request) -> Response:
        """``POST /api/v1/forget`` with ``{"client_id": "..."}``: that installation's stored events are deleted."""
        address = request.client.host if request.client else "unknown"
        claim = self.inflight.claim()
        try:
            self.access.admit_write(request.headers, address)
            check_json(request.headers.get("content-type"))
            body = await read_body(request.stream(), request.headers.get("content-length"),
                                   is_gzip(request.headers.get("content-encoding")), claim, self.config.head_timeout,
                                   max_body=_MAX_FORGET_BODY, max_decoded=_MAX_FORGET_BODY)
            client_id = forget_target(body)
            deleted = await run_in_threadpool(self.storage.delete_batches, "client_id = :client_id",
                                              {"client_id": client_id})
        except RequestError as exc:
            return error_response(exc)
        except StorageError:
            return _store_unavailable()
        except ClientDisconnect:
            return Response(status_code=400)
        finally:
            claim.release()
        log.info("forgot an installation: %d stored events deleted", deleted)
        return json_response({"forgotten": deleted})

    async def page(self, request: Request) -> Response:
        """``GET /``: the dashboard; ``/?token=`` is exchanged for the cookie and a URL without it."""
        token = request.query_params.get("token")
        if token is not None:
            # The token leaves the URL (history, logs, Referer) at once; only the right one sets the cookie, so a
            # wrong one never replaces a right cookie.
            response: Response = RedirectResponse("/", 303, headers=_PAGE_HEADERS)
            if self.access.token_matches(token):
                response.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                                    secure=request.url.scheme == "https")
            return response
        if not self._can_read(request):
            return HTMLResponse(
                "<!doctype html><title>ox-telemetry</title><p>A read token is required: open this page as "
                "<code>/?token=&lt;token&gt;</code>.", 401, _PAGE_HEADERS,
            )
        return HTMLResponse(PAGE, headers={**_PAGE_HEADERS, "Cache-Control": "no-store"})

    async def metrics_text(self, request: Request) -> Response:
        """``GET /metrics``."""
        if not self._can_read(request):
            return _unauthorized()
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def healthz(self, request: Request) -> Response:
        """``GET /healthz``, a load balancer's check: 200 only while the writer runs and the store answers within
        HEALTH_TIMEOUT_S, so a collector whose database hangs is taken out of rotation instead of holding the
        check (and its clients) until the balancer's own timeout."""
        if not self.writer.alive():
            return json_response({"error": "the writer is not running", "code": "writer_down"}, 503)
        check = asyncio.ensure_future(self.storage.ping())
        try:
            # Not wait_for alone: it waits for the cancelled check to end, and a query cancelled in psycopg first
            # asks the server to cancel it, which a hung server never answers (10 s).
            await asyncio.wait_for(asyncio.shield(check), HEALTH_TIMEOUT_S)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            _abandon(check)
            return json_response({"error": f"the store did not answer within {HEALTH_TIMEOUT_S:g} s",
                                  "code": "store_timeout"}, 503)
        except StorageError as exc:
            return json_response({"error": str(exc), "code": "store_unavailable"}, 503)
        return json_response({"status": "ok", "store": self.storage.dialect, "queued": self.writer.queued_rows})


_ABANDONED: set[asyncio.Future[None]] = set()  # held until they end: the loop keeps only weak references


def _abandon(check: asyncio.Future[None]) -> None:
    """Cancel ``check`` and let it end in the background, its outcome read so none is logged as lost."""
    _ABANDONED.add(check)
    check.add_done_callback(_forget)
    check.cancel()


def _forget(check: asyncio.Future[None]) -> None:
    _ABANDONED.discard(check)
    if not check.cancelled():
        check.exception()


def check_json(content_type: str | None) -> None:
    """RequestError 415 unless the body is declared JSON: a browser sends JSON cross-site only after a CORS
    preflight, which the collector never grants, so no page a user opens can post events here."""
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise RequestError(415, "unsupported_media_type",
                           f"Content-Type {content_type!r} is not accepted; send application/json")


_STORE_UNAVAILABLE = retry_after(503, "storage_unavailable", "the event store is unavailable", _STORE_RETRY_S)


def _store_unavailable() -> Response:
    return error_response(_STORE_UNAVAILABLE)


def _unauthorized() -> Response:
    return error_response(RequestError(401, "unauthorized", "a read token is required",
                                       {"WWW-Authenticate": 'Bearer realm="ox-telemetry"'}))


def read_filters(params: Mapping[str, str]) -> Filters:
    """The ``version=``, ``os=`` and ``command=`` of a read endpoint's query; an empty one is no filter."""
    return Filters(params.get("version") or None, params.get("os") or None, params.get("command") or None)


def forget_target(body: bytes) -> str:
    """The installation id a forget body names; RequestError 400 for any other body."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestError(400, "invalid_json", "body is not valid JSON") from None
    client_id = data.get("client_id") if isinstance(data, dict) else None
    if not isinstance(client_id, str) or not client_id or ingest.installation_id(client_id) != client_id:
        raise RequestError(400, "invalid_body", "field 'client_id' must be a non-empty string of at most "
                                                f"{MAX_ID} characters")
    return client_id


def _time_param(value: str | None, name: str, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        if value.lstrip("-").isdigit():
            return int(value) / 1000
        return ingest.micros(parse_rfc3339(value)) / 1_000_000
    except (ValueError, OverflowError):
        raise RequestError(400, "invalid_query", f"query parameter {name!r} must be an RFC 3339 time "
                                                 "or Unix milliseconds") from None


def stats_range(start: str | None, end: str | None, now: float) -> tuple[int, int]:
    """[from, to) as minute-aligned Unix seconds; the last 24 hours by default."""
    to = _time_param(end, "to", now)
    frm = _time_param(start, "from", to - 86400)
    first, last = int(frm // 60 * 60), int(-(-to // 60) * 60)
    if first >= last:
        raise RequestError(400, "invalid_query", "'from' must be before 'to'")
    if last - first > MAX_SPAN:
        raise RequestError(400, "invalid_query", f"the range is over {MAX_SPAN // 86400} days")
    if first < 0 or last > 253402300800:  # 1970 to the year 9999
        raise RequestError(400, "invalid_query", "the range must lie between 1970 and 9999")
    return first, last


class _IngestEndpoint:
    """An ingest path as a plain ASGI app (see IngestFirst); a class, not a function, so Starlette's Route,
    for the other methods, takes it as one."""

    def __init__(self, collector: Collector, endpoint: str) -> None:
        self.collector = collector
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_json(send, await self.collector.ingest(Request(scope, receive), self.endpoint))


class IngestFirst:
    """ASGI middleware: the browser checks (``BrowserGuard``) for every request; then a POST to an ingest path
    goes straight to its endpoint, ahead of Starlette's exception layer and router; anything else goes on to them.

    Ingest is the load the collector is sized for; the layers it skips do nothing for it but cost CPU a request.
    """

    def __init__(self, app: ASGIApp, endpoints: dict[str, ASGIApp], guard: BrowserGuard) -> None:
        self.app = app
        self.endpoints = endpoints
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.guard.refusal(scope["scheme"], scope["headers"])
        if refusal is not None:
            await _send_json(send, (refusal.status, _error_body(refusal), {"Connection": "close"}))
            return
        endpoint = self.endpoints.get(scope["path"]) if scope["method"] == "POST" else None
        await (endpoint or self.app)(scope, receive, send)


class ObserveRequests:
    """ASGI middleware: latency and status of every request into the metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            endpoint = _ENDPOINTS.get(scope["path"], "other")
            self.metrics.observe_request(endpoint, status, time.perf_counter() - started)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, f"http_{exc.status_code}")
    return json_response({"error": exc.detail, "code": code}, exc.status_code, dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return json_response({"error": "internal error", "code": "internal"}, 500)


def create_app(collector: Collector) -> Starlette:
    """The ASGI app for ``collector``; closing the app (lifespan end) closes the collector."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await collector.start()
        yield
        await collector.close()

    async def openapi(request: Request) -> Response:
        return json_response(DOCUMENT)

    ingest_endpoints: dict[str, ASGIApp] = {
        "/api/v1/telemetry": _IngestEndpoint(collector, "telemetry"), "/tevents": _IngestEndpoint(collector, "tevents"),
    }
    routes = [
        # Declared here for the other methods' 405 and the API description; IngestFirst takes their POSTs.
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in ingest_endpoints.items()),
        Route("/api/v1/stats", collector.stats, methods=["GET"]),
        Route("/api/v1/installs", collector.installs, methods=["GET"]),
        Route("/api/v1/errors", collector.errors, methods=["GET"]),
        Route("/api/v1/forget", collector.forget, methods=["POST"]),
        Route("/", collector.page, methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
        Route("/healthz", collector.healthz, methods=["GET"]),
        Route("/metrics", collector.metrics_text, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    app.add_middleware(IngestFirst, endpoints=ingest_endpoints, guard=BrowserGuard(collector.config))
    app.add_middleware(ObserveRequests, metrics=collector.metrics)  # the outer: it sees every request
    return app
