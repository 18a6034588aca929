"""The ticket page's rating through the real ConversationWorkflow, end to end.

A web-form question the AI answers; a person takes the conversation over and closes it (the
ownership API); the workflow asks for a rating; the customer's low score, sent with the ticket's
secure link to `POST /api/v1/tickets/{id}/rating`, is stored and reopens the conversation to a
person. Gateway (ASGI, real lifespan) → real Temporal worker → PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.settings import Settings
from core.ticket_links import TOKEN_HEADER, ticket_token
from gateway.app import create_app
from tests.gateway.agent_helpers import bearer, new_key
from tests.workflows.helpers import eventually, inbound, messages_of
from workers.bridge import signal_with_start

SECRET = "test-rating-e2e-secret-0123456789abcdef"


@pytest.fixture
async def linked_http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    own = settings.model_copy(update={"ticket_link_secret": SecretStr(SECRET)})
    async with LifespanManager(create_app(own)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield http


async def test_a_low_rating_on_the_ticket_page_reopens_the_real_conversation(
    linked_http: httpx.AsyncClient,
    worker: Any,
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    http = linked_http
    message = inbound("web_form", "How do I export a project to CSV?")
    workflow_id = await signal_with_start(client, settings, message)

    async def answered() -> bool:
        rows = await messages_of(sessions, workflow_id)
        return any(r["direction"] == "outbound" and r["delivery_status"] == "delivered" for r in rows)

    await eventually(answered, timeout=60)
    async with sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT t.ticket_number, t.id, c.id AS conversation_id FROM tickets t "
                    "JOIN conversations c ON c.id = t.conversation_id WHERE c.workflow_id = :w"
                ),
                {"w": workflow_id},
            )
        ).one()
    ticket, conversation = row.ticket_number, str(row.conversation_id)
    auth = {TOKEN_HEADER: ticket_token(SECRET, row.id)}
    path = f"/api/v1/tickets/{ticket}/rating"

    # Still open: the workflow refuses, and the page gets a reason.
    early = await http.post(path, json={"score": 5}, headers=auth)
    assert early.status_code == 409 and early.json()["detail"]["reason"] == "not_closed", early.text

    # A person takes it over and closes it: resolved by a person, so the customer is asked.
    _, key = await new_key(sessions)
    base = f"/api/v1/conversations/{conversation}"
    assert (await http.post(f"{base}/take-over", headers=bearer(key))).status_code == 200
    closed = await http.post(f"{base}/close", headers=bearer(key))
    assert closed.status_code == 200 and closed.json()["status"] == "closed", closed.text

    async def asked() -> bool:
        rows = await messages_of(sessions, workflow_id)
        return any("How did we do?" in str(r["content"]) for r in rows if r["direction"] == "outbound")

    await eventually(asked, timeout=60)
    page = (await http.get(f"/api/v1/tickets/{ticket}", headers=auth)).json()
    assert page["conversation_status"] == "closed"  # what makes the page show "How did we do?"
    assert page["rated"] is False

    # The question is recorded a moment before the workflow starts waiting: the page's customer is
    # slower than this loop, which retries only that gap's "not waiting".
    body = {"score": 2, "comment": "The Slack steps did not match my screen."}

    async def rated() -> httpx.Response | None:
        response = await http.post(path, json=body, headers=auth)
        waiting = response.status_code == 409 and response.json()["detail"]["reason"] == "not_waiting"
        return None if waiting else response

    response = await eventually(rated, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "ticket_id": ticket,
        "score": 2,
        "reopened": True,
        "message": "Sorry to hear that — a person from our team will follow up.",
    }
    async with sessions() as session:
        stored = (
            await session.execute(
                text("SELECT score, comment, via, channel FROM csat_ratings WHERE conversation_id = :c"),
                {"c": conversation},
            )
        ).all()
        status = await session.scalar(text("SELECT status FROM conversations WHERE id = :c"), {"c": conversation})
    assert [tuple(r) for r in stored] == [(2, body["comment"], "ticket_page", "web_form")]
    assert status == "escalated"  # back in the people's queue, with the comment attached

    again = await http.post(path, json={"score": 5}, headers=auth)
    assert again.status_code == 409 and again.json()["detail"]["reason"] == "already_rated", again.text
    # Reloaded, the page no longer offers the rating: it was given.
    assert (await http.get(f"/api/v1/tickets/{ticket}", headers=auth)).json()["rated"] is True
