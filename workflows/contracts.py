"""The data that crosses process boundaries: Kafka records, signals, queries, updates.

Pydantic models only (this module is imported inside the workflow sandbox). Fields may be added
with defaults; never renamed or removed while workflows that carry them are running.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Channel = Literal["email", "whatsapp", "web_form"]

# Workflow ids are derived from the conversation key, so signal-with-start finds the same run.
_WORKFLOW_PREFIX: dict[str, str] = {"email": "email", "whatsapp": "whatsapp", "web_form": "web"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.@+:=-]")

MAX_TEXT_CHARS = 20_000


class Attachment(BaseModel):
    """Metadata of a media file or attachment; the bytes stay with the provider."""

    url: str | None = None
    content_type: str | None = None
    filename: str | None = None
    size_bytes: int | None = None


class SenderIdentity(BaseModel):
    """Who wrote: whatever the channel tells us (email for Gmail, E.164 phone for WhatsApp)."""

    email: str | None = None
    phone: str | None = None
    name: str | None = None


class InboundMessage(BaseModel):
    """One customer message, channel-neutral; the Kafka record value and the signal payload."""

    channel: Channel
    external_message_id: str = Field(min_length=1, max_length=256)
    conversation_key: str = Field(min_length=1, max_length=256)
    sender: SenderIdentity
    text: str = Field(max_length=MAX_TEXT_CHARS)
    received_at: datetime
    subject: str | None = Field(default=None, max_length=500)
    attachments: list[Attachment] = Field(default_factory=list)
    # Short channel metadata: Gmail thread/message ids for threading, form category, priority.
    metadata: dict[str, str] = Field(default_factory=dict)


def conversation_workflow_id(channel: str, conversation_key: str) -> str:
    """`conversation-whatsapp-+14155550100`, `conversation-email-<thread>`, `conversation-web-TKT-0001`."""
    prefix = _WORKFLOW_PREFIX.get(channel)
    if prefix is None:
        raise ValueError(f"unknown channel {channel!r}")
    return f"conversation-{prefix}-{_UNSAFE.sub('_', conversation_key)}"


class ConversationInput(BaseModel):
    """How a conversation workflow starts; everything else arrives by signal."""

    channel: Channel
    conversation_key: str
    # Carried across continue-as-new so a long conversation keeps its identity and dedupe state.
    carried_state: dict[str, object] | None = None


CONVERSATION_WORKFLOW = "ConversationWorkflow"
INBOUND_SIGNAL = "inbound_message"
RESOLVE_ESCALATION_SIGNAL = "resolve_escalation"
