"""Internal notes on conversations: what agents tell each other, never the customer.

Notes live in `conversation_notes`, not in `messages`, so nothing that reads messages (the model's
transcript, the customer's ticket page, the reply pipeline) can ever pick one up.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_COLUMNS = "id, conversation_id, author, body, created_at"


@dataclass(frozen=True)
class NoteRecord:
    """One internal note."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    author: str
    body: str
    created_at: datetime


async def add_note(
    session: AsyncSession, *, conversation_id: uuid.UUID, author: str, body: str, api_key_id: uuid.UUID | None
) -> NoteRecord:
    """Store a note on a conversation (the caller checked the conversation exists)."""
    row = (
        await session.execute(
            text(
                "INSERT INTO conversation_notes (conversation_id, api_key_id, author, body) "
                f"VALUES (:c, :k, :a, :b) RETURNING {_COLUMNS}"
            ),
            {"c": conversation_id, "k": api_key_id, "a": author, "b": body},
        )
    ).one()
    return NoteRecord(**row._mapping)


async def notes_of(session: AsyncSession, *, conversation_ids: Sequence[uuid.UUID]) -> list[NoteRecord]:
    """The notes on these conversations, oldest first."""
    rows = await session.execute(
        text(f"SELECT {_COLUMNS} FROM conversation_notes WHERE conversation_id = ANY(:ids) ORDER BY created_at, id"),
        {"ids": list(conversation_ids)},
    )
    return [NoteRecord(**r._mapping) for r in rows]
