"""Escalations: a conversation handed to a human, with its SLA; at most one open per conversation."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.vocabulary import PRIORITIES, Channel, EscalationReason, EscalationStatus, Priority, ResolutionAction
from crm.models import Escalation


@dataclass(frozen=True)
class EscalationRecord:
    """An escalation and where its SLA stands."""

    escalation_id: str
    conversation_id: str
    reason: EscalationReason
    priority: Priority
    sla_due_at: datetime
    notified_count: int


def _record(row: Any) -> EscalationRecord:
    return EscalationRecord(
        escalation_id=str(row.id),
        conversation_id=str(row.conversation_id),
        reason=row.reason,
        priority=row.priority,
        sla_due_at=row.sla_due_at,
        notified_count=row.notified_count,
    )


_COLUMNS = (
    Escalation.id,
    Escalation.conversation_id,
    Escalation.reason,
    Escalation.priority,
    Escalation.sla_due_at,
    Escalation.notified_count,
)


async def open_escalation(
    session: AsyncSession,
    *,
    conversation_id: str,
    ticket_id: str | None,
    reason: EscalationReason,
    priority: Priority,
    sla_due_at: datetime,
) -> bool:
    """Open an escalation unless one is open already; True when this call opened it.

    The unique partial index on open escalations (migration 0002) makes a retried activity a no-op.
    """
    inserted = await session.scalar(
        insert(Escalation)
        .values(
            conversation_id=conversation_id,
            ticket_id=ticket_id,
            reason=reason,
            priority=priority,
            sla_due_at=sla_due_at,
        )
        # The predicate is a literal, not a bind parameter: once asyncpg's prepared statement runs on
        # a generic plan, PostgreSQL cannot match `status = $n` to the partial index and refuses
        # the ON CONFLICT ("no unique or exclusion constraint matching").
        .on_conflict_do_nothing(index_elements=[Escalation.conversation_id], index_where=text("status = 'open'"))
        .returning(Escalation.id)
    )
    return inserted is not None


async def get_open(session: AsyncSession, *, conversation_id: str) -> EscalationRecord:
    """The conversation's open escalation (raises NoResultFound when there is none)."""
    row = (
        await session.execute(
            select(*_COLUMNS).where(Escalation.conversation_id == conversation_id, Escalation.status == "open")
        )
    ).one()
    return _record(row)


async def open_sla_due(session: AsyncSession, *, conversation_id: str) -> datetime | None:
    """When the conversation's open escalation is due, if it has one."""
    due: datetime | None = await session.scalar(
        select(Escalation.sla_due_at).where(Escalation.conversation_id == conversation_id, Escalation.status == "open")
    )
    return due


async def raise_priority(
    session: AsyncSession, *, escalation_id: str, priority: Priority, sla_due_at: datetime
) -> EscalationRecord:
    """The SLA passed: set the new priority and due time, and count one more notification.

    Guarded by the due time, so a retried call does not count the same breach twice.
    """
    record, _ = await raise_priority_after_breach(
        session, escalation_id=escalation_id, priority=priority, sla_due_at=sla_due_at
    )
    return record


async def raise_priority_after_breach(
    session: AsyncSession, *, escalation_id: str, priority: Priority, sla_due_at: datetime
) -> tuple[EscalationRecord, bool]:
    """`raise_priority`, plus whether this call counted a new breach (False for a retried call)."""
    row = (
        await session.execute(
            text(
                "UPDATE escalations e SET priority = :p, notified_count = e.notified_count + "
                "CASE WHEN e.sla_due_at < :due THEN 1 ELSE 0 END, sla_due_at = greatest(e.sla_due_at, :due) "
                "FROM (SELECT id, sla_due_at FROM escalations WHERE id = :id FOR UPDATE) AS before "
                "WHERE e.id = before.id RETURNING e.id, e.conversation_id, e.reason, e.priority, e.sla_due_at, "
                "e.notified_count, before.sla_due_at < :due AS new_breach"
            ),
            {"p": priority, "id": escalation_id, "due": sla_due_at},
        )
    ).one()
    return _record(row), bool(row.new_breach)


async def resolve(session: AsyncSession, *, escalation_id: str, resolved_by: str, action: ResolutionAction) -> bool:
    """Record who resolved the escalation, how and when; one already resolved keeps its first resolution.

    True when this call resolved it (False: it already was, e.g. a retried activity's second attempt).
    """
    result = await session.execute(
        update(Escalation)
        .where(Escalation.id == escalation_id, Escalation.status == "open")
        .values(status="resolved", resolved_by=resolved_by, resolution_action=action, resolved_at=func.now())
        .returning(Escalation.id)
    )
    return result.first() is not None


async def assign(session: AsyncSession, *, escalation_id: str, assignee: str | None, responded: bool) -> None:
    """Mirror the workflow's assignee of an open escalation (None: back in the queue); `responded` stores
    a person's first reply once (the SLA is met from then on)."""
    await session.execute(
        text(
            "UPDATE escalations SET assignee = CAST(:a AS text), "
            "assigned_at = CASE WHEN CAST(:a AS text) IS NULL THEN NULL "
            "  WHEN assignee IS NOT DISTINCT FROM CAST(:a AS text) THEN assigned_at ELSE now() END, "
            "responded_at = CASE WHEN :r AND responded_at IS NULL THEN now() ELSE responded_at END "
            "WHERE id = CAST(:e AS uuid) AND status = 'open'"
        ),
        {"e": escalation_id, "a": assignee, "r": responded},
    )


async def last_resolved_id(
    session: AsyncSession, *, conversation_id: str, reason: EscalationReason
) -> uuid.UUID | None:
    """The conversation's most recently resolved escalation with this reason; None if there is none."""
    found = await session.scalar(
        text(
            "SELECT id FROM escalations WHERE conversation_id = CAST(:c AS uuid) AND reason = :r "
            "AND status = 'resolved' ORDER BY resolved_at DESC NULLS LAST, created_at DESC LIMIT 1"
        ),
        {"c": conversation_id, "r": reason},
    )
    return uuid.UUID(str(found)) if found is not None else None


# --- used by gateway
@dataclass(frozen=True)
class QueueEntry:
    """An open escalation as the human queue lists it: its ticket, its customer, their last message."""

    escalation_id: uuid.UUID
    reason: EscalationReason
    priority: Priority
    sla_due_at: datetime
    overdue: bool
    notified_count: int
    created_at: datetime
    # Who owns it (None: waiting for someone to claim it), and when a person first replied.
    assignee: str | None
    responded_at: datetime | None
    ticket_number: str | None
    subject: str | None
    conversation_id: uuid.UUID
    channel: Channel
    workflow_id: str
    customer_id: uuid.UUID
    customer_name: str | None
    customer_email: str | None
    customer_phone: str | None
    last_customer_message: str | None
    last_customer_message_at: datetime | None


@dataclass(frozen=True)
class QueueFilters:
    """What narrows the queue; None (or empty) leaves that dimension open."""

    channels: Sequence[Channel] = ()
    reasons: Sequence[EscalationReason] = ()
    priorities: Sequence[Priority] = ()
    # True: only those whose SLA due time has passed; False: only those still within it.
    breached: bool | None = None
    # Part of a ticket number, e.g. "0042" or "tkt-0042" (letters, digits and '-' only: checked by the caller).
    ticket: str | None = None
    # Only those this person owns ("mine").
    assignee: str | None = None
    # Only those nobody owns yet.
    unassigned: bool = False


@dataclass(frozen=True)
class QueueCounts:
    """How many open escalations the filters match, per priority, and how many have breached their SLA."""

    total: int
    breached: int
    by_priority: dict[Priority, int]


# Most urgent first: the vocabulary lists priorities low to high.
_PRIORITY_RANK = tuple(reversed(PRIORITIES))

_QUEUE_FROM = (
    "FROM escalations e JOIN conversations c ON c.id = e.conversation_id "
    "JOIN customers cu ON cu.id = c.customer_id "
    "LEFT JOIN tickets t ON t.conversation_id = c.id "
)
# Past its SLA: due, and no person has answered yet (a person's first reply meets the SLA).
_OVERDUE = "(e.responded_at IS NULL AND e.sla_due_at < now())"
_QUEUE_WHERE = (
    "WHERE e.status = 'open' "
    "AND (cardinality(CAST(:channels AS text[])) = 0 OR c.channel = ANY(CAST(:channels AS text[]))) "
    "AND (cardinality(CAST(:reasons AS text[])) = 0 OR e.reason = ANY(CAST(:reasons AS text[]))) "
    "AND (cardinality(CAST(:priorities AS text[])) = 0 OR e.priority = ANY(CAST(:priorities AS text[]))) "
    f"AND (CAST(:breached AS boolean) IS NULL OR {_OVERDUE} = CAST(:breached AS boolean)) "
    "AND (CAST(:ticket AS text) IS NULL OR t.ticket_number ILIKE '%' || CAST(:ticket AS text) || '%') "
    "AND (CAST(:assignee AS text) IS NULL OR e.assignee = CAST(:assignee AS text)) "
    "AND (NOT CAST(:unassigned AS boolean) OR e.assignee IS NULL) "
)


def _filter_params(filters: QueueFilters) -> dict[str, Any]:
    return {
        "channels": list(filters.channels),
        "reasons": list(filters.reasons),
        "priorities": list(filters.priorities),
        "breached": filters.breached,
        "ticket": filters.ticket or None,
        "assignee": filters.assignee or None,
        "unassigned": filters.unassigned,
    }


async def open_queue(session: AsyncSession, *, limit: int, filters: QueueFilters | None = None) -> list[QueueEntry]:
    """Open escalations the filters match: most urgent first, then the SLA due soonest, then the oldest."""
    rows = await session.execute(
        text(
            f"SELECT e.id AS escalation_id, e.reason, e.priority, e.sla_due_at, {_OVERDUE} AS overdue, "
            "e.notified_count, e.created_at, e.assignee, e.responded_at, t.ticket_number, "
            "coalesce(t.subject, c.subject) AS subject, "
            "c.id AS conversation_id, c.channel, c.workflow_id, cu.id AS customer_id, cu.name AS customer_name, "
            "cu.email AS customer_email, cu.phone AS customer_phone, "
            "lm.content AS last_customer_message, lm.created_at AS last_customer_message_at "
            + _QUEUE_FROM
            + "LEFT JOIN LATERAL (SELECT content, created_at FROM messages m WHERE m.conversation_id = c.id "
            "  AND m.direction = 'inbound' ORDER BY m.seq DESC LIMIT 1) lm ON true "
            + _QUEUE_WHERE
            + "ORDER BY array_position(CAST(:rank AS text[]), e.priority), e.sla_due_at, e.created_at, e.id "
            "LIMIT :limit"
        ),
        {**_filter_params(filters or QueueFilters()), "rank": list(_PRIORITY_RANK), "limit": limit},
    )
    return [QueueEntry(**r._mapping) for r in rows]


async def queue_counts(session: AsyncSession, *, filters: QueueFilters | None = None) -> QueueCounts:
    """How many open escalations the filters match (whatever a listing's limit), per priority and breached."""
    rows = await session.execute(
        text(
            f"SELECT e.priority, count(*) AS n, count(*) FILTER (WHERE {_OVERDUE}) AS breached "
            + _QUEUE_FROM
            + _QUEUE_WHERE
            + "GROUP BY e.priority"
        ),
        _filter_params(filters or QueueFilters()),
    )
    by_priority: dict[Priority, int] = {p: 0 for p in _PRIORITY_RANK}
    breached = 0
    for row in rows:
        by_priority[row.priority] = row.n
        breached += row.breached
    return QueueCounts(total=sum(by_priority.values()), breached=breached, by_priority=by_priority)


@dataclass(frozen=True)
class EscalationSummary:
    """An escalation, open or resolved, as a conversation's history and its ticket page show it."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    reason: EscalationReason
    priority: Priority
    status: EscalationStatus
    sla_due_at: datetime
    created_at: datetime
    resolved_by: str | None
    resolution_action: ResolutionAction | None
    resolved_at: datetime | None
    assignee: str | None
    responded_at: datetime | None


_SUMMARY_COLUMNS = (
    "id, conversation_id, reason, priority, status, sla_due_at, created_at, resolved_by, resolution_action, "
    "resolved_at, assignee, responded_at"
)


async def escalations_of(session: AsyncSession, *, conversation_ids: Sequence[uuid.UUID]) -> list[EscalationSummary]:
    """Every escalation of these conversations, oldest first."""
    rows = await session.execute(
        text(f"SELECT {_SUMMARY_COLUMNS} FROM escalations WHERE conversation_id = ANY(:ids) ORDER BY created_at"),
        {"ids": list(conversation_ids)},
    )
    return [EscalationSummary(**r._mapping) for r in rows]


async def latest_of_conversation(session: AsyncSession, *, conversation_id: uuid.UUID) -> EscalationSummary | None:
    """The conversation's most recent escalation, open or resolved; None if it was never escalated."""
    row = (
        await session.execute(
            text(
                f"SELECT {_SUMMARY_COLUMNS} FROM escalations WHERE conversation_id = :c "
                "ORDER BY created_at DESC LIMIT 1"
            ),
            {"c": conversation_id},
        )
    ).one_or_none()
    return EscalationSummary(**row._mapping) if row is not None else None
