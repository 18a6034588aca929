"""The gateway: FastAPI application factory, lifespan-managed resources, one error handler."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import CRMError
from core.logging import get_logger
from core.observability import configure_tracing
from core.settings import Settings, get_settings
from core.version import VERSION
from crm.db import create_engine, create_sessionmaker
from gateway import agents, channel_metrics, gmail, health, tickets, ui, web_form, whatsapp
from gateway.ratelimit import SenderLimiter, TooManyRequests
from gateway.resources import KafkaProducerHolder, Resources, TemporalHolder

log = get_logger(__name__)


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
        declared = dict(scope.get("headers") or []).get(b"content-length")
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
            REQUEST_SECONDS.labels(scope["method"], template, str(status)).observe(time.perf_counter() - started)


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
            limiter=SenderLimiter.from_strings(web_form=cfg.rate_limit_web_form, whatsapp=cfg.rate_limit_whatsapp),
        )
        app.state.resources = resources
        log.info("gateway.started", version=VERSION)
        try:
            yield
        finally:
            await resources.kafka.close()
            await engine.dispose()
            log.info("gateway.stopped")

    app = FastAPI(
        title="CRM Digital FTE",
        version=VERSION,
        description="A 24/7 AI customer-success agent: support conversations as durable Temporal workflows.",
        lifespan=lifespan,
    )
    app.include_router(health.router)
    app.include_router(web_form.router, responses=error_responses(400, 413, 422, 429, 503))
    app.include_router(whatsapp.router, responses=error_responses(400, 403, 413, 429, 503))
    app.include_router(gmail.router, responses=error_responses(400, 403, 413, 503))
    app.include_router(tickets.router, responses=error_responses(404, 422))
    app.include_router(channel_metrics.router, responses=error_responses(422))
    app.include_router(agents.router, responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503))
    app.include_router(ui.router)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus exposition of this process's metrics."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(CRMError)
    async def crm_error(_: Request, exc: CRMError) -> JSONResponse:
        body: dict[str, object] = {"error": exc.code, "message": exc.message}
        if exc.detail is not None:
            body["detail"] = exc.detail
        headers = (
            {"Retry-After": str(exc.retry_after)}
            if isinstance(exc, TooManyRequests)
            else getattr(exc, "headers", None)  # e.g. WWW-Authenticate on a 401
        )
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"), "message": err.get("msg", "")}
            for err in exc.errors()
        ]
        return JSONResponse({"error": "validation_error", "message": "invalid request", "detail": errors}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": "http_error", "message": str(exc.detail)}, exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("gateway.unhandled_error", error_type=type(exc).__name__)
        return JSONResponse({"error": "internal_error", "message": "internal error"}, 500)

    cfg = settings or get_settings()
    app.add_middleware(BodySizeLimit, max_bytes=cfg.gateway_max_body_bytes)
    app.add_middleware(RequestMetrics)
    if configure_tracing(cfg, "crm-fte-gateway"):
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app.add_middleware(OpenTelemetryMiddleware)
    return app
