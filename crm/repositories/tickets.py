"""Tickets: one per conversation, numbered `TKT-0001` by the database."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.vocabulary import Channel, ConversationStatus, Priority, TicketCategory, TicketStatus
from crm.models import Ticket

SUBJECT_MAX_LENGTH = 500


@dataclass(frozen=True)
class TicketRef:
    """A ticket's id and its customer-facing number."""

    ticket_id: str
    ticket_number: str


@dataclass(frozen=True)
class TicketCreated:
    """The conversation's ticket; `created` is False when it already existed (a retried activity)."""

    ticket_id: str
    ticket_number: str
    created_at: datetime
    created: bool


async def next_ticket_number(session: AsyncSession) -> str:
    """Draw a ticket number before the ticket exists (the web form keys its conversation by it).

    Drawn from a sequence: never reused, even when the transaction rolls back.
    """
    number = await session.scalar(select(func.next_ticket_number()))
    return str(number)


async def create_ticket(
    session: AsyncSession,
    *,
    conversation_id: str,
    customer_id: str,
    channel: Channel,
    subject: str | None,
    category: TicketCategory = "other",
    priority: Priority = "medium",
    ticket_number: str | None = None,
    contact_email: str | None = None,
) -> TicketCreated:
    """The conversation's ticket, created once: a second call returns the existing one unchanged.

    `ticket_number` is drawn by the database unless the caller drew it already
    (`next_ticket_number`); `contact_email` is the address a web-form ticket page opens for.
    """
    values: dict[str, Any] = {
        "conversation_id": conversation_id,
        "customer_id": customer_id,
        "subject": (subject or "")[:SUBJECT_MAX_LENGTH] or None,
        "category": category,
        "priority": priority,
        "source_channel": channel,
        "contact_email": contact_email,
    }
    if ticket_number is not None:
        values["ticket_number"] = ticket_number
    # Look before inserting: an INSERT that meets the conflict has already evaluated the number's
    # column default, drawing from the sequence for nothing (web-form tickets, created by the gateway
    # before the workflow asks, skipped every other number).
    existing = (
        await session.execute(
            select(Ticket.id, Ticket.ticket_number, Ticket.created_at).where(Ticket.conversation_id == conversation_id)
        )
    ).one_or_none()
    if existing is not None:
        return TicketCreated(str(existing.id), existing.ticket_number, existing.created_at, created=False)
    created = (
        await session.execute(
            insert(Ticket)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[Ticket.conversation_id])
            .returning(Ticket.id, Ticket.ticket_number, Ticket.created_at)
        )
    ).one_or_none()
    if created is not None:
        return TicketCreated(str(created.id), created.ticket_number, created.created_at, created=True)
    # A concurrent call created it between the look and the insert.
    existing = (
        await session.execute(
            select(Ticket.id, Ticket.ticket_number, Ticket.created_at).where(Ticket.conversation_id == conversation_id)
        )
    ).one()
    return TicketCreated(str(existing.id), existing.ticket_number, existing.created_at, created=False)


async def find_for_conversation(session: AsyncSession, *, conversation_id: str) -> TicketRef | None:
    """The conversation's ticket (id and number), if it has one yet."""
    row = (
        await session.execute(select(Ticket.id, Ticket.ticket_number).where(Ticket.conversation_id == conversation_id))
    ).one_or_none()
    return TicketRef(ticket_id=str(row.id), ticket_number=row.ticket_number) if row is not None else None


async def classify(
    session: AsyncSession, *, conversation_id: str, category: TicketCategory | None, priority: Priority | None
) -> None:
    """Set the ticket's category and priority; None keeps what the ticket has."""
    await session.execute(
        update(Ticket)
        .where(Ticket.conversation_id == conversation_id)
        .values(
            category=category if category is not None else Ticket.category,
            priority=priority if priority is not None else Ticket.priority,
        )
    )


async def mark_escalated(session: AsyncSession, *, conversation_id: str, priority: Priority) -> None:
    """The ticket waits for a human, at the escalation's priority."""
    await session.execute(
        update(Ticket).where(Ticket.conversation_id == conversation_id).values(status="escalated", priority=priority)
    )


async def set_priority(session: AsyncSession, *, conversation_id: str, priority: Priority) -> None:
    """Follow the escalation's priority (raised when its SLA passes)."""
    await session.execute(update(Ticket).where(Ticket.conversation_id == conversation_id).values(priority=priority))


async def resume_after_escalation(session: AsyncSession, *, conversation_id: str) -> None:
    """A human answered: an escalated ticket is in progress again (any other status is left alone)."""
    await session.execute(
        update(Ticket)
        .where(Ticket.conversation_id == conversation_id, Ticket.status == "escalated")
        .values(status="in_progress")
    )


async def resolve_with_conversation(session: AsyncSession, *, conversation_id: str, notes: str) -> None:
    """The conversation closed: resolve its ticket, keeping the first resolution time and notes."""
    await session.execute(
        update(Ticket)
        .where(Ticket.conversation_id == conversation_id, Ticket.status.not_in(("resolved", "closed")))
        .values(
            status="resolved",
            resolved_at=func.coalesce(Ticket.resolved_at, func.now()),
            resolution_notes=func.coalesce(Ticket.resolution_notes, notes),
        )
    )


# --- used by gateway
@dataclass(frozen=True)
class TicketSummary:
    """A conversation's ticket as the agent console's history shows it."""

    conversation_id: uuid.UUID
    ticket_number: str
    status: TicketStatus
    category: TicketCategory
    priority: Priority
    subject: str | None
    created_at: datetime
    resolved_at: datetime | None


async def tickets_of(session: AsyncSession, *, conversation_ids: Sequence[uuid.UUID]) -> list[TicketSummary]:
    """The tickets of these conversations (one per conversation at most)."""
    rows = await session.execute(
        text(
            "SELECT conversation_id, ticket_number, status, category, priority, subject, created_at, resolved_at "
            "FROM tickets WHERE conversation_id = ANY(:ids)"
        ),
        {"ids": list(conversation_ids)},
    )
    return [TicketSummary(**r._mapping) for r in rows]


@dataclass(frozen=True)
class TicketPage:
    """A ticket as its status page shows it, with the workflow driving its conversation."""

    ticket_number: str
    status: TicketStatus
    source_channel: Channel
    category: TicketCategory
    priority: Priority
    subject: str | None
    created_at: datetime
    updated_at: datetime
    conversation_id: uuid.UUID | None
    workflow_id: str | None
    # The row's id (what a secure ticket link is derived from, core/ticket_links.py), the address
    # that filed the ticket, and whether its conversation is still open.
    ticket_id: uuid.UUID
    contact_email: str | None
    conversation_status: ConversationStatus | None


async def find_ticket(
    session: AsyncSession, *, ticket_number: str, contact_email: str | None = None, any_contact: bool = False
) -> TicketPage | None:
    """The ticket, if `contact_email` filed it (or for anyone with `any_contact`: a human agent)."""
    row = (
        await session.execute(
            text(
                "SELECT t.ticket_number, t.status, t.source_channel, t.category, t.priority, t.subject, "
                "t.created_at, t.updated_at, t.conversation_id, c.workflow_id, t.id AS ticket_id, "
                "t.contact_email, c.status AS conversation_status FROM tickets t "
                "LEFT JOIN conversations c ON c.id = t.conversation_id "
                # The address that filed the ticket, not any address linked to the customer:
                # records are unified on unverified identifiers (a phone typed into the form).
                "WHERE t.ticket_number = :n AND (:any OR t.contact_email = :e)"
            ),
            {"n": ticket_number, "e": contact_email, "any": any_contact},
        )
    ).one_or_none()
    return TicketPage(**row._mapping) if row is not None else None


async def find_by_number(session: AsyncSession, *, ticket_number: str) -> TicketPage | None:
    """The ticket with this number, whoever filed it (the caller proves access another way: a ticket link)."""
    return await find_ticket(session, ticket_number=ticket_number, any_contact=True)


@dataclass(frozen=True)
class NoticeTarget:
    """Where a web-form reply notice goes: the ticket (its id signs the link) and the address that filed it."""

    ticket_id: uuid.UUID
    ticket_number: str
    contact_email: str | None
    source_channel: Channel


async def notice_target(session: AsyncSession, *, conversation_id: str) -> NoticeTarget | None:
    """The conversation's ticket as a reply notice needs it; None if it has no ticket."""
    row = (
        await session.execute(
            select(Ticket.id, Ticket.ticket_number, Ticket.contact_email, Ticket.source_channel).where(
                Ticket.conversation_id == conversation_id
            )
        )
    ).one_or_none()
    if row is None:
        return None
    return NoticeTarget(
        ticket_id=row.id,
        ticket_number=row.ticket_number,
        contact_email=row.contact_email,
        source_channel=row.source_channel,
    )


@dataclass(frozen=True)
class ResolutionTarget:
    """Where a human's resolution of a ticket goes: its conversation's workflow, and the open escalation."""

    ticket_number: str
    conversation_id: uuid.UUID
    workflow_id: str
    open_escalation_id: uuid.UUID | None


async def resolution_target(session: AsyncSession, *, ticket_number: str) -> ResolutionTarget | None:
    """The ticket's conversation and its open escalation (None if nothing is open); None for no such ticket."""
    row = (
        await session.execute(
            text(
                "SELECT t.ticket_number, c.id AS conversation_id, c.workflow_id, e.id AS open_escalation_id "
                "FROM tickets t JOIN conversations c ON c.id = t.conversation_id "
                "LEFT JOIN escalations e ON e.conversation_id = c.id AND e.status = 'open' "
                "WHERE t.ticket_number = :n"
            ),
            {"n": ticket_number},
        )
    ).one_or_none()
    return ResolutionTarget(**row._mapping) if row is not None else None
