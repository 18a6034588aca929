"""`GET /api/v1/kb/search`: the AI's knowledge-base search for people, behind an agent key.

In-process gateway with its real lifespan on the session's PostgreSQL, over the bundled articles.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from gateway.agents import SCOPE_READ
from gateway.app import create_app
from tests.gateway.test_agents_api import bearer, new_key


@pytest.fixture
async def http(settings: Settings, kb_ingested: None) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


async def test_a_read_key_finds_whole_sections_with_the_link_a_reply_cites(
    http: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, key = await new_key(sessions, scopes=(SCOPE_READ,))
    response = await http.get(
        "/api/v1/kb/search", params={"q": "  reset my password  ", "limit": 2}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == "reset my password" and 1 <= len(body["hits"]) <= 2
    assert len({h["article_id"] for h in body["hits"]}) == len(body["hits"]), "one section per article"
    for hit in body["hits"]:
        assert hit["url"].split("#")[0].endswith(f"/help/{hit['article_id']}") and hit["content"].strip()


async def test_no_key_is_401_and_a_bad_query_is_422_naming_the_field(
    http: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    assert (await http.get("/api/v1/kb/search", params={"q": "password"})).status_code == 401
    _, key = await new_key(sessions, scopes=(SCOPE_READ,))
    for params, field in (({"q": ""}, "q"), ({"q": "   "}, "q"), ({}, "q"), ({"q": "x", "limit": 21}, "limit")):
        response = await http.get("/api/v1/kb/search", params=params, headers=bearer(key))
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"] == "validation_error" and field in response.json()["message"]
