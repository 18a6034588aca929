"""Email replies through GmailAdapter: in the customer's thread, once, on real PostgreSQL.

The inbound side is the production path too: the Gmail message is read with the official client,
normalised by the gateway's parser and stored by the CRM activities, so the reply is built from
exactly the attributes a real conversation would have.
"""

from __future__ import annotations

import dataclasses
import email.utils
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.channels.activities import ChannelActivities, load_outbound
from activities.channels.gmail import GmailAdapter, reply_recipient, reply_subject
from activities.channels.port import OutboundMessage
from activities.crm_activities import CRMActivities
from activities.deps import ActivityDeps
from core.mail import reply_references
from core.settings import Settings
from crm.db import transaction
from crm.repositories import messages
from gateway.gmail import inbound_from_gmail
from tests.channels.gmail_support import GmailOAuthFake, gmail_settings
from tests.fakes.gmail_fake import GmailMessage
from workflows.contracts import OpenConversationInput, RecordInboundInput, SendReplyInput, conversation_workflow_id


@pytest.fixture
def gmail() -> Iterator[GmailOAuthFake]:
    with GmailOAuthFake() as fake:
        yield fake


@pytest.fixture
async def deps(settings: Settings, gmail: GmailOAuthFake) -> AsyncIterator[ActivityDeps]:
    deps = ActivityDeps.create(gmail_settings(settings, gmail))
    yield deps
    await deps.close()


async def conversation_with(deps: ActivityDeps, gmail: GmailOAuthFake, inbound: GmailMessage) -> str:
    """Store the Gmail message as the CRM activities do; returns the conversation id."""
    with gmail.build_service() as service:
        resource = service.users().messages().get(userId="me", id=inbound.id, format="full").execute()
    message = inbound_from_gmail(resource)
    crm = CRMActivities(deps)
    customer = await crm.resolve_customer(message)
    workflow_id = conversation_workflow_id("email", message.conversation_key)
    conversation_id = await crm.open_conversation(
        OpenConversationInput(
            workflow_id=workflow_id,
            run_id=str(uuid.uuid4()),
            channel="email",
            conversation_key=message.conversation_key,
            customer_id=customer.customer_id,
            subject=message.subject,
        )
    )
    await crm.record_inbound_message(RecordInboundInput(conversation_id=conversation_id, message=message))
    return conversation_id


async def pending_reply(deps: ActivityDeps, conversation_id: str, content: str) -> OutboundMessage:
    """Record a pending email reply and load it as the send activity hands it to the adapter."""
    async with transaction(deps.sessions) as session:
        message_id = await messages.record_outbound(
            session,
            conversation_id=conversation_id,
            channel="email",
            role="agent",
            content=content,
            idempotency_key=f"test-{uuid.uuid4()}",
            attributes={},
        )
    async with deps.sessions() as session:
        loaded = await load_outbound(session, message_id=message_id)
    assert loaded is not None
    return loaded[1]


async def test_a_reply_threads_in_the_customers_gmail_thread(deps: ActivityDeps, gmail: GmailOAuthFake) -> None:
    customer = f"lena.{uuid.uuid4().hex[:8]}@example.org"
    now = datetime.now(UTC)
    first = gmail.inject_email(
        from_=f"Lena <{customer}>", subject="Invoices", text="Where are my invoices?", date=now - timedelta(minutes=5)
    )
    follow_up = gmail.inject_email(
        from_=f"Lena <{customer}>",
        subject="Re: Invoices",
        text="Any news?",
        date=now - timedelta(minutes=1),
        in_reply_to=first.message_id,
        references=first.message_id,
    )
    conversation_id = await conversation_with(deps, gmail, first)
    await conversation_with(deps, gmail, follow_up)  # same thread: same conversation
    outbound = await pending_reply(deps, conversation_id, "Your invoices are under Settings > Billing.")

    # Through the channel activity, as the worker runs it.
    channels = ChannelActivities(deps)
    channels.adapters["email"] = GmailAdapter(deps.settings)
    result = await channels.send_email_reply(SendReplyInput(message_id=outbound.message_id))

    assert result.delivery_status == "sent"
    (sent,) = gmail.sent
    assert result.provider_message_id == sent.id
    # GmailFake keeps a threadId only when the headers reference the thread and the subject matches.
    assert sent.thread_id == first.thread_id
    assert sent.in_reply_to == follow_up.message_id
    assert sent.references == f"{first.message_id} {follow_up.message_id}"
    assert sent.subject == "Re: Invoices"
    assert email.utils.parseaddr(sent.to or "")[1] == customer
    assert sent.sender == gmail.email_address
    assert sent.message_id == f"<crm-fte.{outbound.message_id}@example.com>"
    assert sent.text == "Your invoices are under Settings > Billing.\n"
    async with deps.sessions() as session:
        row = (
            await session.execute(
                text("SELECT delivery_status, provider_message_id FROM messages WHERE id = :id"),
                {"id": outbound.message_id},
            )
        ).one()
    assert (row.delivery_status, row.provider_message_id) == ("sent", sent.id)
    # A second activity call (the worker died before reporting) sends nothing new.
    again = await channels.send_email_reply(SendReplyInput(message_id=outbound.message_id))
    assert again.provider_message_id == sent.id and len(gmail.sent) == 1


async def test_a_retried_send_finds_its_own_message_id_and_does_not_send_twice(
    deps: ActivityDeps, gmail: GmailOAuthFake
) -> None:
    first = gmail.inject_email(from_="max@example.org", subject="Seats", text="How do I add seats?")
    outbound = await pending_reply(deps, await conversation_with(deps, gmail, first), "Under Settings > Seats.")
    adapter = GmailAdapter(deps.settings)
    status, gmail_id = await adapter.send(outbound)  # got through, but the activity never reported it
    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(retry.info, attempt=2)
    assert await retry.run(adapter.send, outbound) == (status, gmail_id)
    assert [m.id for m in gmail.sent] == [gmail_id]


async def test_a_deleted_thread_still_gets_the_reply_in_a_new_thread(deps: ActivityDeps, gmail: GmailOAuthFake) -> None:
    first = gmail.inject_email(from_="kai@example.org", subject="Export", text="Export fails")
    conversation_id = await conversation_with(deps, gmail, first)
    gmail.reset()  # the mailbox no longer has the thread: Gmail answers 404 for its threadId
    status, gmail_id = await GmailAdapter(deps.settings).send(await pending_reply(deps, conversation_id, "Fixed now."))
    assert status == "sent"
    (sent,) = gmail.sent
    assert sent.id == gmail_id and sent.in_reply_to == first.message_id and sent.subject == "Re: Export"


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (403, False), (429, True), (500, True), (503, True)])
async def test_gmail_rejections_are_final_and_outages_are_retried(
    deps: ActivityDeps, gmail: GmailOAuthFake, status: int, retryable: bool
) -> None:
    first = gmail.inject_email(from_="ola@example.org", subject="Login", text="Cannot log in")
    outbound = await pending_reply(deps, await conversation_with(deps, gmail, first), "Reset your password.")
    gmail.send_status = status
    with pytest.raises(Exception) as caught:
        await GmailAdapter(deps.settings).send(outbound)
    if retryable:
        assert not isinstance(caught.value, ApplicationError)
    else:
        assert isinstance(caught.value, ApplicationError)
        assert caught.value.type == "SendRejected" and caught.value.non_retryable
    assert gmail.sent == []


async def test_not_configured_is_recorded_not_sent(settings: Settings, gmail: GmailOAuthFake) -> None:
    deps = ActivityDeps.create(settings)  # no Gmail credentials
    try:
        adapter = GmailAdapter(settings)
        outbound = OutboundMessage(str(uuid.uuid4()), "email", "Hello", "someone@example.org", None, {})
        assert await adapter.send(outbound) == ("not_configured", None)
    finally:
        await deps.close()
    assert gmail.requests == []


@pytest.mark.parametrize(
    ("subject", "expected"),
    [("Invoices", "Re: Invoices"), ("Re: Invoices", "Re: Invoices"), ("RE:Invoices", "RE:Invoices"), (None, None)],
)
def test_reply_subject(subject: str | None, expected: str | None) -> None:
    assert reply_subject(subject) == (expected or "Re: Your support request")


def test_the_reply_goes_to_reply_to_else_the_sender_else_the_customer() -> None:
    assert reply_recipient({"reply_to": "Team <team@acme.example>", "from": "a@acme.example"}, "c@x.io") == (
        "team@acme.example"
    )
    assert reply_recipient({"from": "Ana <ana@acme.example>"}, "old@x.io") == "ana@acme.example"
    assert reply_recipient({}, "old@x.io") == "old@x.io"
    assert reply_recipient({"from": "undisclosed"}, None) is None


def test_references_keep_the_first_and_latest_ids() -> None:
    chain = " ".join(f"<m{i}@x>" for i in range(15))
    refs = reply_references(chain, "<parent@x>")
    assert refs is not None
    ids = refs.split()
    assert ids[0] == "<m0@x>" and ids[-1] == "<parent@x>" and len(ids) == 10
    assert reply_references(None, "<p@x>") == "<p@x>"
    assert reply_references(None, None) is None
