"""Team-notification deliveries: one row per (idempotency key, sink), its attempts and its outcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from core.vocabulary import NotificationDeliveryStatus, NotificationKind, NotificationSink

# A sink's error text is kept short: it is for a person reading the row, not a log.
_ERROR_MAX_CHARS = 500


@dataclass(frozen=True)
class NotificationDeliveryRow:
    """One notification's delivery to one sink."""

    idempotency_key: str
    sink: NotificationSink
    kind: NotificationKind
    conversation_id: str
    status: NotificationDeliveryStatus
    attempts: int
    last_error: str | None
    provider_id: str | None
    created_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None


_COLUMNS = (
    "idempotency_key, sink, kind, conversation_id, status, attempts, last_error, provider_id, created_at, "
    "last_attempt_at, delivered_at"
)


async def begin_attempt(
    session: AsyncSession,
    *,
    idempotency_key: str,
    sink: NotificationSink,
    kind: NotificationKind,
    conversation_id: str,
    at: datetime,
) -> NotificationDeliveryRow:
    """The delivery's row (created on the first attempt), with this attempt counted unless it is settled.

    A `delivered` or `refused` row comes back unchanged: the caller sends nothing.
    """
    await session.execute(
        text(
            "INSERT INTO notification_deliveries (idempotency_key, sink, kind, conversation_id) "
            "VALUES (:k, :s, :kind, :c) ON CONFLICT (idempotency_key, sink) DO NOTHING"
        ),
        {"k": idempotency_key, "s": sink, "kind": kind, "c": conversation_id},
    )
    row = (
        await session.execute(
            text(
                "UPDATE notification_deliveries SET "
                "attempts = attempts + CASE WHEN status = 'pending' THEN 1 ELSE 0 END, "
                "last_attempt_at = CASE WHEN status = 'pending' THEN :at ELSE last_attempt_at END "
                f"WHERE idempotency_key = :k AND sink = :s RETURNING {_COLUMNS}"
            ),
            {"k": idempotency_key, "s": sink, "at": at},
        )
    ).one()
    return NotificationDeliveryRow(**row._mapping)


async def record_delivered(
    session: AsyncSession, *, idempotency_key: str, sink: NotificationSink, provider_id: str | None, at: datetime
) -> None:
    """The sink accepted the notification."""
    await session.execute(
        text(
            "UPDATE notification_deliveries SET status = 'delivered', delivered_at = :at, provider_id = :p, "
            "last_error = NULL WHERE idempotency_key = :k AND sink = :s AND status <> 'delivered'"
        ),
        {"k": idempotency_key, "s": sink, "p": provider_id, "at": at},
    )


async def record_failure(
    session: AsyncSession, *, idempotency_key: str, sink: NotificationSink, error: str, final: bool
) -> None:
    """An attempt failed: `final` (the sink refused it for good) settles the row as `refused`."""
    await session.execute(
        text(
            "UPDATE notification_deliveries SET last_error = :e, "
            "status = CASE WHEN :final THEN 'refused' ELSE status END "
            "WHERE idempotency_key = :k AND sink = :s AND status = 'pending'"
        ),
        {"k": idempotency_key, "s": sink, "e": error[:_ERROR_MAX_CHARS], "final": final},
    )


async def deliveries_of(session: AsyncSession, *, idempotency_key: str) -> list[NotificationDeliveryRow]:
    """Every sink's delivery of one notification."""
    rows = await session.execute(
        text(f"SELECT {_COLUMNS} FROM notification_deliveries WHERE idempotency_key = :k ORDER BY sink"),
        {"k": idempotency_key},
    )
    return [NotificationDeliveryRow(**r._mapping) for r in rows]
