"""`GET /api/v1/metrics/channels`: per-channel volume, escalation rate, sentiment and latency, with alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import text

from core.logging import get_logger
from core.settings import CHANNELS
from gateway.deps import ResourcesDep

router = APIRouter(tags=["metrics"])
log = get_logger(__name__)


class ChannelMetrics(BaseModel):
    channel: str
    conversations: int
    messages_inbound: int
    messages_outbound: int
    escalations: int
    escalation_rate: float
    average_sentiment: float | None
    response_latency_p50_ms: float | None
    response_latency_p95_ms: float | None
    alerts: list[str]


class ChannelMetricsReport(BaseModel):
    window_hours: float
    since: datetime
    thresholds: dict[str, float]
    channels: list[ChannelMetrics]


@router.get("/api/v1/metrics/channels", response_model=ChannelMetricsReport)
async def channel_metrics(
    resources: ResourcesDep,
    window_hours: Annotated[float, Query(gt=0, le=24 * 90, description="Look-back window in hours.")] = 24,
) -> ChannelMetricsReport:
    """Per channel over the window; alerts when the escalation rate or latency passes its threshold."""
    settings = resources.settings
    since = datetime.now(UTC) - timedelta(hours=window_hours)
    async with resources.sessions() as session:
        rows = {
            r.channel: r
            for r in (
                await session.execute(
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
                        FROM unnest(CAST(:channels AS text[])) AS ch(channel)
                        """
                    ),
                    {"s": since, "channels": list(CHANNELS)},
                )
            ).all()
        }
    report = []
    for channel in CHANNELS:
        r = rows[channel]
        rate = (r.escalations / r.conversations) if r.conversations else 0.0
        alerts = []
        if r.conversations and rate > settings.alert_escalation_rate:
            alerts.append(f"escalation rate {rate:.0%} is above {settings.alert_escalation_rate:.0%}")
        if r.p95 is not None and r.p95 > settings.alert_latency_ms:
            alerts.append(f"p95 response latency {r.p95:.0f} ms is above {settings.alert_latency_ms:.0f} ms")
        for alert in alerts:
            log.warning("alert.channel_threshold", channel=channel, alert=alert)
        report.append(
            ChannelMetrics(
                channel=channel,
                conversations=r.conversations,
                messages_inbound=r.inbound,
                messages_outbound=r.outbound,
                escalations=r.escalations,
                escalation_rate=round(rate, 4),
                average_sentiment=round(float(r.sentiment), 4) if r.sentiment is not None else None,
                response_latency_p50_ms=round(float(r.p50), 1) if r.p50 is not None else None,
                response_latency_p95_ms=round(float(r.p95), 1) if r.p95 is not None else None,
                alerts=alerts,
            )
        )
    return ChannelMetricsReport(
        window_hours=window_hours,
        since=since,
        thresholds={"escalation_rate": settings.alert_escalation_rate, "latency_ms": settings.alert_latency_ms},
        channels=report,
    )
