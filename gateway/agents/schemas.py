"""The human-agent API's request and response models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from core.vocabulary import (
    Channel,
    ConversationStatus,
    DeliveryStatus,
    EscalationReason,
    EscalationStatus,
    IdentifierProof,
    IdentifierType,
    MessageDirection,
    MessageRole,
    NoteKind,
    Plan,
    Priority,
    ResolutionAction,
    TicketCategory,
    TicketStatus,
)
from core.whatsapp_window import LateReplyVia
from workflows.contracts import MAX_TEXT_CHARS


class AgentView(BaseModel):
    name: str
    scopes: list[str]


# ----------------------------------------------------------------------------- the queue


class QueueCustomer(BaseModel):
    id: uuid.UUID
    name: str | None
    email: str | None
    phone: str | None


class QueueItem(BaseModel):
    ticket_id: str | None
    escalation_id: uuid.UUID
    conversation_id: uuid.UUID
    workflow_id: str
    reason: EscalationReason
    priority: Priority
    sla_due_at: datetime
    overdue: bool
    notified_count: int
    channel: Channel
    subject: str | None
    customer: QueueCustomer
    created_at: datetime
    last_customer_message: str | None = Field(description="The latest customer message, shortened")
    last_customer_message_at: datetime | None
    assignee: str | None = Field(default=None, description="The person who owns it; null: nobody claimed it yet")
    responded_at: datetime | None = Field(
        default=None, description="A person's first reply (the SLA is met from then on); null: nobody answered yet"
    )


class QueueCounts(BaseModel):
    """Of the open escalations the filters match (however many `limit` let through)."""

    total: int
    breached: int = Field(description="Their SLA due time has passed")
    by_priority: dict[Priority, int] = Field(description="Every priority, most urgent first, zero included")


class EscalationQueue(BaseModel):
    escalations: list[QueueItem] = Field(
        description="Most urgent first (urgent, high, medium, low), then the SLA due soonest, then the oldest"
    )
    count: int = Field(description="How many escalations this response lists")
    counts: QueueCounts


# ----------------------------------------------------------------------------- cross-channel history


class HistoryMessage(BaseModel):
    id: uuid.UUID
    direction: MessageDirection
    role: MessageRole
    channel: Channel
    content: str
    delivery_status: DeliveryStatus
    created_at: datetime


class HistoryTicket(BaseModel):
    ticket_id: str
    status: TicketStatus
    category: TicketCategory
    priority: Priority
    subject: str | None
    created_at: datetime
    resolved_at: datetime | None


class HistoryEscalation(BaseModel):
    id: uuid.UUID
    reason: EscalationReason
    priority: Priority
    status: EscalationStatus
    sla_due_at: datetime
    created_at: datetime
    resolved_by: str | None
    resolution_action: ResolutionAction | None
    resolved_at: datetime | None
    assignee: str | None = None
    responded_at: datetime | None = None


class KnowledgeArticle(BaseModel):
    """An article the AI retrieved while answering (search_knowledge_base results)."""

    article_id: str
    title: str
    query: str | None
    turn: int
    score: float | None


class HistoryNote(BaseModel):
    """An agent's internal note: never sent to the customer or shown to them; the model reads only
    `hand_back` notes (written when a person handed the conversation back to it)."""

    id: uuid.UUID
    author: str
    body: str
    kind: NoteKind = "note"
    created_at: datetime


class HistoryConversation(BaseModel):
    id: uuid.UUID
    channel: Channel
    status: ConversationStatus
    subject: str | None
    started_at: datetime
    ended_at: datetime | None
    workflow_id: str
    sentiment_score: float | None
    ticket: HistoryTicket | None
    escalations: list[HistoryEscalation]
    messages: list[HistoryMessage]
    kb_articles: list[KnowledgeArticle]
    notes: list[HistoryNote] = Field(default_factory=list, description="Internal notes, oldest first")


class CustomerIdentity(BaseModel):
    type: IdentifierType
    value: str
    channel: Channel | None
    # What proved it is the customer's; None: a claim (typed, unconfirmed: it links no records).
    verified_via: IdentifierProof | None = None


class HistoryCustomer(BaseModel):
    id: uuid.UUID
    name: str | None
    email: str | None
    phone: str | None
    company: str | None
    plan: Plan | None
    identifiers: list[CustomerIdentity]


class HumanActionView(BaseModel):
    agent_name: str
    action: str
    ticket_number: str | None
    conversation_id: uuid.UUID | None
    detail: dict[str, Any]
    created_at: datetime


class WhatsAppWindow(BaseModel):
    """WhatsApp's 24-hour window of the conversation's number, and how a human reply sent now goes out."""

    open: bool = Field(description="Free-form messages allowed: the customer wrote less than 24 hours ago")
    last_customer_message_at: datetime | None = Field(description="The customer's last WhatsApp message to us")
    closes_at: datetime | None = Field(description="24 hours after that: when the window closes, or closed")
    late_reply_via: LateReplyVia = Field(
        description=(
            "How a reply sent now goes out: text (window open), template (the approved template "
            "WHATSAPP_LATE_REPLY_CONTENT_SID), email (to email_to, the customer's verified address), "
            "or undeliverable (refused: reach the customer another way)"
        )
    )
    email_to: str | None = Field(default=None, description="Where an email reply goes (late_reply_via = email)")


class ConversationHistory(BaseModel):
    conversation_id: uuid.UUID
    customer: HistoryCustomer
    conversations: list[HistoryConversation] = Field(description="All the customer's conversations, oldest first")
    human_actions: list[HumanActionView] = Field(description="What people did on these conversations, latest last")
    whatsapp_window: WhatsAppWindow | None = Field(
        default=None, description="The requested conversation's WhatsApp 24-hour window; null on other channels"
    )


# ----------------------------------------------------------------------------- resolving


class ResolveRequest(BaseModel):
    reply: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_CHARS)]
    action: ResolutionAction


class ResolveResult(BaseModel):
    ticket_id: str
    action: ResolutionAction
    resolved_by: str
    reply_sent: bool = Field(description="False when the workflow accepted the resolution but is still sending")
    conversation_status: ConversationStatus | None
    reply_message_ids: list[str]
    delivery_status: DeliveryStatus | None = Field(
        default=None,
        description=(
            "What happened to the reply, over all its parts: pending (still sending), queued, sent, "
            "delivered, read, failed, undelivered, or not_configured (the channel has no credentials: "
            "recorded, not sent); null while the workflow has not sent it yet"
        ),
    )
