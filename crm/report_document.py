"""The support report as one JSON document: the API's body, the stored daily report, what sinks render.

Built from `crm.repositories.reports` (where each figure is defined); one schema everywhere, so the
dashboard and the daily report show the same numbers. Fields may be added with defaults; a stored
report is read back with this model, so none is renamed or removed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from core.vocabulary import Channel, EscalationReason, TicketCategory
from crm.repositories.reports import Durations, OutcomeCounts, ReportFigures, SeriesBucket

REPORT_DOCUMENT_VERSION = 1
Bucket = Literal["hour", "day"]


def _rate(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def _seconds(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


class Outcomes(BaseModel):
    """Conversations closed in the window, by outcome, and the two rates (None: nothing closed)."""

    resolved_by_ai: int
    resolved_by_human: int
    abandoned: int
    closed: int
    resolution_rate: float | None = Field(description="(resolved_by_ai + resolved_by_human) / closed, 0 to 1")
    automation_rate: float | None = Field(description="resolved_by_ai / closed, 0 to 1")

    @classmethod
    def of(cls, counts: OutcomeCounts) -> Outcomes:
        return cls(
            resolved_by_ai=counts.resolved_by_ai,
            resolved_by_human=counts.resolved_by_human,
            abandoned=counts.abandoned,
            closed=counts.closed,
            resolution_rate=_rate(counts.resolution_rate),
            automation_rate=_rate(counts.automation_rate),
        )


class ResponseTimes(BaseModel):
    """How many responses were measured, and their median and 95th percentile in seconds."""

    count: int
    p50_seconds: float | None
    p95_seconds: float | None

    @classmethod
    def of(cls, d: Durations) -> ResponseTimes:
        return cls(count=d.count, p50_seconds=_seconds(d.p50_seconds), p95_seconds=_seconds(d.p95_seconds))


class Sla(BaseModel):
    due: int = Field(description="Escalations whose SLA deadline fell in the window and has passed")
    breached: int = Field(description="Of those, answered by no person (nor resolved) by the deadline")


class Sentiment(BaseModel):
    average: float | None = Field(description="Mean per-turn sentiment, -1 (negative) to 1 (positive)")
    points: int


class ModelSpend(BaseModel):
    """Model tokens of the window and their cost estimated at the configured prices (USD)."""

    prompt_tokens: int
    completion_tokens: int
    cost_usd: float = Field(description="Estimate: tokens times LLM_PROMPT/COMPLETION_COST_PER_1K_USD")
    resolutions: int
    cost_per_resolution_usd: float | None
    prompt_cost_per_1k_usd: float
    completion_cost_per_1k_usd: float


class UnansweredQuestionItem(BaseModel):
    text: str = Field(description="The customer's question, one line of at most 120 characters")
    count: int
    category: TicketCategory | None
    last_asked_at: datetime


class ReportSummary(BaseModel):
    """Every figure for one window [since, until) (UTC)."""

    version: int = REPORT_DOCUMENT_VERSION
    since: datetime
    until: datetime
    computed_at: datetime
    conversations: int = Field(description="Conversations started in the window")
    conversations_by_channel: dict[Channel, int]
    conversations_by_topic: dict[TicketCategory, int] = Field(description="By the ticket's category")
    outcomes: Outcomes
    outcomes_by_channel: dict[Channel, Outcomes]
    outcomes_by_topic: dict[TicketCategory, Outcomes]
    open_with_human: int = Field(description="Conversations with a person (status escalated) when computed")
    escalations: int
    escalations_by_reason: dict[EscalationReason, int]
    sla: Sla
    first_response: ResponseTimes = Field(description="First customer message → first reply (AI or person)")
    human_first_response: ResponseTimes = Field(description="Escalation → a person's first reply")
    sentiment: Sentiment
    model: ModelSpend
    csat_average: float | None = Field(
        default=None, description="Mean customer rating (1-5) given in the period; null when nobody rated"
    )
    csat_ratings: int = Field(default=0, description="How many ratings were given in the period")
    gaps_closed: int = Field(
        default=0, description="Answers people gave that were approved into the knowledge base in the period"
    )
    unanswered_questions: list[UnansweredQuestionItem]

    @classmethod
    def of(cls, f: ReportFigures, *, prompt_cost_per_1k_usd: float, completion_cost_per_1k_usd: float) -> ReportSummary:
        per_resolution = f.model.cost_per_resolution_usd
        return cls(
            since=f.since,
            until=f.until,
            computed_at=f.computed_at,
            conversations=f.conversations,
            conversations_by_channel=f.conversations_by_channel,
            conversations_by_topic=f.conversations_by_topic,
            outcomes=Outcomes.of(f.outcomes),
            outcomes_by_channel={k: Outcomes.of(v) for k, v in f.outcomes_by_channel.items()},
            outcomes_by_topic={k: Outcomes.of(v) for k, v in f.outcomes_by_topic.items()},
            open_with_human=f.open_with_human,
            escalations=f.escalations,
            escalations_by_reason=f.escalations_by_reason,
            sla=Sla(due=f.sla.due, breached=f.sla.breached),
            first_response=ResponseTimes.of(f.first_response),
            human_first_response=ResponseTimes.of(f.human_first_response),
            sentiment=Sentiment(
                average=round(f.average_sentiment, 3) if f.average_sentiment is not None else None,
                points=f.sentiment_points,
            ),
            model=ModelSpend(
                prompt_tokens=f.model.prompt_tokens,
                completion_tokens=f.model.completion_tokens,
                cost_usd=round(f.model.cost_usd, 6),
                resolutions=f.model.resolutions,
                cost_per_resolution_usd=round(per_resolution, 6) if per_resolution is not None else None,
                prompt_cost_per_1k_usd=prompt_cost_per_1k_usd,
                completion_cost_per_1k_usd=completion_cost_per_1k_usd,
            ),
            csat_average=f.csat,
            csat_ratings=f.csat_ratings,
            gaps_closed=f.gaps_closed,
            unanswered_questions=[
                UnansweredQuestionItem(text=q.text, count=q.count, category=q.category, last_asked_at=q.last_asked_at)
                for q in f.unanswered_questions
            ],
        )


class SeriesPoint(BaseModel):
    """One bucket [start, start + bucket) of the charts' time series."""

    start: datetime
    conversations: int
    resolved_by_ai: int
    resolved_by_human: int
    abandoned: int
    escalations: int
    sla_breached: int
    average_sentiment: float | None
    first_response_p50_seconds: float | None
    first_response_p95_seconds: float | None

    @classmethod
    def of(cls, b: SeriesBucket) -> SeriesPoint:
        return cls(
            start=b.start,
            conversations=b.conversations,
            resolved_by_ai=b.outcomes.resolved_by_ai,
            resolved_by_human=b.outcomes.resolved_by_human,
            abandoned=b.outcomes.abandoned,
            escalations=b.escalations,
            sla_breached=b.sla_breached,
            average_sentiment=round(b.average_sentiment, 3) if b.average_sentiment is not None else None,
            first_response_p50_seconds=_seconds(b.first_response.p50_seconds),
            first_response_p95_seconds=_seconds(b.first_response.p95_seconds),
        )


class ReportSeries(BaseModel):
    """The window cut into hours or days, for charts."""

    since: datetime
    until: datetime
    bucket: Bucket
    points: list[SeriesPoint]
