"""The web support form: replies are shown on the customer's ticket page, and the customer is told by email.

Storing the reply is its delivery (the ticket page reads it from the CRM). Once it is delivered,
`send_web_form_reply` emails the address that filed the ticket a short notice from the support
mailbox, through the Gmail reply path (`GmailAdapter`): the ticket number, a line saying a reply
is waiting, and the ticket's secure link (core/ticket_links.py), whose page shows the conversation
and has a reply box.

The notice carries no reply text, on purpose:
- the address was typed on a form and never proven (crm.identity: a claim), and a mailbox is a
  long-lived copy outside our access control (forwarded, archived, scanned): the reply, which may
  hold account details, stays on the page, shown to whoever holds the link;
- one place to read and answer: a customer who answered the email would start a separate email
  conversation instead of continuing this one.

A notice never fails or holds up the reply: it is sent after the reply is on the page, bounded in
time, and any problem (Gmail not configured, no link secret, Gmail down) is logged and recorded on
the message's `reply_notice` attribute instead of raised.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from activities.channels.gmail import GmailAdapter
from activities.channels.port import Delivery, EmailThread, OutboundMessage
from core.gmail_client import gmail_service
from core.settings import Settings

# A notice never holds the reply up for long: the send activity's own timeout is 30 s.
NOTICE_TIMEOUT_SECONDS = 15.0
# One Gmail call of the notice (a retried attempt makes two: the look-up, then the send).
_NOTICE_GMAIL_TIMEOUT_SECONDS = 6.0


class WebFormAdapter:
    """Storing the reply is its delivery: the ticket page reads it from the CRM."""

    async def send(self, message: OutboundMessage) -> Delivery:
        """Nothing to send: the stored reply is already on the ticket page (the notice follows it)."""
        return Delivery("delivered", None)

    async def find_sent(self, message: OutboundMessage, *, since: datetime, known: set[str]) -> Delivery | None:
        """Never an earlier delivery to find: `send` has no side effect to repeat."""
        return None


def notice_subject(ticket_number: str) -> str:
    """The notice's subject: the ticket number first, so the customer's mail client groups them."""
    return f"[{ticket_number}] A reply to your support request is waiting"


def notice_text(ticket_number: str, link: str) -> str:
    """The notice's body: no reply text (see the module docstring), the secure link, how to answer."""
    return (
        "Hello,\n\n"
        f"There is a new reply on your support ticket {ticket_number}. You can read it and answer here:\n\n"
        f"{link}\n\n"
        "To answer, use the reply box on that page: it continues the same conversation.\n"
        "Keep this link to yourself: anyone who has it can read and answer this ticket.\n\n"
        "TechCorp Support\n"
    )


def notice_message_id(message_id: str) -> str:
    """The notice's own key, from the reply's message id: its Message-ID, so a retry finds it and never resends."""
    return f"notice-{message_id}"


class ReplyNoticeMailer(GmailAdapter):
    """The Gmail reply path, composing a new message (its own subject, no thread) with a short socket timeout."""

    def _compose(self, message: OutboundMessage, thread: EmailThread, recipient: str) -> EmailMessage:
        mime = super()._compose(message, thread, recipient)
        del mime["Subject"]
        mime["Subject"] = thread.subject or "A reply to your support request is waiting"
        # Automatic mail: out-of-office responders must not answer it (RFC 3834).
        mime["Auto-Submitted"] = "auto-generated"
        return mime

    def _send_blocking(self, mime: EmailMessage, thread_id: str | None, outbound_id: str) -> Delivery:
        with gmail_service(self.settings, timeout=_NOTICE_GMAIL_TIMEOUT_SECONDS) as service:
            return self._send_with(service.users().messages(), mime, thread_id, outbound_id)


async def send_reply_notice(
    settings: Settings, *, message_id: str, ticket_number: str, to: str, link: str
) -> dict[str, Any]:
    """Email the notice for outbound message `message_id`; returns its outcome (`sent` with Gmail's id).

    Raises whatever Gmail raised; the caller records it and lets the reply stand.
    """
    if not settings.gmail_configured:
        return {"status": "not_configured"}
    outbound = OutboundMessage(
        message_id=notice_message_id(message_id),
        channel="email",
        content=notice_text(ticket_number, link),
        to_email=to,
        to_phone=None,
        attributes={},
        email_thread=EmailThread(subject=notice_subject(ticket_number)),  # no thread id: a new thread
    )
    async with asyncio.timeout(NOTICE_TIMEOUT_SECONDS):
        status, gmail_id = await ReplyNoticeMailer(settings).send(outbound)
    if status == "not_configured":
        return {"status": "not_configured"}
    return {"status": "sent", "gmail_message_id": gmail_id}
