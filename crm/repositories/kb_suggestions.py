"""Suggested knowledge-base entries: what a person answered when the AI found nothing (issue 17).

A resolved `no_answer` escalation whose conversation has a person's reply becomes one suggestion
(UNIQUE per escalation, so finding it twice is harmless). `unlearned_gaps` finds such escalations
with their question and answer messages; `insert_suggestion` stores one; the review functions move
a pending suggestion to `approved` (naming the knowledge-base article it became) or `rejected`;
`gaps_closed` counts the approvals in a time window for the daily report.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from core.vocabulary import Channel, KbSuggestionStatus

_COLUMNS = (
    "id, conversation_id, escalation_id, question, answer, status, edited_by, reviewed_by, reviewed_at, "
    "article_id, created_at, updated_at"
)


@dataclass(frozen=True)
class SuggestionRecord:
    """One suggested knowledge-base entry."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    escalation_id: uuid.UUID
    question: str
    answer: str
    status: KbSuggestionStatus
    edited_by: str | None
    reviewed_by: str | None
    reviewed_at: datetime | None
    article_id: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ReplyPart:
    """One stored part of a person's reply, as the channel formatted it."""

    content: str
    human_agent: str | None
    part: int = 1  # a long WhatsApp reply is recorded as parts 1, 2, ...


@dataclass(frozen=True)
class UnlearnedGap:
    """A resolved `no_answer` escalation with a person's reply and no suggestion yet."""

    escalation_id: uuid.UUID
    conversation_id: uuid.UUID
    channel: Channel
    ticket_number: str | None
    question_parts: list[str]
    reply_parts: list[ReplyPart]


# The question: the customer's messages after the last reply before the escalation, up to the first
# message recorded after it (the holding reply). The answer: the people's replies from the
# escalation until the conversation's next escalation (a later hand-off is another question). `seq`
# is the order the CRM recorded messages in (an inbound `created_at` is the provider's clock);
# outbound `created_at` is the database's, comparable with the escalation's.
_GAPS = """
SELECT e.id AS escalation_id, e.conversation_id, c.channel, t.ticket_number,
       coalesce((
           SELECT array_agg(q.content ORDER BY q.seq) FROM messages q
           WHERE q.conversation_id = e.conversation_id AND q.direction = 'inbound' AND q.role = 'customer'
             AND q.seq > coalesce((
                 SELECT max(o.seq) FROM messages o WHERE o.conversation_id = e.conversation_id
                   AND o.direction = 'outbound' AND o.created_at < e.created_at), 0)
             AND q.seq < coalesce((
                 SELECT min(o.seq) FROM messages o WHERE o.conversation_id = e.conversation_id
                   AND o.direction = 'outbound' AND o.created_at >= e.created_at), 9223372036854775807)
       ), ARRAY[]::text[]) AS question_parts,
       (
           SELECT array_agg(r.content ORDER BY r.seq) FROM messages r
           WHERE r.conversation_id = e.conversation_id AND r.direction = 'outbound' AND r.role = 'human_agent'
             AND r.created_at >= e.created_at AND r.created_at < coalesce(nxt.created_at, 'infinity')
       ) AS reply_parts,
       (
           SELECT array_agg(coalesce(r.attributes->>'human_agent', '') ORDER BY r.seq) FROM messages r
           WHERE r.conversation_id = e.conversation_id AND r.direction = 'outbound' AND r.role = 'human_agent'
             AND r.created_at >= e.created_at AND r.created_at < coalesce(nxt.created_at, 'infinity')
       ) AS reply_agents,
       (
           SELECT array_agg(coalesce(r.attributes->>'part', '1') ORDER BY r.seq) FROM messages r
           WHERE r.conversation_id = e.conversation_id AND r.direction = 'outbound' AND r.role = 'human_agent'
             AND r.created_at >= e.created_at AND r.created_at < coalesce(nxt.created_at, 'infinity')
       ) AS reply_part_numbers
FROM escalations e
JOIN conversations c ON c.id = e.conversation_id
LEFT JOIN tickets t ON t.id = e.ticket_id
LEFT JOIN LATERAL (
    SELECT n.created_at FROM escalations n
    WHERE n.conversation_id = e.conversation_id AND n.created_at > e.created_at
    ORDER BY n.created_at LIMIT 1
) AS nxt ON true
WHERE e.reason = 'no_answer' AND e.status = 'resolved'
  AND (CAST(:escalation_id AS uuid) IS NULL OR e.id = CAST(:escalation_id AS uuid))
  -- an erased customer's messages are redacted: nothing to learn from them
  AND c.conversation_key NOT LIKE 'erased:%'
  AND NOT EXISTS (SELECT 1 FROM kb_suggestions s WHERE s.escalation_id = e.id)
  AND EXISTS (
      SELECT 1 FROM messages r
      WHERE r.conversation_id = e.conversation_id AND r.direction = 'outbound' AND r.role = 'human_agent'
        AND r.created_at >= e.created_at AND r.created_at < coalesce(nxt.created_at, 'infinity')
  )
ORDER BY e.resolved_at, e.id
LIMIT :limit
"""


async def unlearned_gaps(
    session: AsyncSession, *, escalation_id: str | uuid.UUID | None = None, limit: int = 100
) -> list[UnlearnedGap]:
    """Resolved `no_answer` escalations with a person's reply and no suggestion yet (oldest first)."""
    rows = await session.execute(text(_GAPS), {"escalation_id": escalation_id, "limit": limit})
    gaps: list[UnlearnedGap] = []
    for row in rows.mappings():
        agents = list(row["reply_agents"] or [])
        numbers = [int(n) if n.isdigit() else 1 for n in row["reply_part_numbers"] or []]
        gaps.append(
            UnlearnedGap(
                escalation_id=row["escalation_id"],
                conversation_id=row["conversation_id"],
                channel=row["channel"],
                ticket_number=row["ticket_number"],
                question_parts=list(row["question_parts"] or []),
                reply_parts=[
                    ReplyPart(content=content, human_agent=agent or None, part=number)
                    for content, agent, number in zip(row["reply_parts"] or [], agents, numbers, strict=True)
                ],
            )
        )
    return gaps


async def insert_suggestion(
    session: AsyncSession, *, conversation_id: uuid.UUID, escalation_id: uuid.UUID, question: str, answer: str
) -> SuggestionRecord | None:
    """Store a pending suggestion; None when the escalation has one already (the unique key decides)."""
    row = (
        await session.execute(
            text(
                "INSERT INTO kb_suggestions (conversation_id, escalation_id, question, answer) "
                "VALUES (:c, :e, :q, :a) ON CONFLICT (escalation_id) DO NOTHING "
                f"RETURNING {_COLUMNS}"
            ),
            {"c": conversation_id, "e": escalation_id, "q": question, "a": answer},
        )
    ).one_or_none()
    return _record(row) if row is not None else None


def _record(row: Any) -> SuggestionRecord:
    return SuggestionRecord(**row._mapping)


async def list_suggestions(
    session: AsyncSession, *, status: KbSuggestionStatus | None, limit: int = 200
) -> list[SuggestionRecord]:
    """Suggestions (of one status, if given), oldest first: the review queue is worked in order."""
    rows = await session.execute(
        text(
            f"SELECT {_COLUMNS} FROM kb_suggestions WHERE (CAST(:s AS text) IS NULL OR status = CAST(:s AS text)) "
            "ORDER BY created_at, id LIMIT :limit"
        ),
        {"s": status, "limit": limit},
    )
    return [_record(r) for r in rows]


async def get_suggestion(
    session: AsyncSession, *, suggestion_id: uuid.UUID, for_update: bool = False
) -> SuggestionRecord | None:
    """One suggestion; `for_update` locks it until the transaction ends (a review decides once)."""
    lock = " FOR UPDATE" if for_update else ""
    row = (
        await session.execute(
            text(f"SELECT {_COLUMNS} FROM kb_suggestions WHERE id = :id{lock}"), {"id": suggestion_id}
        )
    ).one_or_none()
    return _record(row) if row is not None else None


async def edit_pending(
    session: AsyncSession, *, suggestion_id: uuid.UUID, question: str | None, answer: str | None, editor: str
) -> SuggestionRecord | None:
    """Change a pending suggestion's question and/or answer; None when it is not pending (or absent)."""
    row = (
        await session.execute(
            text(
                "UPDATE kb_suggestions SET question = coalesce(:q, question), answer = coalesce(:a, answer), "
                "edited_by = :by, updated_at = now() WHERE id = :id AND status = 'pending' "
                f"RETURNING {_COLUMNS}"
            ),
            {"q": question, "a": answer, "by": editor, "id": suggestion_id},
        )
    ).one_or_none()
    return _record(row) if row is not None else None


async def mark_reviewed(
    session: AsyncSession,
    *,
    suggestion_id: uuid.UUID,
    status: KbSuggestionStatus,
    reviewer: str,
    article_id: str | None = None,
) -> SuggestionRecord | None:
    """Approve (with the article it became) or reject a pending suggestion; None when it is not pending."""
    row = (
        await session.execute(
            text(
                "UPDATE kb_suggestions SET status = :s, reviewed_by = :by, reviewed_at = now(), article_id = :art, "
                f"updated_at = now() WHERE id = :id AND status = 'pending' RETURNING {_COLUMNS}"
            ),
            {"s": status, "by": reviewer, "art": article_id, "id": suggestion_id},
        )
    ).one_or_none()
    return _record(row) if row is not None else None


async def gaps_closed(session: AsyncSession, since: datetime, until: datetime) -> int:
    """How many suggestions were approved in [since, until): knowledge gaps closed by what people answered."""
    found = await session.scalar(
        text(
            "SELECT count(*) FROM kb_suggestions WHERE status = 'approved' "
            "AND reviewed_at >= :since AND reviewed_at < :until"
        ),
        {"since": since, "until": until},
    )
    return int(found or 0)
