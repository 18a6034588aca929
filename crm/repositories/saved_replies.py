"""The team's saved replies: a title (unique whatever its case) and a body with placeholders."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_COLUMNS = "id, title, body, created_by, updated_by, created_at, updated_at"


@dataclass(frozen=True)
class SavedReplyRecord:
    """One saved reply."""

    id: uuid.UUID
    title: str
    body: str
    created_by: str
    updated_by: str
    created_at: datetime
    updated_at: datetime


async def list_saved_replies(session: AsyncSession) -> list[SavedReplyRecord]:
    """Every saved reply, by title."""
    rows = await session.execute(text(f"SELECT {_COLUMNS} FROM saved_replies ORDER BY lower(title), id"))
    return [SavedReplyRecord(**r._mapping) for r in rows]


async def get_saved_reply(session: AsyncSession, *, saved_reply_id: uuid.UUID) -> SavedReplyRecord | None:
    """One saved reply by id."""
    row = (
        await session.execute(text(f"SELECT {_COLUMNS} FROM saved_replies WHERE id = :id"), {"id": saved_reply_id})
    ).one_or_none()
    return SavedReplyRecord(**row._mapping) if row is not None else None


async def title_taken(session: AsyncSession, *, title: str, except_id: uuid.UUID | None = None) -> bool:
    """Whether another saved reply has this title (case-insensitive)."""
    found = await session.scalar(
        text(
            "SELECT 1 FROM saved_replies WHERE lower(title) = lower(:t) "
            "AND (CAST(:x AS uuid) IS NULL OR id <> CAST(:x AS uuid))"
        ),
        {"t": title, "x": except_id},
    )
    return found is not None


async def insert_saved_reply(session: AsyncSession, *, title: str, body: str, author: str) -> SavedReplyRecord | None:
    """Store a saved reply; None when the title is taken (the unique index decides, race-free)."""
    row = (
        await session.execute(
            text(
                "INSERT INTO saved_replies (title, body, created_by, updated_by) VALUES (:t, :b, :a, :a) "
                f"ON CONFLICT ((lower(title))) DO NOTHING RETURNING {_COLUMNS}"
            ),
            {"t": title, "b": body, "a": author},
        )
    ).one_or_none()
    return SavedReplyRecord(**row._mapping) if row is not None else None


async def update_saved_reply(
    session: AsyncSession, *, saved_reply_id: uuid.UUID, title: str | None, body: str | None, author: str
) -> SavedReplyRecord | None:
    """Change the title and/or the body; None when there is no such saved reply."""
    row = (
        await session.execute(
            text(
                "UPDATE saved_replies SET title = coalesce(:t, title), body = coalesce(:b, body), updated_by = :a "
                f"WHERE id = :id RETURNING {_COLUMNS}"
            ),
            {"t": title, "b": body, "a": author, "id": saved_reply_id},
        )
    ).one_or_none()
    return SavedReplyRecord(**row._mapping) if row is not None else None


async def delete_saved_reply(session: AsyncSession, *, saved_reply_id: uuid.UUID) -> SavedReplyRecord | None:
    """Delete a saved reply and return what it was; None when there is no such saved reply."""
    row = (
        await session.execute(
            text(f"DELETE FROM saved_replies WHERE id = :id RETURNING {_COLUMNS}"), {"id": saved_reply_id}
        )
    ).one_or_none()
    return SavedReplyRecord(**row._mapping) if row is not None else None
