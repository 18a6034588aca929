"""Web-form reply notices and the secure ticket link, end to end.

Gateway (ASGI) → real Kafka → bridge → real Temporal worker → PostgreSQL; the support mailbox is
the Gmail fake (the official client talks to it over HTTP), the model the OpenAI fake.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr, ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.channels.activities import ChannelActivities
from activities.deps import ActivityDeps
from core.kafka import ensure_topics
from core.settings import Settings
from core.ticket_links import TOKEN_HEADER, ticket_token, token_matches
from crm.db import transaction
from crm.repositories import messages
from gateway.app import create_app
from tests.channels.conftest import PUBLIC, scripted_model
from tests.channels.gmail_support import GmailOAuthFake, gmail_settings
from tests.fakes.gmail_fake import GmailMessage
from tests.fakes.openai_fake import OpenAIFake
from tests.workflows.helpers import eventually, make_worker
from workers.bridge import Bridge
from workflows.contracts import SendReplyInput, conversation_workflow_id

SECRET = "test-ticket-link-secret-0123456789abcdef"
LINK = re.compile(r"(https?://\S+/support/ticket/(TKT-\d+)#token=([A-Za-z0-9_-]+))")


@dataclass
class LinkedPipeline:
    settings: Settings
    http: httpx.AsyncClient
    gmail: GmailOAuthFake
    client: Client
    deps: ActivityDeps


@pytest.fixture
async def linked(settings: Settings, client: Client, kb_ingested: None) -> AsyncIterator[LinkedPipeline]:
    suffix = uuid.uuid4().hex[:8]
    with GmailOAuthFake() as gmail, OpenAIFake(responder=scripted_model) as model:
        own = gmail_settings(
            settings,
            gmail,
            kafka_topic_inbound=f"test.links.{suffix}",
            kafka_topic_dead_letter=f"test.links.dlq.{suffix}",
            kafka_consumer_group=f"bridge-links-{suffix}",
            temporal_task_queue=f"links-{suffix}",
            public_base_url=PUBLIC,
            ticket_link_secret=SecretStr(SECRET),
            openai_api_key=SecretStr("sk-test"),
            openai_base_url=model.api_base,
        )
        await ensure_topics(own)
        deps = ActivityDeps.create(own)
        stop = asyncio.Event()
        bridge_task = asyncio.create_task(Bridge(own).run(stop))
        app = create_app(own)
        try:
            async with make_worker(client, own, deps), LifespanManager(app) as manager:
                transport = httpx.ASGITransport(app=manager.app)
                async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as http:
                    yield LinkedPipeline(own, http, gmail, client, deps)
        finally:
            stop.set()
            await asyncio.wait_for(bridge_task, 30)
            await deps.close()


async def file_ticket(
    p: LinkedPipeline, question: str = "How do I get a Slack message when a card moves?"
) -> tuple[str, str]:
    """A web-form submission; returns its ticket number and contact email."""
    email = f"nora.{uuid.uuid4().hex[:8]}@example.com"
    form = {"name": "Nora", "email": email, "subject": "Slack alerts", "category": "how_to", "message": question}
    response = await p.http.post("/api/v1/support/form", json=form)
    assert response.status_code == 201, response.text
    return response.json()["ticket_id"], email


def notices_to(p: LinkedPipeline, email: str) -> list[GmailMessage]:
    return [m for m in p.gmail.messages if m.to == email and "SENT" in m.label_ids]


async def wait_for_notices(p: LinkedPipeline, email: str, n: int) -> list[GmailMessage]:
    async def arrived() -> list[GmailMessage] | None:
        sent = notices_to(p, email)
        return sent if len(sent) >= n else None

    return await eventually(arrived, timeout=60)


def link_of(notice: GmailMessage) -> tuple[str, str, str]:
    found = LINK.search(notice.text or "")
    assert found is not None, notice.text
    return found.group(1), found.group(2), found.group(3)


async def outbound_ids(sessions: async_sessionmaker[AsyncSession], ticket: str) -> list[str]:
    async with sessions() as session:
        rows = await session.scalars(
            text(
                "SELECT m.id::text FROM messages m JOIN tickets t ON t.conversation_id = m.conversation_id "
                "WHERE t.ticket_number = :t AND m.direction = 'outbound' ORDER BY m.seq"
            ),
            {"t": ticket},
        )
        return list(rows.all())


async def test_a_reply_sends_one_notice_whose_link_opens_the_ticket(
    linked: LinkedPipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ticket, email = await file_ticket(linked)
    notice = (await wait_for_notices(linked, email, 1))[0]
    assert ticket in notice.subject and "reply" in notice.subject.lower()
    assert notice.sender == linked.gmail.email_address
    assert notice.in_reply_to is None  # a new message, not a reply in some thread
    link, number, token = link_of(notice)
    assert link.startswith(f"{PUBLIC}/support/ticket/{ticket}#token=") and number == ticket
    assert "Thanks for asking" not in (notice.text or "")  # the reply itself stays on the page
    # The link works: its page, and the API with its token.
    page = await linked.http.get(f"/support/ticket/{ticket}")
    assert page.status_code == 200 and "reply-form" in page.text
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
    opened = await linked.http.get(f"/api/v1/tickets/{ticket}", headers={TOKEN_HEADER: token})
    assert opened.status_code == 200, opened.text
    assert [m["direction"] for m in opened.json()["messages"]] == ["inbound", "outbound"]

    # The send activity again for the same reply (a retried attempt, after the first one finished:
    # Gmail has the notice a moment before the first attempt records it): no second notice.
    (reply_id,) = await outbound_ids(sessions, ticket)

    async def notice_recorded() -> bool | None:
        async with sessions() as session:
            found = await session.scalar(
                text("SELECT attributes->'reply_notice' IS NOT NULL FROM messages WHERE id = :i"), {"i": reply_id}
            )
        return True if found else None

    await eventually(notice_recorded)
    env = ActivityEnvironment()
    result = await env.run(ChannelActivities(linked.deps).send_web_form_reply, SendReplyInput(message_id=reply_id))
    assert result.delivery_status == "delivered"
    await asyncio.sleep(1)
    assert len(notices_to(linked, email)) == 1
    async with sessions() as session:
        recorded = await session.scalar(
            text("SELECT attributes->'reply_notice' FROM messages WHERE id = :i"), {"i": reply_id}
        )
    assert recorded["status"] == "sent" and recorded["gmail_message_id"] == notice.id


async def test_a_retried_attempt_finds_the_unrecorded_notice_instead_of_sending_again(
    linked: LinkedPipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ticket, email = await file_ticket(linked)
    await wait_for_notices(linked, email, 1)
    (reply_id,) = await outbound_ids(sessions, ticket)
    # The first attempt reached Gmail and died before recording it.
    async with transaction(linked.deps.sessions) as session:
        await session.execute(
            text("UPDATE messages SET attributes = attributes - 'reply_notice' WHERE id = :i"), {"i": reply_id}
        )
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2)
    await env.run(ChannelActivities(linked.deps).send_web_form_reply, SendReplyInput(message_id=reply_id))
    assert len(notices_to(linked, email)) == 1
    async with sessions() as session:
        status = await session.scalar(
            text("SELECT attributes->'reply_notice'->>'status' FROM messages WHERE id = :i"), {"i": reply_id}
        )
    assert status == "sent"


async def test_the_customers_answer_through_the_link_continues_the_same_conversation(
    linked: LinkedPipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ticket, email = await file_ticket(linked)
    _, _, token = link_of((await wait_for_notices(linked, email, 1))[0])
    answer = {"message": "Thanks! And how do I mute one board?", "reply_id": uuid.uuid4().hex}
    posted = await linked.http.post(f"/api/v1/tickets/{ticket}/replies", json=answer, headers={TOKEN_HEADER: token})
    assert posted.status_code == 202, posted.text
    assert posted.json()["reply_id"] == answer["reply_id"] and posted.json()["status"] == "received"
    # The page resends after a lost answer: the same reply id, recorded and answered once.
    again = await linked.http.post(f"/api/v1/tickets/{ticket}/replies", json=answer, headers={TOKEN_HEADER: token})
    assert again.status_code == 202

    async def answered() -> dict[str, Any] | None:
        data = (await linked.http.get(f"/api/v1/tickets/{ticket}", headers={TOKEN_HEADER: token})).json()
        outbound = [m for m in data["messages"] if m["direction"] == "outbound" and m["delivery_status"] == "delivered"]
        return data if len(outbound) >= 2 else None

    data = await eventually(answered, timeout=60)
    assert data["workflow_id"] == conversation_workflow_id("web_form", ticket)
    await asyncio.sleep(2)  # a second answer to the resent reply, if any, would arrive now
    data = (await linked.http.get(f"/api/v1/tickets/{ticket}", headers={TOKEN_HEADER: token})).json()
    assert [m["direction"] for m in data["messages"]] == ["inbound", "outbound", "inbound", "outbound"]
    assert data["messages"][2]["content"] == answer["message"] and data["messages"][2]["role"] == "customer"
    async with sessions() as session:
        conversations = await session.scalar(
            text("SELECT count(*) FROM conversations WHERE channel = 'web_form' AND conversation_key = :t"),
            {"t": ticket},
        )
    assert conversations == 1
    # The second reply has its own notice, with the same link.
    second = (await wait_for_notices(linked, email, 2))[1]
    assert link_of(second)[2] == token


async def test_wrong_or_missing_tokens_and_bad_replies_are_refused_with_reasons(
    linked: LinkedPipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ticket, email = await file_ticket(linked)
    _, _, token = link_of((await wait_for_notices(linked, email, 1))[0])
    path = f"/api/v1/tickets/{ticket}"
    wrong = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad in (wrong, "short", "x" * 43):
        refused = await linked.http.get(path, headers={TOKEN_HEADER: bad})
        assert refused.status_code == 403 and refused.json()["detail"]["reason"] == "invalid_token"
    # Another ticket's token opens nothing else; an unknown ticket looks the same as a wrong token.
    other = await linked.http.get("/api/v1/tickets/TKT-99999999", headers={TOKEN_HEADER: token})
    assert other.status_code == 403 and other.json()["detail"]["reason"] == "invalid_token"
    assert (await linked.http.get(path)).status_code == 404  # neither email nor token: the old answer

    reply = {"message": "one more question"}
    missing = await linked.http.post(f"{path}/replies", json=reply)
    assert missing.status_code == 403 and missing.json()["detail"]["reason"] == "missing_token"
    forged = await linked.http.post(f"{path}/replies", json=reply, headers={TOKEN_HEADER: wrong})
    assert forged.status_code == 403 and forged.json()["detail"]["reason"] == "invalid_token"
    auth = {TOKEN_HEADER: token}
    for body in (
        {"message": "   "},
        {"message": "x" * 5001},
        {"message": "bell \x07 character"},
        {"message": "fine", "reply_id": "no spaces allowed"},
        {},
    ):
        invalid = await linked.http.post(f"{path}/replies", json=body, headers=auth)
        assert invalid.status_code == 422, (body, invalid.text)
        assert invalid.json()["error"] == "validation_error"
    assert (await linked.http.post(f"{path}/replies", json={"message": "x" * 5000}, headers=auth)).status_code == 202

    # A ticket whose conversation ended takes no more replies.
    async with transaction(linked.deps.sessions) as session:
        await session.execute(text("UPDATE tickets SET status = 'resolved' WHERE ticket_number = :t"), {"t": ticket})
    closed = await linked.http.post(f"{path}/replies", json=reply, headers=auth)
    assert closed.status_code == 409 and closed.json()["detail"]["reason"] == "ticket_closed"


async def test_links_are_refused_when_no_secret_is_set(linked: LinkedPipeline) -> None:
    ticket, email = await file_ticket(linked)
    _, _, token = link_of((await wait_for_notices(linked, email, 1))[0])
    unset = linked.settings.model_copy(update={"ticket_link_secret": None})
    async with LifespanManager(create_app(unset)) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url=PUBLIC) as http:
            refused = await http.get(f"/api/v1/tickets/{ticket}", headers={TOKEN_HEADER: token})
            posted = await http.post(
                f"/api/v1/tickets/{ticket}/replies", json={"message": "hello"}, headers={TOKEN_HEADER: token}
            )
    assert refused.status_code == 403 and refused.json()["detail"]["reason"] == "links_disabled"
    assert posted.status_code == 403 and posted.json()["detail"]["reason"] == "links_disabled"


@pytest.mark.parametrize(
    ("update", "gmail_status", "expected"),
    [
        ({"gmail_user_email": None}, None, {"status": "not_configured"}),
        ({"ticket_link_secret": None}, None, {"status": "skipped", "reason": "ticket_links_not_configured"}),
        ({}, 400, {"status": "failed"}),
    ],
    ids=["gmail-not-configured", "no-link-secret", "gmail-refuses"],
)
async def test_a_notice_that_cannot_go_never_fails_the_reply(
    linked: LinkedPipeline,
    sessions: async_sessionmaker[AsyncSession],
    update: dict[str, Any],
    gmail_status: int | None,
    expected: dict[str, str],
) -> None:
    ticket, email = await file_ticket(linked)
    await wait_for_notices(linked, email, 1)
    async with sessions() as session:
        conversation_id = await session.scalar(
            text("SELECT conversation_id::text FROM tickets WHERE ticket_number = :t"), {"t": ticket}
        )
    async with transaction(linked.deps.sessions) as session:
        message_id = await messages.record_outbound(
            session,
            conversation_id=conversation_id,
            channel="web_form",
            role="human_agent",
            content="A person's follow-up.",
            idempotency_key=f"test-{uuid.uuid4()}",
            attributes={},
        )
    deps = ActivityDeps.create(linked.settings.model_copy(update=update))
    linked.gmail.send_status = gmail_status
    try:
        result = await ActivityEnvironment().run(
            ChannelActivities(deps).send_web_form_reply, SendReplyInput(message_id=message_id)
        )
    finally:
        linked.gmail.send_status = None
        await deps.close()
    assert result.delivery_status == "delivered"  # the reply is on the page whatever became of the notice
    assert len(notices_to(linked, email)) == 1  # only the first reply's
    async with sessions() as session:
        notice = await session.scalar(
            text("SELECT attributes->'reply_notice' FROM messages WHERE id = :i"), {"i": message_id}
        )
    assert expected.items() <= notice.items()


def test_tokens_are_per_ticket_and_per_secret_and_short_secrets_are_refused() -> None:
    ticket = uuid.uuid4()
    token = ticket_token(SECRET, ticket)
    assert len(token) == 43 and token == ticket_token(SECRET, str(ticket))
    assert token_matches(SECRET, ticket, token)
    assert not token_matches(SECRET, uuid.uuid4(), token)
    assert not token_matches(SECRET + "x", ticket, token)
    assert not token_matches(SECRET, ticket, token + "=")
    with pytest.raises(ValidationError, match="TICKET_LINK_SECRET"):
        Settings(_env_file=None, ticket_link_secret=SecretStr("too-short"))  # type: ignore[call-arg]
    assert Settings(_env_file=None, ticket_link_secret=SecretStr("")).ticket_link_secret is None  # type: ignore[call-arg]
