"""POST /api/v1/webhooks/gmail on real PostgreSQL and a real Kafka broker.

Only Google is faked: the Gmail API (+ its OAuth token endpoint) and the certificate endpoint
that signs Pub/Sub's OIDC tokens, both driven by the official client libraries.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.kafka import client_kwargs, ensure_topics
from core.mail import strip_quoted_reply
from core.settings import Settings
from crm import identity
from crm.db import transaction
from crm.repositories import conversations, tickets
from gateway import gmail as gmail_gateway
from gateway.app import create_app
from gateway.gmail import advance_cursor, html_to_text
from gateway.gmail import oidc as gmail_oidc
from gateway.gmail import push as gmail_push
from gateway.gmail.mime import sender_authenticated
from tests.channels.gmail_support import AUDIENCE, PUSH_SERVICE_ACCOUNT, GmailOAuthFake, gmail_settings
from tests.fakes.google_certs_fake import GoogleCertsFake, SigningKey, pubsub_push_envelope, pubsub_push_headers
from workers.embedded import free_port
from workflows.contracts import InboundMessage

PATH = "/api/v1/webhooks/gmail"

# "-- " (with its trailing space) is the RFC 3676 signature delimiter.
CUSTOMER_TEXT = """Hi TechCorp,

Since this morning the CSV export of my board fails with "Error 500".
Could you take a look?

Thanks,
Ana
--\x20
Ana Souza | Product Lead, Acme
+1 555 0100

On Mon, Jan 6, 2025 at 10:02 AM TechCorp Support <support@example.com> wrote:
> Hello Ana, how can we help?
>
> Best, TechCorp
"""
CUSTOMER_STRIPPED = (
    'Hi TechCorp,\n\nSince this morning the CSV export of my board fails with "Error 500".\n'
    "Could you take a look?\n\nThanks,\nAna"
)


# ----------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="session")
def certs() -> Iterator[GoogleCertsFake]:
    with GoogleCertsFake() as fake:
        yield fake


@pytest.fixture(scope="session")
async def topics(settings: Settings) -> None:
    await ensure_topics(settings)


@pytest.fixture
def gmail() -> Iterator[GmailOAuthFake]:
    with GmailOAuthFake() as fake:
        yield fake


@pytest.fixture
def configured(settings: Settings, gmail: GmailOAuthFake, certs: GoogleCertsFake, topics: None) -> Settings:
    return gmail_settings(settings, gmail, certs)


@asynccontextmanager
async def gateway(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The production app (its resources, error handler, body limit) with the Gmail router added."""
    app = create_app(settings)
    if not any(getattr(route, "path", None) == PATH for route in app.routes):
        app.include_router(gmail_gateway.router)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield http


def signed_headers(certs: GoogleCertsFake, **claims: Any) -> dict[str, str]:
    claims.setdefault("audience", AUDIENCE)
    claims.setdefault("email", PUSH_SERVICE_ACCOUNT)
    return pubsub_push_headers(certs.sign_pubsub_jwt(**claims))


async def push(
    http: httpx.AsyncClient, certs: GoogleCertsFake, mailbox: str, history_id: int, **claims: Any
) -> httpx.Response:
    return await http.post(
        PATH, json=pubsub_push_envelope(mailbox, history_id), headers=signed_headers(certs, **claims)
    )


async def cursor_of(sessions: async_sessionmaker[AsyncSession], mailbox: str) -> int | None:
    async with sessions() as session:
        value = await session.scalar(
            text("SELECT history_id FROM gmail_sync_state WHERE mailbox = :m"), {"m": mailbox.lower()}
        )
    return int(value) if value is not None else None


async def published(settings: Settings, gmail_ids: set[str]) -> list[InboundMessage]:
    """Every record on the inbound topic for these Gmail message ids (other tests share the topic)."""
    topic = settings.kafka_topic_inbound
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert partitions, f"topic {topic} has no partitions"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        found = []
        async with asyncio.timeout(20):
            while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
                batches = await consumer.getmany(*partitions, timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        message = InboundMessage.model_validate_json(record.value)
                        if message.channel == "email" and message.external_message_id in gmail_ids:
                            assert record.key == f"email:{message.conversation_key}".encode()
                            found.append(message)
        return found
    finally:
        await consumer.stop()


def history_calls(gmail: GmailOAuthFake) -> int:
    return len(gmail.requests_to("/gmail/v1/users/me/history"))


# ----------------------------------------------------------------------------- the happy path


async def test_new_email_is_published_once_with_stripped_text_and_redelivery_adds_nothing(
    configured: Settings, gmail: GmailOAuthFake, certs: GoogleCertsFake, sessions: async_sessionmaker[AsyncSession]
) -> None:
    mailbox = gmail.email_address
    suffix = uuid.uuid4().hex[:8]
    async with gateway(configured) as http:
        # First push for this mailbox: its historyId becomes the baseline; nothing before it is fetched.
        baseline = gmail.history_id
        response = await push(http, certs, mailbox, baseline)
        assert response.status_code == 204, response.text
        assert await cursor_of(sessions, mailbox) == baseline
        assert history_calls(gmail) == 0

        inbound = gmail.inject_email(
            from_=f"Ana Souza <Ana.Souza.{suffix}@Example.ORG>",
            subject="CSV export fails",
            text=CUSTOMER_TEXT,
            attachments=[("error.png", "image/png", b"\x89PNG" + b"0" * 96)],
        )
        own = gmail.inject_email(from_=mailbox, to=f"ana.souza.{suffix}@example.org", subject="Re: x", text="ours")
        response = await push(http, certs, mailbox, gmail.history_id)
        assert response.status_code == 204, response.text
        assert await cursor_of(sessions, mailbox) == gmail.history_id

        (message,) = await published(configured, {inbound.id, own.id})
        assert message.external_message_id == inbound.id
        assert message.channel == "email"
        assert message.conversation_key == inbound.thread_id
        assert message.text == CUSTOMER_STRIPPED
        assert message.sender.email == f"ana.souza.{suffix}@example.org"
        assert message.sender.name == "Ana Souza"
        assert message.subject == "CSV export fails"
        assert abs(message.received_at.timestamp() * 1000 - inbound.internal_date_ms) < 1000
        assert [(a.filename, a.content_type, a.size_bytes) for a in message.attachments] == [
            ("error.png", "image/png", 100)
        ]
        assert message.metadata["thread_id"] == inbound.thread_id
        assert message.metadata["rfc_message_id"] == inbound.message_id
        assert "ana.souza" in message.metadata["from"].lower()

        # Pub/Sub redelivers the same push: the cursor has moved past it, Gmail is not even asked.
        calls = history_calls(gmail)
        response = await push(http, certs, mailbox, gmail.history_id)
        assert response.status_code == 204
        assert history_calls(gmail) == calls
        assert len(await published(configured, {inbound.id})) == 1


async def test_a_new_email_with_its_ticket_number_joins_the_ticket_only_from_its_verified_owner(
    configured: Settings, gmail: GmailOAuthFake, certs: GoogleCertsFake, sessions: async_sessionmaker[AsyncSession]
) -> None:
    owner = f"ana.{uuid.uuid4().hex[:8]}@example.com"
    thread = f"thread-{uuid.uuid4().hex[:12]}"
    async with transaction(sessions) as session:
        customer = await identity.resolve_customer(session, channel="email", email=owner, phone=None, name="Ana")
        conversation_id = await conversations.create_conversation(
            session,
            customer_id=customer.customer_id,
            channel="email",
            conversation_key=thread,
            workflow_id=f"conversation-email-{thread}",
        )
        ticket = await tickets.create_ticket(
            session,
            conversation_id=conversation_id,
            customer_id=customer.customer_id,
            channel="email",
            subject="Export",
        )
    subject = f"Still stuck [{ticket.ticket_number}]"
    mailbox = gmail.email_address
    await advance_cursor(sessions, mailbox, gmail.history_id)
    # The owner writes a new email (not a reply) with the ticket number in the subject; a stranger and
    # a forged From try the same subject.
    mine = gmail.inject_email(from_=f"Ana <{owner.upper()}>", subject=subject, text="Any news on my export?")
    stranger = gmail.inject_email(from_="eve@example.org", subject=subject, text="what did Ana ask you?")
    forged = gmail.inject_email(from_=owner, subject=subject, text="send me her files", authenticated=False)
    async with gateway(configured) as http:
        response = await push(http, certs, mailbox, gmail.history_id)
    assert response.status_code == 204, response.text
    by_id = {m.external_message_id: m for m in await published(configured, {mine.id, stranger.id, forged.id})}
    assert by_id[mine.id].conversation_key == thread
    assert by_id[stranger.id].conversation_key == stranger.thread_id != thread
    assert by_id[forged.id].conversation_key == forged.thread_id != thread


async def test_html_only_reply_keeps_the_thread_and_drops_the_quote(
    configured: Settings, gmail: GmailOAuthFake, certs: GoogleCertsFake, sessions: async_sessionmaker[AsyncSession]
) -> None:
    mailbox = gmail.email_address
    await advance_cursor(sessions, mailbox, gmail.history_id)
    first = gmail.inject_email(from_="bo@example.net", subject="Slack integration", text="How do I connect Slack?")
    reply = gmail.inject_email(
        from_="Bo <bo@example.net>",
        subject="Re: Slack integration",
        text=None,
        html=(
            '<div dir="ltr">Thanks, that&nbsp;worked!<br>One more: can I pick the <b>channel</b>?</div>'
            '<div class="gmail_quote"><div>On Tue, Jan 7, 2025 at 9:00 AM Support wrote:</div>'
            "<blockquote>Open Settings &gt; Integrations.</blockquote></div>"
        ),
        in_reply_to=first.message_id,
        references=first.message_id,
    )
    assert reply.thread_id == first.thread_id
    # An HTML-only message: GmailFake renders it as multipart with an empty text/plain part.
    async with gateway(configured) as http:
        response = await push(http, certs, mailbox, gmail.history_id)
    assert response.status_code == 204, response.text
    by_id = {m.external_message_id: m for m in await published(configured, {first.id, reply.id})}
    assert set(by_id) == {first.id, reply.id}
    assert by_id[first.id].conversation_key == by_id[reply.id].conversation_key == first.thread_id
    assert by_id[reply.id].text == "Thanks, that worked!\nOne more: can I pick the channel?"
    assert by_id[reply.id].metadata["in_reply_to"] == first.message_id
    assert by_id[reply.id].metadata["references"] == first.message_id


async def test_the_agents_own_mail_drafts_and_auto_replies_are_not_published(
    configured: Settings, gmail: GmailOAuthFake, certs: GoogleCertsFake, sessions: async_sessionmaker[AsyncSession]
) -> None:
    mailbox = gmail.email_address
    await advance_cursor(sessions, mailbox, gmail.history_id)
    ignored = [
        gmail.inject_email(from_=mailbox, to="cy@example.com", subject="Re: Hello", text="Our reply", labels=["SENT"]),
        gmail.inject_email(from_=mailbox.upper(), subject="Note to self", text="in the inbox"),
        gmail.inject_email(from_=mailbox, to="cy@example.com", subject="Draft", text="wip", labels=["DRAFT"]),
        gmail.inject_email(
            from_="cy@example.com",
            subject="Out of office",
            text="I am away until Monday.",
            headers={"Auto-Submitted": "auto-replied"},
        ),
        gmail.inject_email(from_="MAILER-DAEMON@example.com", subject="Undeliverable", text="bounce"),
    ]
    wanted = gmail.inject_email(from_="cy@example.com", subject="Hello", text="A real question.")
    async with gateway(configured) as http:
        response = await push(http, certs, mailbox, gmail.history_id)
    assert response.status_code == 204, response.text
    found = await published(configured, {m.id for m in [*ignored, wanted]})
    assert [m.external_message_id for m in found] == [wanted.id]
    assert await cursor_of(sessions, mailbox) == gmail.history_id
    # SENT and DRAFT are recognised from the history record alone: their bodies are never fetched.
    fetched = {r.path.rsplit("/", 1)[1] for r in gmail.requests_to("/gmail/v1/users/me/messages/")}
    assert ignored[0].id not in fetched and ignored[2].id not in fetched


async def test_a_push_for_another_mailbox_is_acknowledged_and_ignored(
    configured: Settings, gmail: GmailOAuthFake, certs: GoogleCertsFake, sessions: async_sessionmaker[AsyncSession]
) -> None:
    other = f"someone-{uuid.uuid4().hex[:8]}@example.com"
    async with gateway(configured) as http:
        response = await push(http, certs, other, 99)
    assert response.status_code == 204
    assert await cursor_of(sessions, other) is None
    assert gmail.requests == []


# ----------------------------------------------------------------------------- authentication


@pytest.mark.parametrize(
    "case",
    [
        "wrong_audience",
        "wrong_service_account",
        "expired",
        "unverified_email",
        "wrong_issuer",
        "unpublished_key",
        "no_token",
        "garbage_token",
        "basic_auth",
    ],
)
async def test_pushes_without_a_valid_oidc_token_are_403(
    case: str,
    configured: Settings,
    gmail: GmailOAuthFake,
    certs: GoogleCertsFake,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    mailbox = gmail.email_address
    await advance_cursor(sessions, mailbox, gmail.history_id)
    before = gmail.history_id
    gmail.inject_email(from_="eve@example.com", subject="Hi", text="hello")
    headers = {
        "wrong_audience": lambda: signed_headers(certs, audience="https://elsewhere.example.com/push"),
        "wrong_service_account": lambda: signed_headers(certs, email="attacker@evil.iam.gserviceaccount.com"),
        "expired": lambda: signed_headers(certs, issued_at=time.time() - 7200, expires_in=3600),
        "unverified_email": lambda: signed_headers(certs, email_verified=False),
        "wrong_issuer": lambda: signed_headers(certs, issuer="https://evil.example.com"),
        "unpublished_key": lambda: signed_headers(certs, key=SigningKey.generate(), kid=certs.key.kid),
        "no_token": lambda: {"Content-Type": "application/json"},
        "garbage_token": lambda: pubsub_push_headers("not.a.jwt"),
        "basic_auth": lambda: {"Authorization": "Basic dXNlcjpwYXNz"},
    }[case]()
    async with gateway(configured) as http:
        response = await http.post(PATH, json=pubsub_push_envelope(mailbox, gmail.history_id), headers=headers)
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "forbidden"
    assert await cursor_of(sessions, mailbox) == before
    assert gmail.requests == []


async def test_google_certs_are_cached_between_pushes(
    configured: Settings, gmail: GmailOAuthFake, certs: GoogleCertsFake
) -> None:
    async with gateway(configured) as http:
        assert (await push(http, certs, gmail.email_address, gmail.history_id)).status_code == 204
        fetched = len(certs.requests_to("/oauth2/v1/certs"))
        for _ in range(3):
            assert (await push(http, certs, gmail.email_address, gmail.history_id)).status_code == 204
    assert len(certs.requests_to("/oauth2/v1/certs")) == fetched


async def test_an_unwrapped_push_payload_is_accepted(
    configured: Settings, gmail: GmailOAuthFake, certs: GoogleCertsFake, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Push subscriptions with payload unwrapping POST the notification itself, without the envelope.
    body = {"emailAddress": gmail.email_address, "historyId": gmail.history_id}
    async with gateway(configured) as http:
        response = await http.post(PATH, json=body, headers=signed_headers(certs))
    assert response.status_code == 204, response.text
    assert await cursor_of(sessions, gmail.email_address) == gmail.history_id


async def test_a_rotated_signing_key_is_picked_up(
    configured: Settings,
    gmail: GmailOAuthFake,
    certs: GoogleCertsFake,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gmail_oidc, "CERTS_REFETCH_FLOOR_SECONDS", 0.0)
    async with gateway(configured) as http:
        assert (await push(http, certs, gmail.email_address, gmail.history_id)).status_code == 204  # certs cached
        new_key = certs.rotate_key()
        try:
            response = await push(http, certs, gmail.email_address, gmail.history_id + 1, kid=new_key.kid)
        finally:
            certs.retire_key(new_key.kid)
    assert response.status_code == 204, response.text


async def test_gmail_not_configured_refuses_every_push_with_a_reason(
    settings: Settings, certs: GoogleCertsFake
) -> None:
    unconfigured = settings.model_copy(
        update={
            "gmail_pubsub_audience": AUDIENCE,
            "gmail_pubsub_service_account": PUSH_SERVICE_ACCOUNT,
            "gmail_pubsub_certs_url": certs.certs_url,
        }
    )
    async with gateway(unconfigured) as http:
        response = await push(http, certs, "support@example.com", 5)
    assert response.status_code == 403
    assert "not configured" in response.json()["message"] and "GMAIL_USER_EMAIL" in response.json()["message"]


async def test_push_authentication_not_configured_refuses_every_push(
    settings: Settings, gmail: GmailOAuthFake, certs: GoogleCertsFake
) -> None:
    no_auth = gmail_settings(settings, gmail)  # Gmail credentials, but neither OIDC nor a static token
    async with gateway(no_auth) as http:
        response = await push(http, certs, gmail.email_address, 5)
    assert response.status_code == 403
    assert "GMAIL_PUBSUB_AUDIENCE" in response.json()["message"]
    assert gmail.requests == []


async def test_a_static_token_is_accepted_only_when_configured(
    settings: Settings, gmail: GmailOAuthFake, certs: GoogleCertsFake, sessions: async_sessionmaker[AsyncSession]
) -> None:
    token = f"static-{uuid.uuid4().hex}"
    body = pubsub_push_envelope(gmail.email_address, gmail.history_id)
    opted_in = gmail_settings(settings, gmail, gmail_pubsub_static_token=SecretStr(token))
    async with gateway(opted_in) as http:
        assert (await http.post(PATH, json=body, headers=pubsub_push_headers(token))).status_code == 204
        assert (await http.post(f"{PATH}?token={token}", json=body)).status_code == 204
        assert (await http.post(PATH, json=body, headers=pubsub_push_headers(token + "x"))).status_code == 403
        assert (await http.post(PATH, json=body)).status_code == 403
        # An OIDC token is no substitute when only the static token is configured.
        assert (await http.post(PATH, json=body, headers=signed_headers(certs))).status_code == 403
    assert await cursor_of(sessions, gmail.email_address) == gmail.history_id
    # Without the opt-in the same bearer token is just an invalid OIDC token.
    oidc_only = gmail_settings(settings, gmail, certs)
    async with gateway(oidc_only) as http:
        assert (await http.post(PATH, json=body, headers=pubsub_push_headers(token))).status_code == 403


# ----------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"message": {}}',
        b'{"message": {"data": "%%% not base64 %%%"}}',
        b'{"message": {"data": "bm90IGpzb24="}}',  # base64("not json")
        b'{"message": {"data": "eyJlbWFpbEFkZHJlc3MiOiAieEB5LnoifQ=="}}',  # no historyId
        b'{"message": {"data": "eyJlbWFpbEFkZHJlc3MiOiAieEB5LnoiLCAiaGlzdG9yeUlkIjogLTF9"}}',  # historyId -1
    ],
)
async def test_a_malformed_envelope_is_400_not_500(
    body: bytes, configured: Settings, gmail: GmailOAuthFake, certs: GoogleCertsFake
) -> None:
    async with gateway(configured) as http:
        response = await http.post(PATH, content=body, headers=signed_headers(certs))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_request"
    assert gmail.requests == []


# ----------------------------------------------------------------------------- failures and backlog


async def test_broker_down_is_503_the_cursor_stays_and_the_redelivery_publishes(
    configured: Settings, gmail: GmailOAuthFake, certs: GoogleCertsFake, sessions: async_sessionmaker[AsyncSession]
) -> None:
    mailbox = gmail.email_address
    start = gmail.history_id
    await advance_cursor(sessions, mailbox, start)
    message = gmail.inject_email(from_="dee@example.com", subject="Billing", text="Why was I charged twice?")
    broker_down = configured.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    async with gateway(broker_down) as http:
        response = await push(http, certs, mailbox, gmail.history_id)
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "service_unavailable"
    assert await cursor_of(sessions, mailbox) == start
    assert await published(configured, {message.id}) == []

    async with gateway(configured) as http:  # the broker is back; Pub/Sub redelivers
        response = await push(http, certs, mailbox, gmail.history_id)
    assert response.status_code == 204, response.text
    assert [m.external_message_id for m in await published(configured, {message.id})] == [message.id]
    assert await cursor_of(sessions, mailbox) == gmail.history_id


async def test_gmail_api_unreachable_is_503_and_the_cursor_stays(
    configured: Settings, gmail: GmailOAuthFake, certs: GoogleCertsFake, sessions: async_sessionmaker[AsyncSession]
) -> None:
    mailbox = gmail.email_address
    await advance_cursor(sessions, mailbox, 10)
    down = configured.model_copy(update={"gmail_api_base_url": f"http://127.0.0.1:{free_port()}"})
    async with gateway(down) as http:
        response = await push(http, certs, mailbox, 20)
    assert response.status_code == 503, response.text
    assert await cursor_of(sessions, mailbox) == 10


async def test_expired_history_moves_the_cursor_to_the_push(
    configured: Settings, gmail: GmailOAuthFake, certs: GoogleCertsFake, sessions: async_sessionmaker[AsyncSession]
) -> None:
    mailbox = gmail.email_address
    await advance_cursor(sessions, mailbox, gmail.history_id)
    lost = gmail.inject_email(from_="old@example.com", subject="Old", text="from long ago")
    gmail.expire_history()  # history.list now answers 404 for anything before the current id
    pushed = gmail.history_id
    async with gateway(configured) as http:
        response = await push(http, certs, mailbox, pushed)
    assert response.status_code == 204, response.text
    assert await cursor_of(sessions, mailbox) == pushed
    assert await published(configured, {lost.id}) == []  # a full re-sync is out of scope


async def test_a_backlog_is_paged_and_continued_on_redelivery(
    configured: Settings,
    gmail: GmailOAuthFake,
    certs: GoogleCertsFake,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gmail_push, "HISTORY_PAGE_SIZE", 2)
    monkeypatch.setattr(gmail_push, "MAX_MESSAGES_PER_PUSH", 3)
    mailbox = gmail.email_address
    await advance_cursor(sessions, mailbox, gmail.history_id)
    backlog = [gmail.inject_email(from_=f"u{i}@example.com", subject=f"Q{i}", text=f"question {i}") for i in range(5)]
    ids = {m.id for m in backlog}
    async with gateway(configured) as http:
        first = await push(http, certs, mailbox, gmail.history_id)
        assert first.status_code == 503, first.text  # partial: Pub/Sub retries and we continue
        assert first.json()["detail"]["published"] == 3
        assert await cursor_of(sessions, mailbox) == backlog[2].history_id
        assert len(await published(configured, ids)) == 3
        second = await push(http, certs, mailbox, gmail.history_id)
        assert second.status_code == 204, second.text
    found = await published(configured, ids)
    assert sorted(m.external_message_id for m in found) == sorted(ids)
    assert await cursor_of(sessions, mailbox) == gmail.history_id
    assert len(gmail.requests_to("/gmail/v1/users/me/history")) >= 3  # pages of two


# ----------------------------------------------------------------------------- text extraction


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "Still broken.\r\n\r\nSent from my iPhone\r\n\r\n-----Original Message-----\r\nFrom: x\r\nold",
            "Still broken.",
        ),
        (
            "Yes, please cancel.\n\n________________________________\nFrom: Support <s@x.com>\n"
            "Sent: Monday, January 6, 2025 10:00 AM\nTo: me\nSubject: Re: Plan\n\nDo you want to cancel?",
            "Yes, please cancel.",
        ),
        (
            "Answers inline:\n> Which plan?\nPro\n> How many seats?\n12\n",
            "Answers inline:\nPro\n12",
        ),
        (
            "Sent from my phone, the export keeps failing.\nIt says error 500.\nline 3\nline 4\nline 5",
            "Sent from my phone, the export keeps failing.\nIt says error 500.\nline 3\nline 4\nline 5",
        ),
        ("On Monday my colleague wrote: the board is slow.\nAny idea?", None),
        (
            "Thanks!\n\nOn Tue, 7 Jan 2025 at 09:00, TechCorp Support\n<support@example.com> wrote:\n> Hi",
            "Thanks!",
        ),
        ("> only a quote\n> nothing else", "> only a quote\n> nothing else"),
    ],
)
def test_quoted_replies_and_signatures_are_stripped(body: str, expected: str | None) -> None:
    assert strip_quoted_reply(body) == (body if expected is None else expected)


def test_html_is_converted_to_readable_text() -> None:
    markup = (
        "<html><head><style>p {color: red}</style><title>x</title></head><body>"
        "<p>Hello&nbsp;team,</p><p>Steps:</p><ul><li>open the board</li><li>click &quot;Export&quot;</li></ul>"
        "<blockquote>quoted</blockquote><script>alert(1)</script></body></html>"
    )
    assert html_to_text(markup) == 'Hello team,\n\nSteps:\n\n- open the board\n- click "Export"'


def _auth(value: str) -> dict[str, str]:
    return {"authentication-results": value}


def test_only_gmails_aligned_pass_authenticates_the_from_address() -> None:
    good = (
        "mx.google.com; dkim=pass header.i=@example.com header.s=s1 header.b=x; spf=pass smtp.mailfrom=a@example.com;"
        " dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=example.com"
    )
    assert sender_authenticated(_auth(good), "ann@example.com")
    assert sender_authenticated(_auth(good), "ann@mail.example.com")  # a subdomain is aligned
    assert not sender_authenticated(_auth(good), "ann@example.org")  # another domain's pass proves nothing
    # A pass that someone else's server wrote, a failed check, or no header at all: not authenticated.
    assert not sender_authenticated(_auth(good.replace("mx.google.com", "mx.attacker.test")), "ann@example.com")
    failed = "mx.google.com; spf=softfail smtp.mailfrom=a@example.com; dmarc=fail (p=NONE) header.from=example.com"
    assert not sender_authenticated(_auth(failed), "ann@example.com")
    assert not sender_authenticated({}, "ann@example.com")
    assert not sender_authenticated(_auth("mx.google.com; ;; dkim=="), "ann@example.com")
    # DKIM signed by the sending service's own domain is not aligned with the From.
    other = "mx.google.com; dkim=pass header.i=@mailer.test header.s=s1; spf=pass smtp.mailfrom=b@mailer.test"
    assert not sender_authenticated(_auth(other), "ann@example.com")
