"""The gateway: FastAPI application factory, lifespan-managed resources, one error handler."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import CRMError, ServiceUnavailable
from core.logging import get_logger
from core.observability import configure_tracing
from core.process import tune_gc
from core.settings import Settings, get_settings
from core.version import VERSION
from crm.db import create_engine, create_sessionmaker
from gateway import (
    agents,
    channel_metrics,
    gmail,
    health,
    help,
    identity_links,
    tickets,
    ui,
    vocabulary,
    web_form,
    whatsapp,
)
from gateway.agents import customers as agent_customers
from gateway.agents import kb as agent_kb
from gateway.agents import kb_suggestions as agent_kb_suggestions
from gateway.agents import ownership as agent_ownership
from gateway.agents import reports as agent_reports
from gateway.agents import workspace as agent_workspace
from gateway.ratelimit import SenderLimiter, TooManyRequests
from gateway.resources import KafkaProducerHolder, Resources, TemporalHolder

log = get_logger(__name__)

_FAVICON = Path(__file__).parent / "static" / "favicon.ico"
# Seconds a client is asked to wait after a 503: about how long a restarted dependency takes.
SERVICE_UNAVAILABLE_RETRY_AFTER_S = 5


class ErrorBody(BaseModel):
    """What every error answer looks like (rendered by the handlers in `create_app`)."""

    error: str
    message: str
    detail: Any | None = None


_ERROR_DESCRIPTIONS = {
    400: "Malformed request",
    401: "No or invalid credentials",
    403: "Refused (e.g. missing or invalid signature)",
    404: "Not found",
    409: "Conflict",
    413: "Request body too large",
    415: "The body is not JSON (send Content-Type: application/json)",
    422: "Invalid fields",
    429: "Too many requests from this sender; see Retry-After",
    503: "A dependency is down; retry",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all with the one error body."""
    return {code: {"model": ErrorBody, "description": _ERROR_DESCRIPTIONS[code]} for code in codes}


class BodySizeLimit:
    """Refuse request bodies over the limit with 413, before any handler reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _buffered(self, scope: Scope, receive: Receive, send: Send) -> None:
        # No Content-Length (chunked): read up to the limit here, where no handler's broad `except`
        # can turn the overflow into a 400, then hand the app the body it would have read.
        body = await _buffered_body(self.max_bytes, receive)
        if body is None:
            await _send_json(
                send,
                413,
                {"error": "payload_too_large", "message": f"request body must be at most {self.max_bytes} bytes"},
            )
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                declared = value  # the last one wins, as in dict(headers)
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            status = 413 if declared.isdigit() else 400
            await _send_json(
                send,
                status,
                {
                    "error": "payload_too_large" if status == 413 else "bad_request",
                    "message": f"request body must be at most {self.max_bytes} bytes"
                    if status == 413
                    else "invalid Content-Length",
                },
            )
            return
        if declared is None:
            await self._buffered(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await _send_json(
                send,
                413,
                {"error": "payload_too_large", "message": f"request body must be at most {self.max_bytes} bytes"},
            )


class InboundWebhookFastPath:
    """`POST /api/v1/webhooks/whatsapp` answered as plain ASGI, ahead of FastAPI's routing.

    Twilio's inbound webhook is the gateway's hot path, and FastAPI's per-request machinery (route
    matching across every included router, dependency solving, exit stacks) cost more CPU than the
    webhook's own work. This runs the same endpoint function (`whatsapp.whatsapp_inbound`: signature
    check, NUL stripping, rate limit, acks=all produce) and renders errors with the same handler
    bodies, between the same middlewares (RequestMetrics and BodySizeLimit wrap it, and any other
    exception goes on to the app's 500 handler). The FastAPI route stays: it documents the endpoint
    in OpenAPI and serves it whenever this is not installed (tracing on, so spans carry the route).
    Anything but an exact POST to the path (other methods, trailing slash, a root_path) falls through.
    """

    route = SimpleNamespace(path=whatsapp.INBOUND_PATH)  # what RequestMetrics labels the request with

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != whatsapp.INBOUND_PATH
            or scope["method"] != "POST"
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        response: Response
        try:
            response = await whatsapp.whatsapp_inbound(Request(scope, receive))
        except CRMError as exc:
            response = crm_error_response(exc)
        except Exception as exc:
            if not is_database_outage(exc):
                raise
            response = crm_error_response(ServiceUnavailable("the database is unavailable; retry later"))
        await response(scope, receive, send)


def crm_error_response(exc: CRMError) -> JSONResponse:
    """The JSON error answer for one of our errors (the `CRMError` handler's body)."""
    body: dict[str, object] = {"error": exc.code, "message": exc.message}
    if exc.detail is not None:
        body["detail"] = exc.detail
    headers = (
        {"Retry-After": str(exc.retry_after)}
        if isinstance(exc, TooManyRequests)
        else getattr(exc, "headers", None)  # e.g. WWW-Authenticate on a 401
    )
    if isinstance(exc, ServiceUnavailable) and not (headers and "Retry-After" in headers):
        # A dependency is down: providers (Twilio, Pub/Sub) and browsers retry; say when.
        headers = {**(headers or {}), "Retry-After": str(SERVICE_UNAVAILABLE_RETRY_AFTER_S)}
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


def _body_problem(request: Request, errors: list[dict[str, Any]]) -> JSONResponse | None:
    """The answer when the body as a whole is unusable (empty, not JSON, not an object), else None.

    FastAPI reports these as field errors at `body` ("Field required", "JSON decode error" at a
    character offset, "valid dictionary"), which name no field a person could fix.
    """
    for err in errors:
        loc = tuple(err.get("loc", ()))
        kind = err.get("type")
        message: str | None = None
        if loc == ("body",) and kind == "missing":
            message = "the request body is empty: send a JSON object"
        elif loc[:1] == ("body",) and len(loc) <= 2 and kind == "json_invalid":
            reason = str((err.get("ctx") or {}).get("error") or "not valid JSON")
            where = f" at character {loc[1]}" if len(loc) == 2 and isinstance(loc[1], int) else ""
            message = f"the request body is not valid JSON: {reason}{where}"
        elif loc == ("body",) and kind in ("model_attributes_type", "dict_type", "model_type"):
            content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if content_type and content_type != "application/json" and not content_type.endswith("+json"):
                return JSONResponse(
                    {
                        "error": "unsupported_media_type",
                        "message": f"this endpoint takes JSON (Content-Type: application/json), not {content_type}",
                    },
                    415,
                )
            message = "the request body must be a JSON object"
        if message is not None:
            body = {"error": "validation_error", "message": message, "detail": [{"field": "body", "message": message}]}
            return JSONResponse(body, 422)
    return None


def validation_error_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    """415 for a body that is not JSON at all, 422 naming what to fix (the body as a whole, or each field)."""
    errors = list(exc.errors())
    problem = _body_problem(request, errors)
    if problem is not None:
        return problem
    detail = [
        {"field": ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body", "message": err.get("msg", "")}
        for err in errors
    ]
    fields = ", ".join(dict.fromkeys(d["field"] for d in detail))
    return JSONResponse({"error": "validation_error", "message": f"invalid fields: {fields}", "detail": detail}, 422)


def _outage_errors() -> tuple[type[BaseException], ...]:
    from asyncpg import exceptions as pg
    from sqlalchemy import exc as sa

    return (
        OSError,  # refused, reset, timed out, unreachable (asyncpg may raise a bare OSError for several hosts)
        pg.PostgresConnectionError,  # SQLSTATE class 08, and a connection that went away
        pg.OperatorInterventionError,  # class 57: shutting down, starting up, crashed
        pg.TooManyConnectionsError,
        sa.OperationalError,
        sa.InterfaceError,
        sa.TimeoutError,  # the pool waited for a connection in vain
        sa.DBAPIError,  # checked further in is_database_outage
    )


_OUTAGE_ERRORS = _outage_errors()
# OSErrors about local files are bugs or configuration, not an outage of a service.
_LOCAL_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)


def is_database_outage(exc: BaseException) -> bool:
    """True for errors that mean PostgreSQL is down or restarting, not that a request or our code is wrong.

    asyncpg raises some of these unwrapped (e.g. CannotConnectNowError "the database system is
    starting up" when the pool opens a connection), so neither SQLAlchemyError nor OSError covers them.
    """
    from sqlalchemy import exc as sa

    outage = _OUTAGE_ERRORS
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if (
            isinstance(current, outage)
            and not isinstance(current, _LOCAL_OS_ERRORS)
            and (not isinstance(current, sa.DBAPIError) or isinstance(current, sa.OperationalError | sa.InterfaceError))
        ):
            return True
        if isinstance(current, sa.DBAPIError):
            if current.connection_invalidated:
                return True
            if isinstance(current.orig, BaseException) and isinstance(current.orig, outage):
                return True
        current = current.__cause__ or current.__context__
    return False


REQUEST_SECONDS = Histogram(
    "crm_fte_http_request_seconds",
    "Gateway request latency",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class RequestMetrics:
    """Request latency by route template (not raw path: ticket ids must not explode the label set)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            _request_seconds(scope["method"], template, status).observe(time.perf_counter() - started)


_REQUEST_SECONDS_CHILDREN: dict[tuple[str, str, int], Any] = {}


def _request_seconds(method: str, template: str, status: int) -> Any:
    """The histogram child for these labels; `.labels()` costs a lock and a few allocations per call.

    Bounded: methods and statuses are few, templates are the app's routes (or "unmatched").
    """
    key = (method, template, status)
    child = _REQUEST_SECONDS_CHILDREN.get(key)
    if child is None:
        if len(_REQUEST_SECONDS_CHILDREN) > 10_000:  # e.g. a client sending made-up methods
            return REQUEST_SECONDS.labels(method, template, str(status))
        child = _REQUEST_SECONDS_CHILDREN[key] = REQUEST_SECONDS.labels(method, template, str(status))
    return child


async def _buffered_body(max_bytes: int, receive: Receive) -> bytes | None:
    """The whole body of a request without Content-Length, or None once it passes `max_bytes`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)  # the client went away; the app sees the disconnect next
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > max_bytes:
            return None
        if not message.get("more_body", False):
            return b"".join(chunks)


class _TooLarge(Exception):
    pass


async def _send_json(send: Send, status: int, body: dict[str, str]) -> None:
    import json

    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the gateway application; resources are opened in the lifespan, not here."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cfg = settings or get_settings()
        engine = create_engine(cfg)
        resources = Resources(
            settings=cfg,
            engine=engine,
            sessions=create_sessionmaker(engine),
            kafka=KafkaProducerHolder(cfg),
            temporal=TemporalHolder(cfg),
            limiter=SenderLimiter.from_strings(
                web_form=cfg.rate_limit_web_form,
                whatsapp=cfg.rate_limit_whatsapp,
                ticket_lookup_failures=cfg.rate_limit_ticket_lookup_failures,
                help=cfg.rate_limit_help,
                identity_confirmation=cfg.rate_limit_identity_confirmation,
            ),
        )
        app.state.resources = resources
        gc_threshold = tune_gc()
        log.info("gateway.started", version=VERSION)
        try:
            yield
        finally:
            gc.set_threshold(*gc_threshold)
            gc.unfreeze()
            await resources.kafka.close()
            await engine.dispose()
            log.info("gateway.stopped")

    cfg = settings or get_settings()
    tracing = configure_tracing(cfg, "crm-fte-gateway")
    app = FastAPI(
        title="CRM Digital FTE",
        # FastAPI's native OpenTelemetry asks the global providers (reading os.environ) on every
        # request; with tracing off nothing in this process installs a provider, so switch it off
        # once here. With tracing on, the defaults stay (it defers to the contrib middleware below).
        telemetry=None if tracing else {"tracing": False, "metrics": False, "logs": False},
        version=VERSION,
        description="A 24/7 AI customer-success agent: support conversations as durable Temporal workflows.",
        lifespan=lifespan,
    )
    # The WhatsApp webhooks first: routing tries the routers in order (their paths overlap no other
    # route's), and this is the gateway's busiest path.
    app.include_router(whatsapp.router, responses=error_responses(400, 403, 413, 429, 503))
    app.include_router(health.router)
    app.include_router(web_form.router, responses=error_responses(400, 413, 415, 422, 429, 503))
    app.include_router(gmail.router, responses=error_responses(400, 403, 413, 415, 503))
    app.include_router(tickets.router, responses=error_responses(404, 422, 429))
    app.include_router(identity_links.router, responses=error_responses(400, 404, 409, 413, 415, 422, 429, 503))
    app.include_router(channel_metrics.router, responses=error_responses(422))
    app.include_router(agents.router, responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503))
    app.include_router(agent_customers.router, responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503))
    app.include_router(agent_workspace.router, responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503))
    app.include_router(agent_ownership.router, responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503))
    app.include_router(agent_kb.router, responses=error_responses(400, 401, 403, 413, 422, 503))
    app.include_router(agent_reports.router, responses=error_responses(400, 401, 403, 422, 503))
    app.include_router(
        agent_kb_suggestions.router, responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503)
    )
    app.include_router(vocabulary.router)
    app.include_router(ui.router)
    app.include_router(help.router, responses=error_responses(400, 404, 413, 415, 422, 429))

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        """The pages' icon: every browser asks for it, and a 404 is an error in its console."""
        return Response(
            _FAVICON.read_bytes(),
            media_type="image/x-icon",
            headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus exposition of this process's metrics."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(CRMError)
    async def crm_error(_: Request, exc: CRMError) -> JSONResponse:
        return crm_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": "http_error", "message": str(exc.detail)}, exc.status_code, headers=getattr(exc, "headers", None)
        )

    async def outage(request: Request, exc: Exception) -> JSONResponse:
        # Handled here, inside the app, rather than by the catch-all below: that one runs in
        # Starlette's outermost middleware, which re-raises after answering (a traceback per request).
        if not is_database_outage(exc):
            raise exc
        log.warning("gateway.database_unavailable", path=request.url.path, error_type=type(exc).__name__)
        return crm_error_response(ServiceUnavailable("the database is unavailable; retry later"))

    for error_class in _OUTAGE_ERRORS:
        app.add_exception_handler(error_class, outage)  # type: ignore[arg-type]  # Starlette types handlers loosely

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if is_database_outage(exc):
            # Wherever it surfaced (a handler without its own except, a connection refused while
            # PostgreSQL restarts): an outage, so the provider or browser retries. Never a 500.
            log.warning("gateway.database_unavailable", path=request.url.path, error_type=type(exc).__name__)
            return crm_error_response(ServiceUnavailable("the database is unavailable; retry later"))
        log.exception("gateway.unhandled_error", error_type=type(exc).__name__)
        return JSONResponse({"error": "internal_error", "message": "internal error"}, 500)

    # Innermost first: the fast path sits inside the body limit and the metrics.
    if not tracing:
        app.add_middleware(InboundWebhookFastPath)
    app.add_middleware(BodySizeLimit, max_bytes=cfg.gateway_max_body_bytes)
    app.add_middleware(RequestMetrics)
    if tracing:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app.add_middleware(OpenTelemetryMiddleware)
    return app
