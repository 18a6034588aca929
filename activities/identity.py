"""The activity that sends a confirmation link for a claimed email address or phone number.

Idempotent per request (`request_key`, the workflow run): the first attempt records the request
with the hash of a fresh random token; the token itself exists only in the message sent. Before the
provider call the attempt is marked; a provider error (nothing went out) clears the mark so the
retry sends a fresh token, and a recorded send is never repeated. An attempt that died *during* the
provider call leaves the mark: its link may have gone out, and neither provider can tell us without
the token, so the request ends `uncertain` instead of risking a second, different link; the customer
can ask again from the ticket page.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from temporalio import activity

from activities.channels.gmail import GmailAdapter
from activities.channels.port import ChannelAdapter, EmailThread, OutboundMessage
from activities.channels.whatsapp import WhatsAppAdapter
from activities.deps import ActivityDeps
from core.logging import get_logger
from crm.db import transaction
from crm.repositories import identity_confirmations
from workflows.identity_confirmation import (
    SEND_IDENTITY_CONFIRMATION_ACTIVITY,
    IdentityConfirmationSent,
    SendIdentityConfirmationInput,
)

log = get_logger(__name__)


def token_hash(token: str) -> str:
    """What is stored for a confirmation token (sha256, hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def confirmation_text(*, ticket_number: str, what: str, link: str, hours: float) -> str:
    """The message that carries the link."""
    return (
        f"Someone asked to link support ticket {ticket_number} to this {what}. If it was you, open this "
        f"link and press Confirm:\n\n{link}\n\nThe link works for {hours:g} hours and only once. If it was not "
        "you, ignore this message: nothing changes."
    )


class IdentityActivities:
    """Confirmation links, sent through the support mailbox (Gmail) or WhatsApp (Twilio)."""

    def __init__(self, deps: ActivityDeps) -> None:
        self.deps = deps
        self.email = GmailAdapter(deps.settings)
        self.whatsapp = WhatsAppAdapter(deps.settings)

    def _link(self, token: str) -> str:
        s = self.deps.settings
        base = str(s.public_base_url) if s.public_base_url else f"http://{s.gateway_host}:{s.gateway_port}"
        return f"{base.rstrip('/')}/verify/{token}"

    @activity.defn(name=SEND_IDENTITY_CONFIRMATION_ACTIVITY)
    async def send_identity_confirmation(self, inp: SendIdentityConfirmationInput) -> IdentityConfirmationSent:
        """Record the confirmation request and send its link to the claimed email or phone (at most once)."""
        request = inp.request
        hours = self.deps.settings.identity_confirmation_ttl_hours
        token = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        expires_at = now + timedelta(hours=hours)
        async with transaction(self.deps.sessions) as session:
            row = await identity_confirmations.start_request(
                session,
                request_key=inp.request_key,
                customer_id=request.customer_id,
                kind=request.identifier_type,
                value=request.identifier_value,
                token_hash=token_hash(token),
                expires_at=expires_at,
            )
            if row.sent_at is None and row.send_attempted_at is None:
                await identity_confirmations.begin_send(
                    session, confirmation_id=row.id, token_hash=token_hash(token), expires_at=expires_at, at=now
                )
        if row.sent_at is not None:
            return IdentityConfirmationSent(
                confirmation_id=str(row.id),
                delivery_status=row.delivery_status or "sent",
                provider_message_id=row.provider_message_id,
            )
        if row.send_attempted_at is not None:
            log.warning("identity.confirmation_send_uncertain", confirmation_id=str(row.id))
            return IdentityConfirmationSent(confirmation_id=str(row.id), delivery_status="uncertain")
        adapter: ChannelAdapter
        what = "email address" if request.identifier_type == "email" else "WhatsApp number"
        # The token lives only in this message.
        text = confirmation_text(ticket_number=request.ticket_number, what=what, link=self._link(token), hours=hours)
        if request.identifier_type == "email":
            adapter = self.email
            message = OutboundMessage(
                message_id=f"identity-{row.id}",
                channel="email",
                content=text,
                to_email=request.identifier_value,
                to_phone=None,
                attributes={},
                email_thread=EmailThread(subject=f"Confirm your email address for ticket {request.ticket_number}"),
            )
        else:
            adapter = self.whatsapp
            message = OutboundMessage(
                message_id=f"identity-{row.id}",
                channel="whatsapp",
                content=text,
                to_email=None,
                to_phone=request.identifier_value,
                attributes={},
            )
        try:
            status, provider_id = await adapter.send(message)
        except Exception:
            # The provider refused or failed the call: nothing went out, so the retry (if any) sends
            # a fresh token. A cancellation (timeout, shutdown) is not caught: the send may be under way.
            async with transaction(self.deps.sessions) as session:
                await identity_confirmations.abandon_send(session, confirmation_id=row.id)
            raise
        async with transaction(self.deps.sessions) as session:
            await identity_confirmations.record_sent(
                session, confirmation_id=row.id, status=status, provider_message_id=provider_id, at=datetime.now(UTC)
            )
        log.info("identity.confirmation_sent", channel=message.channel, status=status, confirmation_id=str(row.id))
        return IdentityConfirmationSent(
            confirmation_id=str(row.id), delivery_status=status, provider_message_id=provider_id
        )
