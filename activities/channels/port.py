"""The port every outbound channel implements, and the complete message it is handed.

An adapter talks to its provider only: the reply activity loads the recorded outbound row (and,
for email, the thread it answers) from the CRM and passes everything in one `OutboundMessage`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol

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
