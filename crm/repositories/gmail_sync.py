"""Gmail sync state: the support mailbox's history cursor and its push-watch expiry (one row per mailbox)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class WatchRecord:
    """The mailbox's stored cursor after a watch renewal, and whether this renewal stored it."""

    history_id: int
    baseline_stored: bool


async def get_history_id(session: AsyncSession, *, mailbox: str) -> int | None:
    """The last processed historyId of `mailbox`, or None before a baseline exists."""
    value = await session.scalar(text("SELECT history_id FROM gmail_sync_state WHERE mailbox = :m"), {"m": mailbox})
    return int(value) if value is not None else None


async def advance_history_id(session: AsyncSession, *, mailbox: str, history_id: int) -> None:
    """Store `history_id` as the cursor, creating the row if needed; never moves it backwards.

    Concurrent pushes may finish out of order, so the larger of the stored and the new id wins.
    """
    await session.execute(
        text(
            "INSERT INTO gmail_sync_state (mailbox, history_id) VALUES (:m, :h) ON CONFLICT (mailbox) "
            "DO UPDATE SET history_id = GREATEST(gmail_sync_state.history_id, EXCLUDED.history_id), "
            "updated_at = now()"
        ),
        {"m": mailbox, "h": history_id},
    )


async def record_watch(
    session: AsyncSession, *, mailbox: str, history_id: int, expiration: datetime | None
) -> WatchRecord:
    """Record a renewed watch's expiry; `history_id` becomes the cursor only if none is stored yet.

    An existing cursor is never touched: the pushes own it, and the watch's historyId would skip
    mail they have not processed yet.
    """
    # xmax = 0 only for a freshly inserted row: then this watch's historyId is the baseline.
    row = (
        await session.execute(
            text(
                "INSERT INTO gmail_sync_state (mailbox, history_id, watch_expiration) VALUES (:m, :h, :e) "
                "ON CONFLICT (mailbox) DO UPDATE SET watch_expiration = EXCLUDED.watch_expiration, "
                "updated_at = now() "
                "RETURNING history_id, (xmax = 0) AS inserted"
            ),
            {"m": mailbox, "h": history_id, "e": expiration},
        )
    ).one()
    return WatchRecord(history_id=int(row.history_id), baseline_stored=bool(row.inserted))
