"""Metric points: the time series behind /api/v1/metrics/channels and the alert thresholds."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from core.vocabulary import Channel
from crm.models import Conversation


async def record_points(
    session: AsyncSession,
    *,
    points: Sequence[tuple[str, float]],
    channel: str,
    conversation_id: str,
    dimensions: dict[str, Any] | None = None,
) -> int:
    """Several (metric type, value) points of one conversation in one statement (see `record_point`).

    Returns how many were recorded: 0 when a re-run turn finds its points already there.
    """
    if not points:
        return 0
    result = await session.execute(
        text(
            "INSERT INTO agent_metrics (metric_type, channel, value, conversation_id, dimensions) "
            "SELECT p.t, :ch, p.v, CAST(:c AS uuid), CAST(:d AS jsonb) "
            "FROM unnest(CAST(:ts AS text[]), CAST(:vs AS float8[])) AS p(t, v) ON CONFLICT DO NOTHING"
        ),
        {
            "ts": [t for t, _ in points],
            "vs": [float(v) for _, v in points],
            "ch": channel,
            "c": conversation_id,
            "d": json.dumps(dimensions or {}, default=str),
        },
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def record_point(
    session: AsyncSession,
    *,
    metric_type: str,
    value: float,
    channel: str | None = None,
    conversation_id: str | None = None,
    dimensions: dict[str, Any] | None = None,
) -> None:
    """One data point; without a channel it takes the conversation's.

    A point carrying a turn number is recorded once per conversation, metric and turn (the unique
    index of migration 0006): a re-run turn adds nothing.
    """
    if channel is None and conversation_id is not None:
        channel = await session.scalar(select(Conversation.channel).where(Conversation.id == conversation_id))
    await session.execute(
        text(
            "INSERT INTO agent_metrics (metric_type, channel, value, conversation_id, dimensions) "
            "VALUES (:t, :ch, :v, :c, CAST(:d AS jsonb)) ON CONFLICT DO NOTHING"
        ),
        {
            "t": metric_type,
            "ch": channel,
            "v": value,
            "c": conversation_id,
            "d": json.dumps(dimensions or {}, default=str),
        },
    )


# --- used by gateway
@dataclass(frozen=True)
class ChannelActivity:
    """One channel's figures since a point in time."""

    channel: Channel
    conversations: int
    messages_inbound: int
    messages_outbound: int
    escalations: int
    average_sentiment: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None


async def channel_activity(
    session: AsyncSession, *, since: datetime, channels: Sequence[Channel]
) -> list[ChannelActivity]:
    """Per channel (in the order given): conversations started, messages, escalations, sentiment, reply latency."""
    rows = await session.execute(
        text(
            """
            SELECT ch.channel,
              (SELECT count(*) FROM conversations c WHERE c.channel = ch.channel AND c.started_at >= :s)
                AS conversations,
              (SELECT count(*) FROM messages m WHERE m.channel = ch.channel AND m.created_at >= :s
                AND m.direction = 'inbound') AS inbound,
              (SELECT count(*) FROM messages m WHERE m.channel = ch.channel AND m.created_at >= :s
                AND m.direction = 'outbound') AS outbound,
              (SELECT count(*) FROM escalations e JOIN conversations c ON c.id = e.conversation_id
                WHERE c.channel = ch.channel AND e.created_at >= :s) AS escalations,
              (SELECT avg(value) FROM agent_metrics a WHERE a.channel = ch.channel
                AND a.metric_type = 'sentiment' AND a.recorded_at >= :s) AS sentiment,
              (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY value) FROM agent_metrics a
                WHERE a.channel = ch.channel AND a.metric_type = 'response_latency_ms'
                AND a.recorded_at >= :s) AS p50,
              (SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY value) FROM agent_metrics a
                WHERE a.channel = ch.channel AND a.metric_type = 'response_latency_ms'
                AND a.recorded_at >= :s) AS p95
            FROM unnest(CAST(:channels AS text[])) WITH ORDINALITY AS ch(channel, position)
            ORDER BY ch.position
            """
        ),
        {"s": since, "channels": list(channels)},
    )
    return [
        ChannelActivity(
            channel=r.channel,
            conversations=r.conversations,
            messages_inbound=r.inbound,
            messages_outbound=r.outbound,
            escalations=r.escalations,
            average_sentiment=float(r.sentiment) if r.sentiment is not None else None,
            latency_p50_ms=float(r.p50) if r.p50 is not None else None,
            latency_p95_ms=float(r.p95) if r.p95 is not None else None,
        )
        for r in rows
    ]
