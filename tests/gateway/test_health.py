"""GET /api/v1/health against real PostgreSQL, Kafka and Temporal; 503 when PostgreSQL stops."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from core.settings import Settings
from gateway.app import create_app
from workers.embedded import EmbeddedPostgres, free_port


async def _get(settings: Settings, path: str = "/api/v1/health") -> httpx.Response:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            return await http.get(path)


async def test_health_is_200_with_every_component_when_all_are_up(settings: Settings) -> None:
    response = await _get(settings)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "healthy"
    assert set(body["components"]) == {"database", "kafka", "temporal"}
    for component in body["components"].values():
        assert component["status"] == "healthy"
        assert isinstance(component["latency_ms"], float | int) and component["latency_ms"] >= 0
    assert body["version"]


async def test_health_is_503_when_postgres_is_stopped(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A database of its own, so stopping it does not disturb the session's other tests.
    doomed = EmbeddedPostgres(tmp_path, free_port(), tmp_path / "logs")
    await asyncio.to_thread(doomed.start)  # it runs its own event loop to create the database
    own = settings.model_copy(update={"database_url": SecretStr(doomed.url()), "health_check_timeout_seconds": 2.0})
    assert (await _get(own)).status_code == 200
    await asyncio.to_thread(doomed.stop)
    response = await _get(own)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["components"]["database"]["status"] == "unhealthy"
    assert body["components"]["database"]["error"]
    assert body["components"]["kafka"]["status"] == "healthy"
    assert body["components"]["temporal"]["status"] == "healthy"


async def test_oversized_body_is_413_not_500(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"gateway_max_body_bytes": 1024}))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            response = await http.post("/api/v1/health", content=b"x" * 5000)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


@pytest.mark.parametrize("path", ["/livez", "/metrics"])
async def test_liveness_and_metrics_endpoints(settings: Settings, path: str) -> None:
    response = await _get(settings, path)
    assert response.status_code == 200
