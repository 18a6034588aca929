"""Messages: every message in or out, on any channel."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.vocabulary import DELIVERY_PROGRESS, Channel, DeliveryStatus, MessageDirection, MessageRole
from crm.models import Conversation, Message


@dataclass(frozen=True)
class InboundRecorded:
    """The stored inbound message; `duplicate` when the provider delivered it before."""

    message_id: str
    duplicate: bool


@dataclass(frozen=True)
class TranscriptLine:
    """One message of a conversation as the model reads it."""

    direction: str
    role: str
    content: str


async def record_inbound(
    session: AsyncSession,
    *,
    conversation_id: str,
    channel: Channel,
    content: str,
    external_message_id: str,
    attachments: list[dict[str, Any]],
    attributes: dict[str, Any],
    received_at: datetime,
) -> InboundRecorded:
    """Store a customer's message once: a redelivery (same channel and provider id) returns the first row."""
    new_id = await session.scalar(
        text(
            "INSERT INTO messages (conversation_id, channel, direction, role, content, external_message_id, "
            "delivery_status, attachments, attributes, created_at) "
            "VALUES (:conv, :ch, 'inbound', 'customer', :content, :ext, 'received', "
            "CAST(:att AS jsonb), CAST(:attr AS jsonb), :at) "
            "ON CONFLICT (channel, external_message_id) WHERE direction = 'inbound' DO NOTHING RETURNING id"
        ),
        {
            "conv": conversation_id,
            "ch": channel,
            "content": content,
            "ext": external_message_id,
            "att": json.dumps(attachments, default=str),
            "attr": json.dumps(attributes, default=str),
            "at": received_at,
        },
    )
    if new_id is not None:
        return InboundRecorded(message_id=str(new_id), duplicate=False)
    existing = (
        await session.execute(
            select(Message.id).where(
                Message.channel == channel,
                Message.external_message_id == external_message_id,
                Message.direction == "inbound",
            )
        )
    ).scalar_one()
    return InboundRecorded(message_id=str(existing), duplicate=True)


async def recent_transcript(session: AsyncSession, *, conversation_id: str, limit: int = 16) -> list[TranscriptLine]:
    """The conversation's last `limit` messages, oldest first."""
    rows = await session.execute(
        text(
            "SELECT direction, role, content FROM (SELECT direction, role, content, created_at "
            "FROM messages WHERE conversation_id = :c ORDER BY created_at DESC LIMIT :n) m ORDER BY created_at"
        ),
        {"c": conversation_id, "n": limit},
    )
    return [TranscriptLine(direction=r.direction, role=r.role, content=r.content) for r in rows]


# --- used by guardrails
async def contents_by_ids(session: AsyncSession, *, message_ids: Sequence[str]) -> list[str]:
    """The bodies of these messages, oldest first (unknown ids are skipped)."""
    rows = await session.scalars(
        select(Message.content)
        .where(Message.id.in_([uuid.UUID(str(m)) for m in message_ids]))
        .order_by(Message.created_at)
    )
    return list(rows)


# --- used by channels
@dataclass(frozen=True)
class OutboundRecord:
    """A recorded outbound message, with the addresses its channel may need."""

    message_id: str
    conversation_id: str
    channel: Channel
    content: str
    delivery_status: str
    provider_message_id: str | None
    attributes: dict[str, Any]
    customer_email: str | None
    customer_phone: str | None
    conversation_key: str


async def reply_part_ids(session: AsyncSession, *, idempotency_key: str) -> list[str]:
    """The ids of the reply recorded under this key (one per part, in order); empty if none yet."""
    rows = await session.execute(
        text(
            "SELECT id FROM messages WHERE split_part(idempotency_key, '#', 1) = :k "
            "ORDER BY (attributes->>'part')::int NULLS FIRST"
        ),
        {"k": idempotency_key},
    )
    return [str(r.id) for r in rows]


async def record_outbound(
    session: AsyncSession,
    *,
    conversation_id: str,
    channel: Channel,
    role: str,
    content: str,
    idempotency_key: str,
    attributes: dict[str, Any],
) -> str:
    """Record one outbound message as `pending`, before anything is sent; returns its id."""
    new_id = await session.scalar(
        text(
            "INSERT INTO messages (conversation_id, channel, direction, role, content, idempotency_key, "
            "delivery_status, attributes) VALUES (:c, :ch, 'outbound', :role, :content, :key, 'pending', "
            "CAST(:attr AS jsonb)) RETURNING id"
        ),
        {
            "c": conversation_id,
            "ch": channel,
            "role": role,
            "content": content,
            "key": idempotency_key,
            "attr": json.dumps(attributes),
        },
    )
    return str(new_id)


async def get_outbound(session: AsyncSession, *, message_id: str) -> OutboundRecord | None:
    """The outbound message with its conversation key and its customer's email and phone; None if unknown."""
    row = (
        await session.execute(
            text(
                "SELECT m.id, m.conversation_id, m.channel, m.content, m.delivery_status, m.provider_message_id, "
                "m.attributes, cu.email, cu.phone, c.conversation_key FROM messages m "
                "JOIN conversations c ON c.id = m.conversation_id JOIN customers cu ON cu.id = c.customer_id "
                "WHERE m.id = :id AND m.direction = 'outbound'"
            ),
            {"id": message_id},
        )
    ).one_or_none()
    if row is None:
        return None
    return OutboundRecord(
        message_id=str(row.id),
        conversation_id=str(row.conversation_id),
        channel=row.channel,
        content=row.content,
        delivery_status=row.delivery_status,
        provider_message_id=row.provider_message_id,
        attributes=dict(row.attributes or {}),
        customer_email=row.email,
        customer_phone=row.phone,
        conversation_key=row.conversation_key,
    )


async def latest_inbound_attributes(
    session: AsyncSession, *, conversation_id: str, channel: Channel
) -> dict[str, Any] | None:
    """The attributes of the customer's latest message on `channel` in this conversation; None if none."""
    attributes = await session.scalar(
        text(
            "SELECT attributes FROM messages WHERE conversation_id = :c AND direction = 'inbound' "
            "AND channel = :ch ORDER BY created_at DESC, updated_at DESC LIMIT 1"
        ),
        {"c": conversation_id, "ch": channel},
    )
    return dict(attributes) if attributes is not None else None


async def conversation_provider_ids(session: AsyncSession, *, message_id: str) -> set[str]:
    """Every provider message id recorded in the conversation of `message_id`."""
    rows = await session.scalars(
        text(
            "SELECT provider_message_id FROM messages WHERE provider_message_id IS NOT NULL "
            "AND conversation_id = (SELECT conversation_id FROM messages WHERE id = :id)"
        ),
        {"id": message_id},
    )
    return set(rows.all())


async def mark_send_attempted(session: AsyncSession, *, message_id: str, at: datetime) -> None:
    """Note on a pending message when a send was started: a later attempt looks for it before resending."""
    await session.execute(
        text(
            "UPDATE messages SET attributes = attributes || jsonb_build_object('send_attempted_at', "
            "CAST(:at AS text)) WHERE id = :id AND delivery_status = 'pending'"
        ),
        {"id": message_id, "at": at.isoformat()},
    )


async def record_send_result(
    session: AsyncSession, *, message_id: str, status: str, provider_message_id: str | None
) -> None:
    """The provider's answer for a pending message; a message already past `pending` is left as it is."""
    await session.execute(
        text(
            "UPDATE messages SET delivery_status = :s, provider_message_id = :p WHERE id = :id "
            "AND delivery_status = 'pending'"
        ),
        {"s": status, "p": provider_message_id, "id": message_id},
    )


# --- used by gateway
@dataclass(frozen=True)
class MessageView:
    """A message as the ticket page and the agent console show it."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    direction: MessageDirection
    role: MessageRole
    channel: Channel
    content: str
    delivery_status: DeliveryStatus
    created_at: datetime


async def latest_of_conversations(
    session: AsyncSession, *, conversation_ids: Sequence[uuid.UUID], per_conversation: int
) -> list[MessageView]:
    """The last `per_conversation` messages of each conversation, oldest first."""
    rows = await session.execute(
        text(
            "SELECT id, conversation_id, direction, role, channel, content, delivery_status, created_at FROM "
            "(SELECT conversation_id, id, direction, role, channel, content, delivery_status, created_at, "
            "row_number() OVER (PARTITION BY conversation_id ORDER BY created_at DESC, id DESC) AS rn "
            "FROM messages WHERE conversation_id = ANY(:ids)) m WHERE rn <= :n ORDER BY created_at, id"
        ),
        {"ids": list(conversation_ids), "n": per_conversation},
    )
    return [MessageView(**r._mapping) for r in rows]


async def thread(session: AsyncSession, *, conversation_id: uuid.UUID) -> list[MessageView]:
    """Every message of the conversation, oldest first."""
    rows = await session.execute(
        text(
            "SELECT id, conversation_id, direction, role, channel, content, delivery_status, created_at "
            "FROM messages WHERE conversation_id = :c ORDER BY created_at, id"
        ),
        {"c": conversation_id},
    )
    return [MessageView(**r._mapping) for r in rows]


# How far an outbound message got, as SQL: a provider's status callback may only move it forward.
_DELIVERY_RANK_SQL = (
    "CASE delivery_status "
    + " ".join(f"WHEN '{status}' THEN {rank}" for status, rank in DELIVERY_PROGRESS.items())
    + " ELSE 0 END"
)


async def advance_delivery_status(
    session: AsyncSession, *, provider_message_id: str, status: DeliveryStatus, error_code: str | None = None
) -> int:
    """Record a provider's delivery status for an outbound message, unless it already got as far or further.

    Compare-and-set in one UPDATE, so callbacks arriving out of order never move a status backwards;
    returns how many messages changed (0 for a stale or unknown callback).
    """
    result = await session.execute(
        text(
            f"UPDATE messages SET delivery_status = :s, attributes = attributes || CAST(:extra AS jsonb) "
            f"WHERE provider_message_id = :sid AND direction = 'outbound' AND ({_DELIVERY_RANK_SQL}) < :rank"
        ),
        {
            "s": status,
            "sid": provider_message_id,
            "rank": DELIVERY_PROGRESS.get(status, 0),
            "extra": json.dumps({"error_code": error_code} if error_code else {}),
        },
    )
    return int(getattr(result, "rowcount", 0))


# --- used by guardrails (issue 14)
async def record_language(session: AsyncSession, *, message_ids: Sequence[str], language: str) -> None:
    """The detected language (ISO 639-1) on these inbound messages and on their conversations."""
    ids = [uuid.UUID(str(m)) for m in message_ids]
    if not ids:
        return
    # One statement: the messages, then their conversations unless they already say so.
    marked = (
        update(Message).where(Message.id.in_(ids)).values(language=language).returning(Message.conversation_id)
    ).cte("marked")
    await session.execute(
        update(Conversation)
        .where(Conversation.id.in_(select(marked.c.conversation_id)), Conversation.language.is_distinct_from(language))
        .values(language=language)
    )
