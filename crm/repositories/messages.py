"""Messages: every message in or out, on any channel."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
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
    """The conversation's last `limit` messages in the order they arrived (`seq`: a channel's own
    timestamps can tie or run backwards, and the model must read the customer's latest message last)."""
    rows = await session.execute(
        text(
            "SELECT direction, role, content FROM (SELECT direction, role, content, seq "
            "FROM messages WHERE conversation_id = :c ORDER BY seq DESC LIMIT :n) m ORDER BY seq"
        ),
        {"c": conversation_id, "n": limit},
    )
    return [TranscriptLine(direction=r.direction, role=r.role, content=r.content) for r in rows]


# --- used by guardrails
async def contents_by_ids(session: AsyncSession, *, message_ids: Sequence[str]) -> list[str]:
    """The bodies of these messages in arrival order (unknown ids are skipped)."""
    rows = await session.scalars(
        select(Message.content).where(Message.id.in_([uuid.UUID(str(m)) for m in message_ids])).order_by(Message.seq)
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
    # Who wrote it: `agent` (the AI, holding messages) or `human_agent`.
    role: str = "agent"
    customer_id: str | None = None


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
                "m.attributes, m.role, cu.email, cu.phone, c.conversation_key, c.customer_id FROM messages m "
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
        role=row.role,
        customer_id=str(row.customer_id),
    )


async def latest_inbound_attributes(
    session: AsyncSession, *, conversation_id: str, channel: Channel
) -> dict[str, Any] | None:
    """The attributes of the customer's latest message on `channel` in this conversation; None if none."""
    attributes = await session.scalar(
        text(
            "SELECT attributes FROM messages WHERE conversation_id = :c AND direction = 'inbound' "
            "AND channel = :ch ORDER BY seq DESC LIMIT 1"
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


async def mark_send_attempted(
    session: AsyncSession, *, message_id: str, at: datetime, attributes: Mapping[str, Any] | None = None
) -> None:
    """Note on a pending message when a send was started: a later attempt looks for it before resending.

    `attributes` are merged in too (how the message is being sent, e.g. `sent_as`), so a retry
    sends it the same way.
    """
    await session.execute(
        text(
            "UPDATE messages SET attributes = attributes || CAST(:extra AS jsonb) || "
            "jsonb_build_object('send_attempted_at', CAST(:at AS text)) WHERE id = :id AND delivery_status = 'pending'"
        ),
        {"id": message_id, "at": at.isoformat(), "extra": json.dumps(dict(attributes or {}))},
    )


async def record_send_result(
    session: AsyncSession,
    *,
    message_id: str,
    status: str,
    provider_message_id: str | None,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """The provider's answer for a pending message (and `attributes` merged in); a message already
    past `pending` is left as it is."""
    await session.execute(
        text(
            "UPDATE messages SET delivery_status = :s, provider_message_id = :p, "
            "attributes = attributes || CAST(:extra AS jsonb) WHERE id = :id AND delivery_status = 'pending'"
        ),
        {"s": status, "p": provider_message_id, "id": message_id, "extra": json.dumps(dict(attributes or {}))},
    )


@dataclass(frozen=True)
class ReplyPart:
    """One part of a recorded reply (a long WhatsApp reply is sent as several messages)."""

    message_id: str
    part: int
    content: str
    delivery_status: str
    provider_message_id: str | None
    attributes: dict[str, Any]


async def reply_parts(session: AsyncSession, *, message_id: str) -> list[ReplyPart]:
    """Every part of the reply `message_id` belongs to (recorded under one idempotency key), in order."""
    rows = await session.execute(
        text(
            "SELECT m.id, m.content, m.delivery_status, m.provider_message_id, m.attributes FROM messages m "
            "JOIN messages me ON me.id = :id AND me.conversation_id = m.conversation_id "
            "WHERE m.direction = 'outbound' AND split_part(m.idempotency_key, '#', 1) = "
            "split_part(me.idempotency_key, '#', 1) ORDER BY (m.attributes->>'part')::int NULLS FIRST, m.seq"
        ),
        {"id": message_id},
    )
    return [
        ReplyPart(
            message_id=str(r.id),
            part=int((r.attributes or {}).get("part") or 1),
            content=r.content,
            delivery_status=r.delivery_status,
            provider_message_id=r.provider_message_id,
            attributes=dict(r.attributes or {}),
        )
        for r in rows
    ]


async def whatsapp_last_inbound_at(session: AsyncSession, *, conversation_id: str | uuid.UUID) -> datetime | None:
    """When the customer last wrote to us on WhatsApp from this conversation's number (any conversation).

    WhatsApp's 24-hour window is per number: the reply goes to the conversation key (the number).
    """
    found: datetime | None = await session.scalar(
        text(
            "SELECT max(m.created_at) FROM messages m JOIN conversations c ON c.id = m.conversation_id "
            "WHERE m.direction = 'inbound' AND m.channel = 'whatsapp' AND c.channel = 'whatsapp' AND "
            "c.conversation_key = (SELECT conversation_key FROM conversations WHERE id = :c AND channel = 'whatsapp')"
        ),
        {"c": str(conversation_id)},
    )
    return found


async def record_reply_notice(session: AsyncSession, *, message_id: str, notice: dict[str, Any]) -> None:
    """What became of the email telling a web-form customer about this reply (attribute `reply_notice`)."""
    await session.execute(
        text(
            "UPDATE messages SET attributes = attributes || jsonb_build_object('reply_notice', CAST(:n AS jsonb)) "
            "WHERE id = :id AND direction = 'outbound'"
        ),
        {"id": message_id, "n": json.dumps(notice)},
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
            "seq, row_number() OVER (PARTITION BY conversation_id ORDER BY seq DESC) AS rn "
            "FROM messages WHERE conversation_id = ANY(:ids)) m WHERE rn <= :n ORDER BY seq"
        ),
        {"ids": list(conversation_ids), "n": per_conversation},
    )
    return [MessageView(**r._mapping) for r in rows]


async def thread(session: AsyncSession, *, conversation_id: uuid.UUID) -> list[MessageView]:
    """Every message of the conversation, oldest first."""
    rows = await session.execute(
        text(
            "SELECT id, conversation_id, direction, role, channel, content, delivery_status, created_at "
            "FROM messages WHERE conversation_id = :c ORDER BY seq"
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


@dataclass(frozen=True)
class ArrivedMessage:
    """A message with its arrival number (`seq`): what the console's live stream sends."""

    seq: int
    id: uuid.UUID
    direction: MessageDirection
    role: str
    channel: Channel
    content: str
    delivery_status: DeliveryStatus
    created_at: datetime


async def arrived_after(
    session: AsyncSession, *, conversation_id: uuid.UUID, after_seq: int, limit: int = 100
) -> list[ArrivedMessage]:
    """The conversation's messages that arrived after `after_seq`, in arrival order."""
    rows = await session.execute(
        text(
            "SELECT seq, id, direction, role, channel, content, delivery_status, created_at FROM messages "
            "WHERE conversation_id = :c AND seq > :after ORDER BY seq LIMIT :n"
        ),
        {"c": conversation_id, "after": after_seq, "n": limit},
    )
    return [ArrivedMessage(**r._mapping) for r in rows]
