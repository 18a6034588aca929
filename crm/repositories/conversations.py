"""Conversations: one row per support conversation, driven by exactly one workflow run at a time."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.vocabulary import Channel, ConversationOutcome, ConversationStatus
from crm.models import Conversation, Customer, CustomerIdentifier, Ticket
from crm.repositories.customers import CustomerContact

# The column is text; a longer subject (an email's) is cut rather than refused.
SUBJECT_MAX_LENGTH = 500


async def find_open(session: AsyncSession, *, conversation_key: str, channel: Channel) -> str | None:
    """The id of the conversation on this key and channel that is not closed yet, if any."""
    found = await session.scalar(
        select(Conversation.id).where(
            Conversation.conversation_key == conversation_key,
            Conversation.channel == channel,
            Conversation.status != "closed",
        )
    )
    return str(found) if found is not None else None


async def create_conversation(
    session: AsyncSession,
    *,
    customer_id: str,
    channel: Channel,
    conversation_key: str,
    workflow_id: str,
    workflow_run_id: str | None = None,
    subject: str | None = None,
) -> str:
    """A new open conversation; returns its id.

    The unique index on open keys (migration 0001) refuses a second open conversation on the same
    key; callers look for one with `find_open` first.
    """
    created = await session.scalar(
        insert(Conversation)
        .values(
            customer_id=customer_id,
            channel=channel,
            conversation_key=conversation_key,
            workflow_id=workflow_id,
            workflow_run_id=workflow_run_id,
            subject=(subject or "")[:SUBJECT_MAX_LENGTH] or None,
        )
        .returning(Conversation.id)
    )
    return str(created)


async def set_workflow_run(session: AsyncSession, *, conversation_id: str, run_id: str) -> None:
    """Record which workflow run drives the conversation now (a continue-as-new starts a new run)."""
    await session.execute(update(Conversation).where(Conversation.id == conversation_id).values(workflow_run_id=run_id))


async def mark_escalated(session: AsyncSession, *, conversation_id: str) -> None:
    """A human owns the conversation now."""
    await session.execute(update(Conversation).where(Conversation.id == conversation_id).values(status="escalated"))


async def end_escalation(session: AsyncSession, *, conversation_id: str, status: ConversationStatus) -> None:
    """Leave the escalated state (back to the AI, or resolved); a conversation not escalated is left alone."""
    await session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.status == "escalated")
        .values(status=status)
    )


async def close(
    session: AsyncSession, *, conversation_id: str, outcome: ConversationOutcome | None = None
) -> Channel | None:
    """Close the conversation; the first close time and the first outcome are kept when it is closed
    again. Returns the conversation's channel when this call gave it its outcome (None otherwise)."""
    row = (
        await session.execute(
            text(
                "UPDATE conversations c SET status = 'closed', ended_at = coalesce(c.ended_at, now()), "
                "outcome = coalesce(c.outcome, CAST(:o AS text)), "
                "outcome_at = CASE WHEN c.outcome IS NULL AND CAST(:o AS text) IS NOT NULL THEN now() "
                "  ELSE c.outcome_at END "
                "FROM conversations prev WHERE c.id = CAST(:c AS uuid) AND prev.id = c.id "
                "RETURNING c.channel, prev.outcome IS NULL AND CAST(:o AS text) IS NOT NULL AS decided"
            ),
            {"c": conversation_id, "o": outcome},
        )
    ).one_or_none()
    return row.channel if row is not None and row.decided else None


async def set_sentiment(session: AsyncSession, *, conversation_id: str, score: float) -> None:
    """The latest customer sentiment, clamped to the [-1, 1] the CHECK constraint allows."""
    await session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(sentiment_score=max(-1.0, min(1.0, score)))
    )


@dataclass(frozen=True)
class HistoryEntry:
    """One message of a customer's earlier conversation, with that conversation's facts."""

    channel: str
    status: str
    started_at: datetime
    ticket_number: str | None
    direction: str
    content: str


async def customer_history(
    session: AsyncSession, *, customer_id: str, excluding_conversation_id: str
) -> list[HistoryEntry]:
    """The last four messages of each of the customer's other conversations, newest first (24 at most)."""
    rows = await session.execute(
        text(
            "SELECT c.channel, c.status, c.started_at, t.ticket_number, m.direction, m.content "
            "FROM conversations c LEFT JOIN tickets t ON t.conversation_id = c.id "
            "JOIN LATERAL (SELECT direction, content, seq FROM messages "
            "  WHERE conversation_id = c.id ORDER BY seq DESC LIMIT 4) m ON true "
            "WHERE c.customer_id = :cust AND c.id <> :conv "
            "ORDER BY c.started_at DESC, m.seq DESC LIMIT 24"
        ),
        {"cust": customer_id, "conv": excluding_conversation_id},
    )
    return [
        HistoryEntry(
            channel=r.channel,
            status=r.status,
            started_at=r.started_at,
            ticket_number=r.ticket_number,
            direction=r.direction,
            content=r.content,
        )
        for r in rows
    ]


# --- used by channels
async def customer_name(session: AsyncSession, *, conversation_id: str) -> str | None:
    """The name to greet: the one this conversation's sender gave last, else the CRM's.

    A web form may name an existing customer by email without proving it, so the name typed in
    this conversation wins over the stored one.
    """
    name = await session.scalar(
        text(
            "SELECT coalesce((SELECT m.attributes->>'sender_name' FROM messages m "
            "WHERE m.conversation_id = c.id AND m.direction = 'inbound' ORDER BY m.seq DESC LIMIT 1), "
            "cu.name) "
            "FROM conversations c JOIN customers cu ON cu.id = c.customer_id WHERE c.id = :c"
        ),
        {"c": conversation_id},
    )
    return str(name) if name is not None else None


# --- used by gateway
async def customer_of(session: AsyncSession, *, conversation_id: uuid.UUID) -> uuid.UUID | None:
    """The id of the conversation's customer; None for no such conversation."""
    found = await session.scalar(select(Conversation.customer_id).where(Conversation.id == conversation_id))
    return uuid.UUID(str(found)) if found is not None else None


@dataclass(frozen=True)
class ConversationSummary:
    """One of a customer's conversations, as the agent console's history lists them."""

    id: uuid.UUID
    channel: Channel
    status: ConversationStatus
    subject: str | None
    started_at: datetime
    ended_at: datetime | None
    workflow_id: str
    sentiment_score: float | None


async def conversations_of_customer(
    session: AsyncSession, *, customer_id: uuid.UUID, always: uuid.UUID, limit: int
) -> list[ConversationSummary]:
    """The customer's `limit` most recent conversations, `always` among them, oldest first."""
    rows = await session.execute(
        text(
            "SELECT * FROM (SELECT id, channel, status, subject, started_at, ended_at, workflow_id, "
            "sentiment_score FROM conversations WHERE customer_id = :cu "
            "ORDER BY id = :c DESC, started_at DESC LIMIT :n) s ORDER BY started_at, id"
        ),
        {"cu": customer_id, "c": always, "n": limit},
    )
    return [ConversationSummary(**r._mapping) for r in rows]


# --- used by channels (issue 14: holding messages in the customer's language)
async def language_of(session: AsyncSession, *, conversation_id: str) -> str | None:
    """The conversation's detected language (ISO 639-1), or None when it was never told."""
    value = await session.scalar(select(Conversation.language).where(Conversation.id == conversation_id))
    return str(value) if value else None


async def open_customer(session: AsyncSession, *, conversation_key: str, channel: Channel) -> CustomerContact | None:
    """The customer of the open conversation on this key and channel, with the contact on their record."""
    row = (
        await session.execute(
            select(Customer.id, Customer.email, Customer.phone, Customer.name)
            .join(Conversation, Conversation.customer_id == Customer.id)
            .where(
                Conversation.conversation_key == conversation_key,
                Conversation.channel == channel,
                Conversation.status != "closed",
            )
        )
    ).one_or_none()
    if row is None:
        return None
    return CustomerContact(customer_id=str(row.id), email=row.email, phone=row.phone, name=row.name)


async def open_email_thread_of_ticket(session: AsyncSession, *, ticket_number: str, sender: str) -> str | None:
    """The Gmail thread of the open email conversation behind this ticket, when `sender` is one of
    its customer's verified email addresses; else None (anyone can type a ticket number)."""
    found = await session.scalar(
        select(Conversation.conversation_key)
        .join(Ticket, Ticket.conversation_id == Conversation.id)
        .join(
            CustomerIdentifier,
            (CustomerIdentifier.customer_id == Conversation.customer_id)
            & (CustomerIdentifier.identifier_type == "email")
            & (CustomerIdentifier.identifier_value == sender)
            & CustomerIdentifier.verified_at.is_not(None),
        )
        .where(
            Ticket.ticket_number == ticket_number,
            Conversation.channel == "email",
            Conversation.status != "closed",
        )
    )
    return str(found) if found is not None else None


@dataclass(frozen=True)
class OwnershipTarget:
    """Where a person's ownership action goes: the conversation's workflow, its ticket, who holds it."""

    conversation_id: uuid.UUID
    workflow_id: str
    status: ConversationStatus
    ticket_number: str | None
    assignee: str | None


async def ownership_target(session: AsyncSession, *, conversation_id: uuid.UUID) -> OwnershipTarget | None:
    """The conversation's workflow, ticket and current holder (from its open escalation); None if unknown."""
    row = (
        await session.execute(
            text(
                "SELECT c.id AS conversation_id, c.workflow_id, c.status, t.ticket_number, e.assignee "
                "FROM conversations c LEFT JOIN tickets t ON t.conversation_id = c.id "
                "LEFT JOIN escalations e ON e.conversation_id = c.id AND e.status = 'open' "
                "WHERE c.id = :c"
            ),
            {"c": conversation_id},
        )
    ).one_or_none()
    return OwnershipTarget(**row._mapping) if row is not None else None


async def max_message_seq(session: AsyncSession, *, conversation_id: uuid.UUID) -> int:
    """The arrival number of the conversation's latest message (0 when it has none)."""
    found = await session.scalar(
        text("SELECT coalesce(max(seq), 0) FROM messages WHERE conversation_id = :c"), {"c": conversation_id}
    )
    return int(found or 0)
