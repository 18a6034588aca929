"""Stored daily reports (one per day, kept once) and their delivery to each sink."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from core.vocabulary import NotificationDeliveryStatus, NotificationSink

_ERROR_MAX_CHARS = 500


@dataclass(frozen=True)
class DailyReportRow:
    """One day's report as stored: the figures are the `ReportSummary` JSON document."""

    report_date: date
    since: datetime
    until: datetime
    figures: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class DailyReportDeliveryRow:
    """One day's report delivered to one sink."""

    report_date: date
    sink: NotificationSink
    status: NotificationDeliveryStatus
    attempts: int
    last_error: str | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None


_DELIVERY_COLUMNS = "report_date, sink, status, attempts, last_error, last_attempt_at, delivered_at"


async def store_report(
    session: AsyncSession, *, day: date, since: datetime, until: datetime, figures: dict[str, Any]
) -> bool:
    """Keep the day's report; False (and nothing changed) when the day already has one."""
    result = await session.execute(
        text(
            "INSERT INTO daily_reports (report_date, since, until, figures) "
            "VALUES (:d, :s, :u, CAST(:f AS jsonb)) ON CONFLICT (report_date) DO NOTHING"
        ),
        {"d": day, "s": since, "u": until, "f": json.dumps(figures)},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def get_report(session: AsyncSession, *, day: date) -> DailyReportRow | None:
    """The stored report of a day, if any."""
    row = (
        await session.execute(
            text("SELECT report_date, since, until, figures, created_at FROM daily_reports WHERE report_date = :d"),
            {"d": day},
        )
    ).one_or_none()
    return DailyReportRow(**row._mapping) if row is not None else None


async def begin_delivery(
    session: AsyncSession, *, day: date, sink: NotificationSink, at: datetime
) -> DailyReportDeliveryRow:
    """The delivery's row (created on the first attempt), this attempt counted unless it is settled."""
    await session.execute(
        text(
            "INSERT INTO daily_report_deliveries (report_date, sink) VALUES (:d, :s) "
            "ON CONFLICT (report_date, sink) DO NOTHING"
        ),
        {"d": day, "s": sink},
    )
    row = (
        await session.execute(
            text(
                "UPDATE daily_report_deliveries SET "
                "attempts = attempts + CASE WHEN status = 'pending' THEN 1 ELSE 0 END, "
                "last_attempt_at = CASE WHEN status = 'pending' THEN :at ELSE last_attempt_at END "
                f"WHERE report_date = :d AND sink = :s RETURNING {_DELIVERY_COLUMNS}"
            ),
            {"d": day, "s": sink, "at": at},
        )
    ).one()
    return DailyReportDeliveryRow(**row._mapping)


async def record_delivered(session: AsyncSession, *, day: date, sink: NotificationSink, at: datetime) -> None:
    """The sink accepted the report."""
    await session.execute(
        text(
            "UPDATE daily_report_deliveries SET status = 'delivered', delivered_at = :at, last_error = NULL "
            "WHERE report_date = :d AND sink = :s AND status <> 'delivered'"
        ),
        {"d": day, "s": sink, "at": at},
    )


async def record_failure(session: AsyncSession, *, day: date, sink: NotificationSink, error: str, final: bool) -> None:
    """An attempt failed: `final` (the sink refused it for good) settles the row as `refused`."""
    await session.execute(
        text(
            "UPDATE daily_report_deliveries SET last_error = :e, "
            "status = CASE WHEN :final THEN 'refused' ELSE status END "
            "WHERE report_date = :d AND sink = :s AND status = 'pending'"
        ),
        {"d": day, "s": sink, "e": error[:_ERROR_MAX_CHARS], "final": final},
    )


async def deliveries_of(session: AsyncSession, *, day: date) -> list[DailyReportDeliveryRow]:
    """Every sink's delivery of one day's report."""
    rows = await session.execute(
        text(f"SELECT {_DELIVERY_COLUMNS} FROM daily_report_deliveries WHERE report_date = :d ORDER BY sink"),
        {"d": day},
    )
    return [DailyReportDeliveryRow(**r._mapping) for r in rows]
