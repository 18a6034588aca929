"""A small HTTP side-server for the worker and the bridge: /livez, /readyz, /metrics.

Kubernetes probes and Prometheus scrape it; `crm-fte up` polls /readyz to know a process is
really working (connected and polling), not just started.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class _SideServer(uvicorn.Server):
    """The process owns signal handling (graceful drain); this side server must not take it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_health_app(ready: Callable[[], tuple[bool, dict[str, object]]]) -> Starlette:
    async def livez(_: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    async def readyz(_: Request) -> JSONResponse:
        ok, detail = ready()
        return JSONResponse({"status": "ready" if ok else "not_ready", **detail}, status_code=200 if ok else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/livez", livez), Route("/readyz", readyz), Route("/metrics", metrics)])


async def serve_health(port: int, ready: Callable[[], tuple[bool, dict[str, object]]], host: str = "127.0.0.1") -> None:
    """Serve until cancelled, on `host` (HEALTH_HOST: loopback unless a pod asks for 0.0.0.0)."""
    config = uvicorn.Config(
        build_health_app(ready), host=host, port=port, log_config=None, access_log=False, lifespan="off"
    )
    server = _SideServer(config)
    try:
        await server.serve()
    except asyncio.CancelledError:
        server.should_exit = True
        raise
