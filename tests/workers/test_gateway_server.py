"""`crm-fte gateway`'s uvicorn options over real HTTP: whose X-Forwarded-For/-Proto are believed.

The server is uvicorn with exactly the options the command uses (`gateway_server_config`), serving
a small ASGI app that echoes the client address and scheme it was given, so the test sees what the
gateway's routes would see. Linux routes all of 127.0.0.0/8 to loopback: a client bound to
127.0.0.2 is a peer that is not in the default allow-list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from core.settings import Settings
from workers.cli import gateway_server_config
from workers.embedded import free_port

FORGED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


async def echo_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """The client address and scheme as the application sees them, after uvicorn's proxy handling."""
    if scope["type"] != "http":
        return
    body = json.dumps({"client": scope["client"][0] if scope.get("client") else None, "scheme": scope["scheme"]})
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body.encode()})


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test process owns its signals


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[int]:
    port = free_port()
    server = _Server(gateway_server_config(echo_app, settings, host="127.0.0.1", port=port))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def seen_by_app(port: int, *, source: str) -> dict[str, Any]:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(transport=transport, timeout=10) as http:
        response = await http.get(f"http://127.0.0.1:{port}/api/v1/health", headers=FORGED)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def test_the_default_trusts_only_loopback() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert gateway_server_config(echo_app, settings).forwarded_allow_ips == "127.0.0.1,::1"


async def test_forged_forwarded_headers_from_an_unlisted_client_are_ignored_by_default() -> None:
    async with serving(Settings(_env_file=None)) as port:  # type: ignore[call-arg]
        assert await seen_by_app(port, source="127.0.0.2") == {"client": "127.0.0.2", "scheme": "http"}
        # The listed proxy (loopback) is still believed: the headers do reach uvicorn's proxy handling.
        assert await seen_by_app(port, source="127.0.0.1") == {"client": "203.0.113.7", "scheme": "https"}


@pytest.mark.parametrize("allowed", ["127.0.0.2", "127.0.0.0/30"])
async def test_forwarded_allow_ips_lists_the_proxies_to_believe(allowed: str) -> None:
    settings = Settings(_env_file=None, forwarded_allow_ips=allowed)  # type: ignore[call-arg]
    async with serving(settings) as port:
        assert await seen_by_app(port, source="127.0.0.2") == {"client": "203.0.113.7", "scheme": "https"}
