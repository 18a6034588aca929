"""The port every outbound channel implements, and the complete message it is handed.

An adapter talks to its provider only: the reply activity loads the recorded outbound row (and,
for email, the thread it answers) from the CRM and passes everything in one `OutboundMessage`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, NamedTuple, Protocol

from core.vocabulary import Channel


@dataclass(frozen=True)
class EmailThread:
    """Where an email reply belongs: facts of the customer's latest email in the conversation."""

    # Gmail's threadId (the conversation key when the email does not name one).
    thread_id: str | None = None
    # The customer's Message-ID: the reply's In-Reply-To, and the last id of its References.
    parent_message_id: str | None = None
    # The References chain of the customer's email (already trimmed by the gateway).
    references: str | None = None
    subject: str | None = None


@dataclass(frozen=True)
class LateReply:
    """How a human WhatsApp reply outside the 24-hour window goes out (core/whatsapp_window.py).

    `template`: the approved template with its variables instead of the text; `email`: the whole
    reply by email from the support mailbox; `undeliverable`: refused without calling anyone.
    """

    via: Literal["template", "email", "undeliverable"]
    content_sid: str | None = None
    # Twilio's ContentVariables: a JSON object such as {"1": "Sam", "2": "TKT-0042"}.
    content_variables: str | None = None
    email_to: str | None = None
    email_subject: str | None = None
    # The email's text: the whole reply (every WhatsApp part), introduced.
    email_body: str | None = None


@dataclass(frozen=True)
class OutboundMessage:
    """A recorded outbound message, with everything its channel's adapter needs to deliver it."""

    message_id: str
    channel: Channel
    content: str
    # The recipient: an email address (email) or a phone number (WhatsApp).
    to_email: str | None
    to_phone: str | None
    attributes: Mapping[str, object]
    # Email only: the thread the reply joins (None: a new thread, no In-Reply-To).
    email_thread: EmailThread | None = field(default=None)
    # WhatsApp only: set when a human reply is sent after the 24-hour window closed.
    late_reply: LateReply | None = field(default=None)


class Delivery(NamedTuple):
    """What a provider said about one message: its status and its id for that message."""

    status: str
    provider_message_id: str | None


class ChannelAdapter(Protocol):
    """One small port per channel."""

    async def send(self, message: OutboundMessage) -> Delivery:
        """Deliver the message; raise `ErrorType.SEND_REJECTED` (non-retryable) for a final refusal."""
        ...

    async def find_sent(self, message: OutboundMessage, *, since: datetime, known: set[str]) -> Delivery | None:
        """The delivery of an earlier, interrupted attempt of this message, if the provider has one.

        Called before a resend when a previous attempt was recorded at `since`; `known` holds the
        provider ids already recorded for other messages of the conversation.
        """
        ...
