"""Customer satisfaction ratings (CSAT): one per conversation, asked once after it closes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from core.vocabulary import Channel, RatingVia


@dataclass(frozen=True)
class RatingRecord:
    conversation_id: uuid.UUID
    channel: Channel
    score: int
    comment: str | None
    via: RatingVia
    created_at: datetime


async def record(
    session: AsyncSession, *, conversation_id: str, channel: Channel, score: int, comment: str | None, via: RatingVia
) -> bool:
    """Store the conversation's rating; True when this call stored it (a second rating is ignored)."""
    stored = await session.scalar(
        text(
            "INSERT INTO csat_ratings (conversation_id, channel, score, comment, via) "
            "VALUES (CAST(:c AS uuid), :ch, :s, :m, :v) ON CONFLICT (conversation_id) DO NOTHING RETURNING id"
        ),
        {"c": conversation_id, "ch": channel, "s": score, "m": comment, "v": via},
    )
    return stored is not None


async def of_conversations(session: AsyncSession, *, conversation_ids: list[uuid.UUID]) -> list[RatingRecord]:
    """The ratings of these conversations."""
    rows = await session.execute(
        text(
            "SELECT conversation_id, channel, score, comment, via, created_at FROM csat_ratings "
            "WHERE conversation_id = ANY(:ids) ORDER BY created_at"
        ),
        {"ids": conversation_ids},
    )
    return [RatingRecord(**r._mapping) for r in rows]
