"""Human agents' API keys (only the hash of each secret is stored) and the `human_actions` audit trail."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# The action a console's "open this conversation" is audited as; history views leave it out.
CONVERSATION_VIEWED = "conversation.viewed"

_KEY_COLUMNS = "id, name, key_prefix, scopes, created_at, revoked_at, last_used_at"


class ApiKeyInfo(BaseModel):
    """A key as operators see it: everything but the secret and its hash."""

    id: uuid.UUID
    name: str
    key_prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class StoredKey:
    """What authenticating a key needs: its hash to compare, and whose it is."""

    id: uuid.UUID
    name: str
    key_hash: str
    scopes: tuple[str, ...]
    revoked_at: datetime | None


@dataclass(frozen=True)
class HumanActionRecord:
    """One row of the audit trail."""

    agent_name: str
    action: str
    ticket_number: str | None
    conversation_id: uuid.UUID | None
    detail: dict[str, Any]
    created_at: datetime


async def has_active_key(session: AsyncSession, *, name: str) -> bool:
    """Whether `name` holds an unrevoked key (one per person: the name signs their replies)."""
    found = await session.scalar(text("SELECT 1 FROM api_keys WHERE name = :n AND revoked_at IS NULL"), {"n": name})
    return found is not None


async def insert_api_key(
    session: AsyncSession, *, name: str, key_prefix: str, key_hash: str, scopes: Sequence[str]
) -> ApiKeyInfo:
    """Store a new key (its prefix finds it, its hash checks it)."""
    row = (
        await session.execute(
            text(
                "INSERT INTO api_keys (name, key_prefix, key_hash, scopes) VALUES (:n, :p, :h, :s) "
                f"RETURNING {_KEY_COLUMNS}"
            ),
            {"n": name, "p": key_prefix, "h": key_hash, "s": list(scopes)},
        )
    ).one()
    return ApiKeyInfo.model_validate(row._mapping)


async def list_api_keys(session: AsyncSession) -> list[ApiKeyInfo]:
    """Every key, active ones first, then by name and age."""
    rows = await session.execute(
        text(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY revoked_at IS NOT NULL, name, created_at")
    )
    return [ApiKeyInfo.model_validate(r._mapping) for r in rows]


async def revoke_active_key(session: AsyncSession, *, name: str) -> ApiKeyInfo | None:
    """Revoke the active key of `name`; None when there is none."""
    row = (
        await session.execute(
            text(
                "UPDATE api_keys SET revoked_at = now() WHERE name = :n AND revoked_at IS NULL "
                f"RETURNING {_KEY_COLUMNS}"
            ),
            {"n": name},
        )
    ).one_or_none()
    return ApiKeyInfo.model_validate(row._mapping) if row is not None else None


async def find_by_prefix(session: AsyncSession, *, key_prefix: str) -> StoredKey | None:
    """The key with this public prefix, revoked or not."""
    row = (
        await session.execute(
            text("SELECT id, name, key_hash, scopes, revoked_at FROM api_keys WHERE key_prefix = :p"),
            {"p": key_prefix},
        )
    ).one_or_none()
    if row is None:
        return None
    return StoredKey(
        id=row.id, name=row.name, key_hash=row.key_hash, scopes=tuple(row.scopes), revoked_at=row.revoked_at
    )


async def touch_last_used(session: AsyncSession, *, key_id: uuid.UUID, resolution: timedelta) -> None:
    """Set `last_used_at` to now, unless it was set less than `resolution` ago (it is a hint, not an audit)."""
    await session.execute(
        text(
            "UPDATE api_keys SET last_used_at = now() WHERE id = :id "
            "AND (last_used_at IS NULL OR last_used_at < now() - CAST(:gap AS interval))"
        ),
        {"id": key_id, "gap": resolution},
    )


async def record_human_action(
    session: AsyncSession,
    *,
    agent_name: str,
    action: str,
    api_key_id: uuid.UUID | None = None,
    ticket_number: str | None = None,
    conversation_id: uuid.UUID | str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one row to the audit trail: who, when (the row's time), what."""
    await session.execute(
        text(
            "INSERT INTO human_actions (api_key_id, agent_name, action, ticket_number, conversation_id, detail) "
            "VALUES (:k, :a, :act, :t, :c, CAST(:d AS jsonb))"
        ),
        {
            "k": api_key_id,
            "a": agent_name,
            "act": action,
            "t": ticket_number,
            "c": conversation_id,
            "d": json.dumps(detail or {}, default=str),
        },
    )


async def record_conversation_view(
    session: AsyncSession, *, api_key_id: uuid.UUID, agent_name: str, conversation_id: uuid.UUID, window: timedelta
) -> None:
    """Audit that an agent opened a conversation, unless the same key did within `window`.

    The row names the conversation's ticket, so the ticket's audit trail shows who looked at it.
    """
    await session.execute(
        text(
            "INSERT INTO human_actions (api_key_id, agent_name, action, conversation_id, ticket_number) "
            "SELECT CAST(:k AS uuid), CAST(:a AS text), CAST(:act AS text), CAST(:c AS uuid), "
            "(SELECT ticket_number FROM tickets WHERE conversation_id = CAST(:c AS uuid)) "
            "WHERE NOT EXISTS (SELECT 1 FROM human_actions WHERE api_key_id = CAST(:k AS uuid) "
            "AND conversation_id = CAST(:c AS uuid) AND action = CAST(:act AS text) "
            "AND created_at > now() - CAST(:window AS interval))"
        ),
        {"k": api_key_id, "a": agent_name, "act": CONVERSATION_VIEWED, "c": conversation_id, "window": window},
    )


async def human_actions_on(session: AsyncSession, *, conversation_ids: Sequence[uuid.UUID]) -> list[HumanActionRecord]:
    """What people did on these conversations, oldest first (views left out: they are only an access log)."""
    rows = await session.execute(
        text(
            "SELECT agent_name, action, ticket_number, conversation_id, detail, created_at FROM human_actions "
            "WHERE conversation_id = ANY(:ids) AND action <> :viewed ORDER BY created_at, id"
        ),
        {"ids": list(conversation_ids), "viewed": CONVERSATION_VIEWED},
    )
    return [HumanActionRecord(**r._mapping) for r in rows]
