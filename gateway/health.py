"""`GET /api/v1/health` in the seed's shape, and `GET /livez` for liveness probes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from core.logging import get_logger
from core.version import VERSION
from crm.db import ping
from gateway.deps import ResourcesDep
from gateway.resources import Resources

router = APIRouter()
log = get_logger(__name__)


class ComponentHealth(BaseModel):
    status: Literal["healthy", "unhealthy"]
    latency_ms: float | None = None
    error: str | None = None


class HealthResponse(BaseModel):
    status: Literal["healthy", "unhealthy"]
    components: dict[str, ComponentHealth]
    version: str


async def _timed(check: Callable[[], Awaitable[object]], limit: float) -> ComponentHealth:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), limit)
    except TimeoutError:
        return ComponentHealth(status="unhealthy", error=f"no answer within {limit:g}s")
    except Exception as exc:
        # The class name and first line only: driver errors can carry hostnames and user names.
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return ComponentHealth(status="unhealthy", error=f"{type(exc).__name__}: {first}".rstrip(": "))
    return ComponentHealth(status="healthy", latency_ms=round((time.perf_counter() - started) * 1000, 2))


async def check_components(resources: Resources) -> dict[str, ComponentHealth]:
    """Probe PostgreSQL, Kafka and Temporal concurrently, each bounded by the health timeout."""
    timeout = resources.settings.health_check_timeout_seconds

    async def database() -> None:
        await ping(resources.engine)

    async def kafka() -> None:
        producer = await resources.kafka.get()
        await producer.client.fetch_all_metadata()

    async def temporal() -> None:
        client = await resources.temporal.get()
        await client.workflow_service.get_system_info(GetSystemInfoRequest(), timeout=timedelta(seconds=timeout))

    names = ("database", "kafka", "temporal")
    results = await asyncio.gather(*(_timed(check, timeout) for check in (database, kafka, temporal)))
    return dict(zip(names, results, strict=True))


@router.get(
    "/api/v1/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "A dependency is down"}},
    tags=["health"],
)
async def health(resources: ResourcesDep) -> JSONResponse:
    """200 when PostgreSQL, Kafka and Temporal all answer; 503 (same body) when one does not."""
    components = await check_components(resources)
    healthy = all(c.status == "healthy" for c in components.values())
    body = HealthResponse(status="healthy" if healthy else "unhealthy", components=components, version=VERSION)
    if not healthy:
        log.warning(
            "health.unhealthy",
            components={k: v.error for k, v in components.items() if v.status != "healthy"},
        )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if healthy else 503)


@router.get("/livez", tags=["health"], include_in_schema=False)
async def livez() -> dict[str, str]:
    """The process is alive and its event loop answers (dependencies are /api/v1/health's job)."""
    return {"status": "alive"}
