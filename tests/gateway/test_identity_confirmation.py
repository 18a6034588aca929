"""Confirming a typed email or phone through a link, over real HTTP, Temporal and PostgreSQL.

The gateway runs in-process with its lifespan; IdentityConfirmationWorkflow runs on a real worker
and sends through the Gmail and Twilio fakes (the official clients talk to them over HTTP). The
customers behind the other channels are created by the CRM activities exactly as the conversation
workflow creates them.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from activities.deps import ActivityDeps
from core.settings import Settings
from crm.db import transaction
from gateway.agents import SCOPE_READ, create_api_key
from gateway.app import create_app
from tests.channels.gmail_support import GmailOAuthFake, gmail_settings
from tests.crm.test_verified_identity import SECRET, arrive
from tests.fakes.twilio_fake import TwilioFake
from tests.workflows.helpers import eventually, make_worker

PUBLIC = "http://support.test"
LINK = re.compile(r"http://support\.test/verify/([A-Za-z0-9_-]+)")


@dataclass
class Stack:
    settings: Settings
    deps: ActivityDeps
    http: httpx.AsyncClient
    gmail: GmailOAuthFake
    twilio: TwilioFake


@pytest.fixture
def fakes() -> Iterator[tuple[GmailOAuthFake, TwilioFake]]:
    with GmailOAuthFake() as gmail, TwilioFake() as twilio:
        yield gmail, twilio


@pytest.fixture
async def stack(settings: Settings, client: Client, fakes: tuple[GmailOAuthFake, TwilioFake]) -> AsyncIterator[Stack]:
    gmail, twilio = fakes
    own = gmail_settings(
        settings,
        gmail,
        temporal_task_queue=f"identity-{uuid.uuid4().hex[:8]}",
        twilio_account_sid=twilio.account_sid,
        twilio_auth_token=SecretStr(twilio.auth_token),
        twilio_whatsapp_from="+14155550000",
        twilio_api_base_url=twilio.base_url,
        public_base_url=PUBLIC,
        rate_limit_identity_confirmation="3/minute",
    )
    deps = ActivityDeps.create(own)
    app = create_app(own)
    try:
        async with make_worker(client, own, deps), LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as http:
                yield Stack(own, deps, http, gmail, twilio)
    finally:
        await deps.close()


def _phone() -> str:
    return f"+1415{uuid.uuid4().int % 10**7:07d}"


def _email(name: str) -> str:
    return f"{name}.{uuid.uuid4().hex[:8]}@example.com"


async def submit_form(http: httpx.AsyncClient, *, email: str, phone: str | None = None) -> str:
    form: dict[str, Any] = {
        "name": "Sam",
        "email": email,
        "subject": "Account question",
        "category": "account",
        "message": "Please help me with my account settings.",
    }
    if phone is not None:
        form["phone"] = phone
    response = await http.post("/api/v1/support/form", json=form)
    assert response.status_code == 201, response.text
    return str(response.json()["ticket_id"])


async def ticket_customer(sessions: async_sessionmaker[AsyncSession], ticket: str) -> str:
    async with sessions() as session:
        return str(
            await session.scalar(text("SELECT customer_id FROM tickets WHERE ticket_number = :t"), {"t": ticket})
        )


async def ticket_conversation(sessions: async_sessionmaker[AsyncSession], ticket: str) -> str:
    async with sessions() as session:
        found = await session.scalar(
            text("SELECT conversation_id FROM tickets WHERE ticket_number = :t"), {"t": ticket}
        )
        return str(found)


async def whatsapp_link(twilio: TwilioFake, phone: str) -> str:
    async def sent() -> str | None:
        for message in twilio.messages:
            match = LINK.search(message.body)
            if message.to == f"whatsapp:{phone}" and match:
                return match.group(1)
        return None

    return await eventually(sent)


async def email_link(gmail: GmailOAuthFake, address: str) -> str:
    async def sent() -> str | None:
        for message in gmail.sent:
            match = LINK.search(message.text or "")
            if message.to == address and match:
                return match.group(1)
        return None

    return await eventually(sent)


# ----------------------------------------------------------------------------- the attack routes


async def test_a_victims_phone_typed_on_the_form_opens_nothing_on_the_ticket_page_or_console(
    stack: Stack, sessions: async_sessionmaker[AsyncSession]
) -> None:
    victim_phone, attacker = _phone(), _email("mallory")
    victim = await arrive(stack.deps, "whatsapp", f"Hello, {SECRET}", phone=victim_phone)
    national = f"+1 ({victim_phone[2:5]}) {victim_phone[5:8]}-{victim_phone[8:]}"
    ticket = await submit_form(stack.http, email=attacker, phone=national)
    assert await ticket_customer(sessions, ticket) != victim.customer_id
    mail = await arrive(stack.deps, "email", "what did I write last week?", email=attacker.upper())
    assert mail.customer_id != victim.customer_id

    page = await stack.http.get(f"/api/v1/tickets/{ticket}", params={"email": attacker.upper()})
    assert page.status_code == 200 and SECRET not in page.text
    async with transaction(sessions) as session:
        _, key = await create_api_key(session, name=f"Agent {uuid.uuid4().hex[:6]}", scopes=(SCOPE_READ,))
    headers = {"Authorization": f"Bearer {key}"}
    for conversation in (mail.conversation_id, await ticket_conversation(sessions, ticket)):
        console = await stack.http.get(f"/api/v1/conversations/{conversation}", headers=headers)
        assert console.status_code == 200, console.text
        assert SECRET not in console.text
        assert victim.conversation_id not in console.text


# ----------------------------------------------------------------------------- confirmation links


async def test_the_real_owner_confirms_the_typed_number_and_the_records_join(
    stack: Stack, sessions: async_sessionmaker[AsyncSession]
) -> None:
    phone, email = _phone(), _email("owner")
    owner = await arrive(stack.deps, "whatsapp", SECRET, phone=phone)
    ticket = await submit_form(stack.http, email=email, phone=phone)
    form_customer = await ticket_customer(sessions, ticket)
    assert form_customer != owner.customer_id

    asked = await stack.http.post(
        f"/api/v1/tickets/{ticket}/confirm-identity", params={"email": email}, json={"identifier": "phone"}
    )
    assert asked.status_code == 202, asked.text
    assert asked.json()["status"] == "sending" and asked.json()["sent_to"].endswith(phone[-4:])
    assert phone not in asked.text
    token = await whatsapp_link(stack.twilio, phone)
    async with sessions() as session:  # only the token's hash is stored
        stored = await session.scalar(
            text("SELECT count(*) FROM identity_confirmations WHERE token_hash = :h"),
            {"h": hashlib.sha256(token.encode()).hexdigest()},
        )
        leaked = await session.scalar(
            text("SELECT count(*) FROM identity_confirmations WHERE token_hash = :t"), {"t": token}
        )
    assert (stored, leaked) == (1, 0)

    # Opening the link (a link scanner, a preview) confirms nothing.
    page = await stack.http.get(f"/verify/{token}")
    assert page.status_code == 200 and 'method="post"' in page.text and phone not in page.text
    assert await ticket_customer(sessions, ticket) == form_customer

    confirmed = await stack.http.post(f"/verify/{token}")
    assert confirmed.status_code == 200 and "confirmed" in confirmed.text
    assert await ticket_customer(sessions, ticket) == owner.customer_id
    again = await stack.http.post(f"/verify/{token}")
    assert again.status_code == 410 and "already used" in again.text
    # The owner's history now includes the form's conversation; nothing is left to confirm by phone.
    nothing = await stack.http.post(
        f"/api/v1/tickets/{ticket}/confirm-identity", params={"email": email}, json={"identifier": "phone"}
    )
    assert nothing.status_code == 409 and nothing.json()["detail"]["reason"] == "nothing_to_confirm"


async def test_a_confirmed_email_is_verified_and_the_mailbox_then_finds_that_customer(
    stack: Stack, sessions: async_sessionmaker[AsyncSession]
) -> None:
    email = _email("newbie")
    ticket = await submit_form(stack.http, email=email)
    first = await stack.http.post(
        f"/api/v1/tickets/{ticket}/confirm-identity", params={"email": email}, json={"identifier": "email"}
    )
    # A double click: the same request, one message.
    second = await stack.http.post(
        f"/api/v1/tickets/{ticket}/confirm-identity", params={"email": email.upper()}, json={"identifier": "email"}
    )
    assert (first.status_code, second.status_code) == (202, 202)
    assert second.json()["status"] == "already_sent"
    token = await email_link(stack.gmail, email)
    assert len([m for m in stack.gmail.sent if m.to == email]) == 1
    assert (await stack.http.post(f"/verify/{token}")).status_code == 200
    mail = await arrive(stack.deps, "email", "following up on my ticket", email=email)
    assert mail.customer_id == await ticket_customer(sessions, ticket)


async def test_without_the_token_nobody_confirms_anything(
    stack: Stack, sessions: async_sessionmaker[AsyncSession]
) -> None:
    phone, email = _phone(), _email("x")
    await arrive(stack.deps, "whatsapp", SECRET, phone=phone)
    ticket = await submit_form(stack.http, email=email, phone=phone)
    customer = await ticket_customer(sessions, ticket)
    for guess in ("A" * 43, uuid.uuid4().hex, "short", "bad token!"):
        for method in ("GET", "POST"):
            response = await stack.http.request(method, f"/verify/{guess}")
            assert response.status_code == 404 and "not valid" in response.text
    # An expired link.
    token = "expired" + uuid.uuid4().hex
    async with transaction(sessions) as session:
        await session.execute(
            text(
                "INSERT INTO identity_confirmations (customer_id, identifier_type, identifier_value, token_hash, "
                "request_key, created_at, expires_at) VALUES (:c, 'phone', :v, :h, :r, :made, :until)"
            ),
            {
                "c": customer,
                "v": phone,
                "h": hashlib.sha256(token.encode()).hexdigest(),
                "r": f"test-{uuid.uuid4().hex}",
                "made": datetime.now(UTC) - timedelta(days=2),
                "until": datetime.now(UTC) - timedelta(days=1),
            },
        )
    for method in ("GET", "POST"):
        response = await stack.http.request(method, f"/verify/{token}")
        assert response.status_code == 410 and "expired" in response.text
    assert await ticket_customer(sessions, ticket) == customer


async def test_confirm_identity_refuses_strangers_and_what_cannot_be_sent(
    stack: Stack, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    email = _email("solo")
    ticket = await submit_form(stack.http, email=email)
    path = f"/api/v1/tickets/{ticket}/confirm-identity"
    unknown = await stack.http.post(
        "/api/v1/tickets/TKT-99999999/confirm-identity", params={"email": email}, json={"identifier": "email"}
    )
    assert unknown.status_code == 404
    stranger = await stack.http.post(path, params={"email": _email("other")}, json={"identifier": "email"})
    assert stranger.status_code == 404
    anonymous = await stack.http.post(path, json={"identifier": "email"})
    assert anonymous.status_code == 404
    no_phone = await stack.http.post(path, params={"email": email}, json={"identifier": "phone"})
    assert no_phone.status_code == 409 and no_phone.json()["detail"]["reason"] == "nothing_to_confirm"
    fax = await stack.http.post(path, params={"email": email}, json={"identifier": "fax"})
    assert fax.status_code == 422
    async with LifespanManager(create_app(settings)) as manager:  # neither Gmail nor Twilio configured
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url=PUBLIC) as bare:
            refused = await bare.post(path, params={"email": email}, json={"identifier": "email"})
    assert refused.status_code == 409 and refused.json()["detail"]["reason"] == "channel_not_configured"
    # Three link requests a minute per ticket (RATE_LIMIT_IDENTITY_CONFIRMATION here), then 429.
    codes = [
        (await stack.http.post(path, params={"email": email}, json={"identifier": "email"})).status_code
        for _ in range(4)
    ]
    assert codes == [202, 202, 202, 429]
