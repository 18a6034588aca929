"""`GET /api/v1/metrics/channels`: per-channel volume, escalation rate, sentiment and latency, with alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from core.logging import get_logger
from core.vocabulary import CHANNELS, Channel
from crm.repositories import metrics
from gateway.deps import ResourcesDep

router = APIRouter(tags=["metrics"])
log = get_logger(__name__)


class ChannelMetrics(BaseModel):
    channel: Channel
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
        activity = await metrics.channel_activity(session, since=since, channels=CHANNELS)
    report = []
    for r in activity:
        rate = (r.escalations / r.conversations) if r.conversations else 0.0
        alerts = []
        if r.conversations and rate > settings.alert_escalation_rate:
            alerts.append(f"escalation rate {rate:.0%} is above {settings.alert_escalation_rate:.0%}")
        p95 = r.latency_p95_ms
        if p95 is not None and p95 > settings.alert_latency_ms:
            alerts.append(f"p95 response latency {p95:.0f} ms is above {settings.alert_latency_ms:.0f} ms")
        for alert in alerts:
            log.warning("alert.channel_threshold", channel=r.channel, alert=alert)
        report.append(
            ChannelMetrics(
                channel=r.channel,
                conversations=r.conversations,
                messages_inbound=r.messages_inbound,
                messages_outbound=r.messages_outbound,
                escalations=r.escalations,
                escalation_rate=round(rate, 4),
                average_sentiment=round(r.average_sentiment, 4) if r.average_sentiment is not None else None,
                response_latency_p50_ms=round(r.latency_p50_ms, 1) if r.latency_p50_ms is not None else None,
                response_latency_p95_ms=round(p95, 1) if p95 is not None else None,
                alerts=alerts,
            )
        )
    return ChannelMetricsReport(
        window_hours=window_hours,
        since=since,
        thresholds={"escalation_rate": settings.alert_escalation_rate, "latency_ms": settings.alert_latency_ms},
        channels=report,
    )
