"""Internal notes on conversations: what agents tell each other, never the customer.

Notes live in `conversation_notes`, not in `messages`, so nothing that reads messages (the model's
transcript, the customer's ticket page, the reply pipeline) can ever pick one up. The one kind the AI
reads is `hand_back`: what a person wrote when handing the conversation back to it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from core.vocabulary import NoteKind

_COLUMNS = "id, conversation_id, author, body, kind, created_at"


@dataclass(frozen=True)
class NoteRecord:
    """One internal note."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    author: str
    body: str
    kind: NoteKind
    created_at: datetime


async def add_note(
    session: AsyncSession,
    *,
    conversation_id: uuid.UUID,
    author: str,
    body: str,
    api_key_id: uuid.UUID | None,
    kind: NoteKind = "note",
) -> NoteRecord:
    """Store a note on a conversation (the caller checked the conversation exists)."""
    row = (
        await session.execute(
            text(
                "INSERT INTO conversation_notes (conversation_id, api_key_id, author, body, kind) "
                f"VALUES (:c, :k, :a, :b, :kind) RETURNING {_COLUMNS}"
            ),
            {"c": conversation_id, "k": api_key_id, "a": author, "b": body, "kind": kind},
        )
    ).one()
    return NoteRecord(**row._mapping)


async def hand_back_notes(session: AsyncSession, *, conversation_id: str, limit: int = 3) -> list[NoteRecord]:
    """The latest hand-back notes of a conversation (what people did before handing it to the AI), oldest first."""
    rows = await session.execute(
        text(
            f"SELECT {_COLUMNS} FROM (SELECT {_COLUMNS} FROM conversation_notes "
            "WHERE conversation_id = CAST(:c AS uuid) AND kind = 'hand_back' ORDER BY created_at DESC, id DESC "
            "LIMIT :n) n ORDER BY created_at, id"
        ),
        {"c": conversation_id, "n": limit},
    )
    return [NoteRecord(**r._mapping) for r in rows]


async def notes_of(session: AsyncSession, *, conversation_ids: Sequence[uuid.UUID]) -> list[NoteRecord]:
    """The notes on these conversations, oldest first."""
    rows = await session.execute(
        text(f"SELECT {_COLUMNS} FROM conversation_notes WHERE conversation_id = ANY(:ids) ORDER BY created_at, id"),
        {"ids": list(conversation_ids)},
    )
    return [NoteRecord(**r._mapping) for r in rows]
