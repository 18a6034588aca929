"""WhatsApp's 24-hour window: a human reply after it goes as the approved template, by email, or fails.

Real PostgreSQL; the send activity as the worker runs it; the Twilio fake over real HTTP (the
official client, unchanged) refusing free-form messages outside the window (63016), and the Gmail
fake for the support mailbox. Time is driven by recording the customer's message with an old
timestamp, never by sleeping.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from temporalio.exceptions import ApplicationError
from twilio.base.exceptions import TwilioRestException

from activities.channels.activities import ChannelActivities
from activities.crm_activities import CRMActivities
from activities.deps import ActivityDeps
from core.settings import Settings
from crm.db import transaction
from crm.repositories import customers
from gateway.agents.service import conversation_history
from tests.channels.gmail_support import GmailOAuthFake, gmail_settings
from tests.fakes.twilio_fake import TwilioFake
from workflows.contracts import (
    EnsureTicketInput,
    InboundMessage,
    OpenConversationInput,
    PrepareReplyInput,
    RecordInboundInput,
    SenderIdentity,
    SendReplyInput,
    conversation_workflow_id,
)

CONTENT_SID = "HX" + "5d1c0a7e" * 4
BUSINESS_NUMBER = "+14155550000"
REPLY = "Good news: the export bug is fixed. Open Settings > Export and run it again."


@pytest.fixture
def twilio() -> Iterator[TwilioFake]:
    with TwilioFake(enforce_whatsapp_window=True) as fake:
        yield fake


@pytest.fixture
def gmail() -> Iterator[GmailOAuthFake]:
    with GmailOAuthFake() as fake:
        yield fake


@dataclass
class Late:
    """One WhatsApp conversation whose customer last wrote `hours_ago` hours ago."""

    deps: ActivityDeps
    twilio: TwilioFake
    gmail: GmailOAuthFake
    phone: str
    conversation_id: str
    customer_id: str
    ticket_number: str

    async def human_reply(self, body: str = REPLY, agent: str = "Riley Quinn") -> list[str]:
        """The human's reply recorded as the workflow records it (prepare_reply); its message ids."""
        prepared = await ChannelActivities(self.deps).prepare_reply(
            PrepareReplyInput(
                conversation_id=self.conversation_id,
                channel="whatsapp",
                ticket_number=self.ticket_number,
                idempotency_key=f"{self.conversation_id}/reply-{uuid.uuid4().hex[:8]}",
                source="human",
                human_agent=agent,
                human_reply=body,
            )
        )
        return prepared.message_ids

    async def send(self, message_id: str) -> Any:
        return await ChannelActivities(self.deps).send_whatsapp_reply(SendReplyInput(message_id=message_id))

    async def row(self, message_id: str) -> Any:
        async with self.deps.sessions() as session:
            return (
                await session.execute(
                    text("SELECT delivery_status, provider_message_id, attributes FROM messages WHERE id = :id"),
                    {"id": message_id},
                )
            ).one()

    def whatsapp_sent(self) -> list[Any]:
        return [m for m in self.twilio.messages if m.to == f"whatsapp:{self.phone}"]


@asynccontextmanager
async def late_conversation(
    settings: Settings,
    twilio: TwilioFake,
    gmail: GmailOAuthFake,
    *,
    hours_ago: float,
    template: bool,
    verified_email: str | None = None,
    claimed_email: str | None = None,
) -> AsyncIterator[Late]:
    extra: dict[str, Any] = {
        "twilio_account_sid": twilio.account_sid,
        "twilio_auth_token": SecretStr(twilio.auth_token),
        "twilio_whatsapp_from": BUSINESS_NUMBER,
        "twilio_api_base_url": twilio.base_url,
    }
    if template:
        extra["whatsapp_late_reply_content_sid"] = CONTENT_SID
    deps = ActivityDeps.create(gmail_settings(settings, gmail, **extra))
    try:
        phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
        wrote_at = datetime.now(UTC) - timedelta(hours=hours_ago)
        message = InboundMessage(
            channel="whatsapp",
            external_message_id=f"SM{uuid.uuid4().hex}",
            conversation_key=phone,
            sender=SenderIdentity(phone=phone, name="Sam Carter"),
            text="The export still fails, can someone look?",
            received_at=wrote_at,
        )
        crm = CRMActivities(deps)
        customer = await crm.resolve_customer(message)
        conversation_id = await crm.open_conversation(
            OpenConversationInput(
                workflow_id=conversation_workflow_id("whatsapp", phone),
                run_id=str(uuid.uuid4()),
                channel="whatsapp",
                conversation_key=phone,
                customer_id=customer.customer_id,
            )
        )
        await crm.record_inbound_message(RecordInboundInput(conversation_id=conversation_id, message=message))
        ticket = await crm.ensure_ticket(
            EnsureTicketInput(conversation_id=conversation_id, customer_id=customer.customer_id, channel="whatsapp")
        )
        async with transaction(deps.sessions) as session:
            for address, proof in ((verified_email, "gmail"), (claimed_email, None)):
                if address:
                    await customers.link_identifier(
                        session,
                        customer_id=customer.customer_id,
                        kind="email",
                        value=address,
                        channel="email",
                        verified_via=proof,  # type: ignore[arg-type]
                    )
        twilio.record_inbound(phone, wrote_at)  # what WhatsApp itself knows
        yield Late(deps, twilio, gmail, phone, conversation_id, customer.customer_id, ticket.ticket_number)
    finally:
        await deps.close()


async def test_a_late_human_reply_goes_as_the_approved_template_with_its_variables(
    settings: Settings, twilio: TwilioFake, gmail: GmailOAuthFake
) -> None:
    async with late_conversation(
        settings, twilio, gmail, hours_ago=25, template=True, verified_email=f"sam.{uuid.uuid4().hex[:6]}@example.org"
    ) as late:
        (message_id,) = await late.human_reply()
        result = await late.send(message_id)

        (sent,) = late.whatsapp_sent()
        assert sent.content_sid == CONTENT_SID
        assert sent.content_variables == {"1": "Sam", "2": late.ticket_number}
        assert "Body" not in sent.params  # a template, not free text
        assert sent.from_ == f"whatsapp:{BUSINESS_NUMBER}"
        assert (result.delivery_status, result.provider_message_id) == ("queued", sent.sid)
        row = await late.row(message_id)
        assert (row.delivery_status, row.provider_message_id) == ("queued", sent.sid)
        assert row.attributes["sent_as"] == "template"
        assert row.attributes["content_sid"] == CONTENT_SID
        assert gmail.sent == []  # the template wins over email

        again = await late.send(message_id)  # a retried activity: nothing new goes out
        assert again.provider_message_id == sent.sid and len(late.whatsapp_sent()) == 1


async def test_a_long_late_reply_is_one_email_to_the_verified_address_without_a_template(
    settings: Settings, twilio: TwilioFake, gmail: GmailOAuthFake
) -> None:
    address = f"sam.{uuid.uuid4().hex[:6]}@example.org"
    async with late_conversation(
        settings, twilio, gmail, hours_ago=25, template=False, verified_email=address, claimed_email="x@example.net"
    ) as late:
        paragraphs = [f"Step {i}: open the board menu and choose the option numbered {i}." * 3 for i in range(12)]
        ids = await late.human_reply("\n\n".join(paragraphs))
        assert len(ids) >= 2  # over WhatsApp's 1,600 characters: recorded as several parts
        results = [await late.send(message_id) for message_id in ids]

        (mail,) = gmail.sent  # one email for the whole reply
        assert address in (mail.to or "")
        assert mail.sender == gmail.email_address
        assert mail.subject == f"Re: Your WhatsApp support request ({late.ticket_number})"
        assert "Step 0:" in mail.text and "Step 11:" in mail.text and "— Riley Quinn" in mail.text
        assert "within 24 hours" in mail.text
        assert late.whatsapp_sent() == []
        first = await late.row(ids[0])
        assert (first.delivery_status, first.provider_message_id) == ("sent", mail.id)
        assert first.attributes["sent_as"] == "email" and first.attributes["email_to"] == address
        for message_id, result in zip(ids[1:], results[1:], strict=True):
            rest = await late.row(message_id)
            assert rest.delivery_status == "sent" and result.delivery_status == "sent"
            assert rest.attributes["sent_as"] == "email" and rest.attributes["sent_with"] == ids[0]


async def test_a_late_reply_with_no_template_and_no_verified_email_fails_for_good(
    settings: Settings, twilio: TwilioFake, gmail: GmailOAuthFake
) -> None:
    # A claimed (typed, unconfirmed) address is not somewhere we write to.
    async with late_conversation(
        settings, twilio, gmail, hours_ago=25, template=False, claimed_email="x@example.net"
    ) as late:
        (message_id,) = await late.human_reply()
        with pytest.raises(ApplicationError) as caught:
            await late.send(message_id)
        assert caught.value.non_retryable and caught.value.type == "SendRejected"
        assert "24-hour window" in str(caught.value)
        row = await late.row(message_id)
        assert row.delivery_status == "failed" and row.attributes["sent_as"] == "undeliverable"
        assert late.whatsapp_sent() == [] and gmail.sent == []


async def test_inside_the_window_a_human_reply_goes_as_text(
    settings: Settings, twilio: TwilioFake, gmail: GmailOAuthFake
) -> None:
    async with late_conversation(settings, twilio, gmail, hours_ago=23, template=True) as late:
        (message_id,) = await late.human_reply()
        await late.send(message_id)
        (sent,) = late.whatsapp_sent()
        assert sent.content_sid is None and REPLY in sent.body and "— Riley Quinn" in sent.body
        row = await late.row(message_id)
        assert row.attributes["sent_as"] == "text" and row.delivery_status == "queued"


async def test_the_console_view_says_how_a_reply_would_go(
    settings: Settings, twilio: TwilioFake, gmail: GmailOAuthFake
) -> None:
    address = f"sam.{uuid.uuid4().hex[:6]}@example.org"
    async with late_conversation(settings, twilio, gmail, hours_ago=25, template=False, verified_email=address) as late:
        s = late.deps.settings
        async with late.deps.sessions() as session:
            by_email = await conversation_history(session, conversation_id=late.conversation_id, settings=s)
            templated = await conversation_history(
                session,
                conversation_id=late.conversation_id,
                settings=s.model_copy(update={"whatsapp_late_reply_content_sid": CONTENT_SID}),
            )
            nothing = await conversation_history(
                session,
                conversation_id=late.conversation_id,
                settings=s.model_copy(update={"gmail_refresh_token": None}),  # no support mailbox to send from
            )
        window = by_email.whatsapp_window
        assert window is not None and not window.open
        assert window.last_customer_message_at is not None and window.closes_at is not None
        assert window.closes_at == window.last_customer_message_at + timedelta(hours=24)
        assert (window.late_reply_via, window.email_to) == ("email", address)
        assert templated.whatsapp_window is not None and templated.whatsapp_window.late_reply_via == "template"
        assert nothing.whatsapp_window is not None and nothing.whatsapp_window.late_reply_via == "undeliverable"


def test_the_twilio_fake_refuses_free_text_outside_the_window_and_takes_templates(twilio: TwilioFake) -> None:
    client = twilio.client()
    stale, fresh = "+15550000001", "+15550000002"
    twilio.record_inbound(stale, datetime.now(UTC) - timedelta(hours=25))
    twilio.record_inbound(fresh, datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(from_=f"whatsapp:{BUSINESS_NUMBER}", to=f"whatsapp:{stale}", body="hello")
    assert caught.value.code == 63016
    template = client.messages.create(
        from_=f"whatsapp:{BUSINESS_NUMBER}",
        to=f"whatsapp:{stale}",
        content_sid=CONTENT_SID,
        content_variables='{"1": "Sam", "2": "TKT-0042"}',
    )
    assert twilio.get_message(template.sid).content_variables == {"1": "Sam", "2": "TKT-0042"}
    assert client.messages.create(from_=f"whatsapp:{BUSINESS_NUMBER}", to=f"whatsapp:{fresh}", body="hi").sid
