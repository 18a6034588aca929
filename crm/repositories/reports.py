"""Support figures over a time window [since, until): the dashboard's and the daily report's numbers.

Every figure is defined once, here, by its SQL (docs/architecture.md, "How the numbers are defined",
says the same in words). All times are UTC; a window includes `since` and excludes `until`.

- volumes: conversations *started* in the window (per channel, per topic = the ticket's category);
- outcomes: conversations *closed* in the window (`outcome_at`), by `conversations.outcome`;
  resolution rate = (resolved_by_ai + resolved_by_human) / closed with an outcome, automation rate
  = resolved_by_ai / closed with an outcome (None when nothing closed);
- open with a person: conversations whose status is `escalated` *now* (a snapshot, not a window);
- escalations: created in the window, by reason;
- SLA: escalations whose deadline (`sla_due_at`, after any bump) fell in the window and has passed;
  breached when no person replied (`responded_at`) and it was not resolved by the deadline;
- first response: from a conversation's first customer message to the first reply (the AI's or a
  person's) that was not refused by the channel, for conversations started in the window; a
  person's first response: escalation created → `responded_at`, for escalations created in it;
- sentiment: the mean of the per-turn `sentiment` metric points recorded in the window (-1 … 1);
- model cost: tokens of the model steps (`agent_steps`) in the window priced at the configured
  USD per 1k prompt / completion tokens (an estimate: the provider's bill is the truth), divided by
  the conversations resolved in the window;
- CSAT: the mean of the ratings (1-5, `csat_ratings`) given in the window, and how many there were
  (None when nobody rated: never a made-up figure);
- gaps closed: answers people gave that were approved into the knowledge base in the window
  (`kb_suggestions.gaps_closed`);
- unanswered questions: for each escalation with reason `no_answer` created in the window, the
  customer's last message before it, grouped by normalised text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from core.vocabulary import (
    CHANNELS,
    Channel,
    ConversationOutcome,
    EscalationReason,
    TicketCategory,
)
from crm.repositories import kb_suggestions

# A question in a report is one line of at most this many characters (reports go to Slack and
# third-party webhooks: never a customer's whole message).
QUESTION_MAX_CHARS = 120
TOP_QUESTIONS = 10
# Replies the channel refused never reached the customer: they are not a first response.
_UNDELIVERED = ("failed", "undelivered")


@dataclass(frozen=True)
class OutcomeCounts:
    """Conversations closed in a window, by how they ended."""

    resolved_by_ai: int = 0
    resolved_by_human: int = 0
    abandoned: int = 0

    @property
    def closed(self) -> int:
        return self.resolved_by_ai + self.resolved_by_human + self.abandoned

    @property
    def resolved(self) -> int:
        return self.resolved_by_ai + self.resolved_by_human

    @property
    def resolution_rate(self) -> float | None:
        """(resolved by the AI + by a person) / closed; None when nothing closed."""
        return self.resolved / self.closed if self.closed else None

    @property
    def automation_rate(self) -> float | None:
        """Resolved by the AI / closed; None when nothing closed."""
        return self.resolved_by_ai / self.closed if self.closed else None

    def plus(self, outcome: ConversationOutcome, count: int) -> OutcomeCounts:
        """These counts with `count` more conversations of `outcome`."""
        return replace(self, **{outcome: getattr(self, outcome) + count})


@dataclass(frozen=True)
class Durations:
    """How many durations were measured and their median and 95th percentile, in seconds."""

    count: int = 0
    p50_seconds: float | None = None
    p95_seconds: float | None = None


@dataclass(frozen=True)
class SlaFigures:
    """Escalations whose SLA deadline fell in the window and has passed, and how many were breached."""

    due: int = 0
    breached: int = 0


@dataclass(frozen=True)
class ModelCost:
    """Model tokens spent in the window and their estimated cost at the configured prices."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    resolutions: int = 0

    @property
    def cost_per_resolution_usd(self) -> float | None:
        """Estimated model cost / conversations resolved (by the AI or a person); None without any."""
        return self.cost_usd / self.resolutions if self.resolutions else None


@dataclass(frozen=True)
class UnansweredQuestion:
    """A question the AI could not answer (escalated `no_answer`), shortened, and how often it came."""

    text: str
    count: int
    category: TicketCategory | None
    last_asked_at: datetime


@dataclass(frozen=True)
class ReportFigures:
    """Every figure of the dashboard and the daily report for one window [since, until)."""

    since: datetime
    until: datetime
    # When the figures were computed: `open_with_human` is a snapshot at that moment.
    computed_at: datetime
    conversations: int
    conversations_by_channel: dict[Channel, int]
    conversations_by_topic: dict[TicketCategory, int]
    outcomes: OutcomeCounts
    outcomes_by_channel: dict[Channel, OutcomeCounts]
    outcomes_by_topic: dict[TicketCategory, OutcomeCounts]
    open_with_human: int
    escalations: int
    escalations_by_reason: dict[EscalationReason, int]
    sla: SlaFigures
    first_response: Durations
    human_first_response: Durations
    average_sentiment: float | None
    sentiment_points: int
    model: ModelCost
    unanswered_questions: list[UnansweredQuestion] = field(default_factory=list)
    # The mean customer rating (1-5) given in the window, None when nobody rated; and how many.
    csat: float | None = None
    csat_ratings: int = 0
    gaps_closed: int = 0


@dataclass(frozen=True)
class SeriesBucket:
    """One bucket [start, start + bucket) of the time series behind the dashboard's charts."""

    start: datetime
    conversations: int = 0
    outcomes: OutcomeCounts = OutcomeCounts()
    escalations: int = 0
    sla_breached: int = 0
    average_sentiment: float | None = None
    first_response: Durations = Durations()


def normalise_question(content: str) -> str:
    """The grouping key of a question: case-folded, one space between words, no trailing punctuation."""
    return " ".join(content.casefold().split()).rstrip(" ?!.…")


def shorten(content: str, limit: int = QUESTION_MAX_CHARS) -> str:
    """One line of at most `limit` characters (an ellipsis marks a cut)."""
    line = " ".join(content.replace("\x00", "").split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


async def _rows(session: AsyncSession, sql: str, params: Mapping[str, Any]) -> Sequence[Any]:
    return (await session.execute(text(sql), dict(params))).all()


# The topic of a conversation: the category of its (first) ticket.
_TOPIC = "(SELECT t.category FROM tickets t WHERE t.conversation_id = c.id ORDER BY t.created_at LIMIT 1)"

_FIRST_RESPONSE = f"""
    SELECT c.started_at, greatest(0, extract(epoch FROM r.created_at - q.created_at)) AS seconds
    FROM conversations c
    JOIN LATERAL (
        SELECT m.seq, m.created_at FROM messages m
        WHERE m.conversation_id = c.id AND m.direction = 'inbound' AND m.role = 'customer'
        ORDER BY m.seq LIMIT 1
    ) q ON true
    JOIN LATERAL (
        SELECT m.created_at FROM messages m
        WHERE m.conversation_id = c.id AND m.direction = 'outbound' AND m.role IN ('agent', 'human_agent')
          AND m.seq > q.seq AND m.delivery_status NOT IN {_UNDELIVERED!r}
        ORDER BY m.seq LIMIT 1
    ) r ON true
    WHERE c.started_at >= :s AND c.started_at < :u
"""


async def report_figures(
    session: AsyncSession,
    *,
    since: datetime,
    until: datetime,
    now: datetime,
    prompt_cost_per_1k_usd: float,
    completion_cost_per_1k_usd: float,
    top_questions: int = TOP_QUESTIONS,
) -> ReportFigures:
    """The figures of [since, until); `now` decides which SLA deadlines have passed."""
    p = {"s": since, "u": until, "now": now}

    volumes = await _rows(
        session,
        f"SELECT c.channel, {_TOPIC} AS topic, count(*) AS n FROM conversations c "
        "WHERE c.started_at >= :s AND c.started_at < :u GROUP BY 1, 2",
        p,
    )
    by_channel: Counter[str] = Counter()
    by_topic: Counter[str] = Counter()
    for r in volumes:
        by_channel[r.channel] += r.n
        if r.topic is not None:
            by_topic[r.topic] += r.n

    closed = await _rows(
        session,
        f"SELECT c.channel, {_TOPIC} AS topic, c.outcome, count(*) AS n FROM conversations c "
        "WHERE c.outcome IS NOT NULL AND c.outcome_at >= :s AND c.outcome_at < :u GROUP BY 1, 2, 3",
        p,
    )
    outcomes = OutcomeCounts()
    outcomes_by_channel: dict[Channel, OutcomeCounts] = {}
    outcomes_by_topic: dict[TicketCategory, OutcomeCounts] = {}
    for r in closed:
        outcomes = outcomes.plus(r.outcome, r.n)
        outcomes_by_channel[r.channel] = outcomes_by_channel.get(r.channel, OutcomeCounts()).plus(r.outcome, r.n)
        if r.topic is not None:
            outcomes_by_topic[r.topic] = outcomes_by_topic.get(r.topic, OutcomeCounts()).plus(r.outcome, r.n)

    open_with_human = await session.scalar(text("SELECT count(*) FROM conversations WHERE status = 'escalated'"))

    reasons = await _rows(
        session,
        "SELECT reason, count(*) AS n FROM escalations WHERE created_at >= :s AND created_at < :u "
        "GROUP BY 1 ORDER BY 2 DESC, 1",
        p,
    )

    sla = (
        await _rows(
            session,
            "SELECT count(*) AS due, count(*) FILTER (WHERE least(responded_at, resolved_at) IS NULL "
            "OR least(responded_at, resolved_at) > sla_due_at) AS breached "
            "FROM escalations WHERE sla_due_at >= :s AND sla_due_at < :u AND sla_due_at <= :now",
            p,
        )
    )[0]

    first = (
        await _rows(
            session,
            "SELECT count(*) AS n, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS p50, "
            f"percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds) AS p95 FROM ({_FIRST_RESPONSE}) x",
            p,
        )
    )[0]
    human = (
        await _rows(
            session,
            "SELECT count(*) AS n, "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM responded_at - created_at)) AS p50, "
            "percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM responded_at - created_at)) AS p95 "
            "FROM escalations WHERE created_at >= :s AND created_at < :u AND responded_at IS NOT NULL",
            p,
        )
    )[0]

    sentiment = (
        await _rows(
            session,
            "SELECT avg(value) AS mean, count(*) AS n FROM agent_metrics "
            "WHERE metric_type = 'sentiment' AND recorded_at >= :s AND recorded_at < :u",
            p,
        )
    )[0]

    tokens = (
        await _rows(
            session,
            "SELECT coalesce(sum(prompt_tokens), 0) AS prompt, coalesce(sum(completion_tokens), 0) AS completion "
            "FROM agent_steps WHERE role = 'assistant' AND created_at >= :s AND created_at < :u",
            p,
        )
    )[0]
    rated = (
        await _rows(
            session,
            "SELECT avg(score) AS mean, count(*) AS n FROM csat_ratings WHERE created_at >= :s AND created_at < :u",
            p,
        )
    )[0]
    prompt, completion = int(tokens.prompt), int(tokens.completion)
    model = ModelCost(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=round(prompt / 1000 * prompt_cost_per_1k_usd + completion / 1000 * completion_cost_per_1k_usd, 6),
        resolutions=outcomes.resolved,
    )

    return ReportFigures(
        since=since,
        until=until,
        computed_at=now,
        conversations=sum(by_channel.values()),
        conversations_by_channel={ch: by_channel[ch] for ch in CHANNELS if by_channel[ch]},
        conversations_by_topic=dict(by_topic.most_common()),  # type: ignore[arg-type]
        outcomes=outcomes,
        outcomes_by_channel=outcomes_by_channel,
        outcomes_by_topic=outcomes_by_topic,
        open_with_human=int(open_with_human or 0),
        escalations=sum(r.n for r in reasons),
        escalations_by_reason={r.reason: r.n for r in reasons},
        sla=SlaFigures(due=sla.due, breached=sla.breached),
        first_response=Durations(count=first.n, p50_seconds=_float(first.p50), p95_seconds=_float(first.p95)),
        human_first_response=Durations(count=human.n, p50_seconds=_float(human.p50), p95_seconds=_float(human.p95)),
        average_sentiment=_float(sentiment.mean),
        sentiment_points=sentiment.n,
        model=model,
        unanswered_questions=await unanswered_questions(session, since=since, until=until, limit=top_questions),
        csat=round(float(rated.mean), 2) if rated.mean is not None else None,
        csat_ratings=int(rated.n),
        gaps_closed=await kb_suggestions.gaps_closed(session, since, until),
    )


async def unanswered_questions(
    session: AsyncSession, *, since: datetime, until: datetime, limit: int = TOP_QUESTIONS
) -> list[UnansweredQuestion]:
    """The questions behind `no_answer` escalations created in the window, most frequent first."""
    rows = await _rows(
        session,
        """
        SELECT q.content, q.created_at, t.category
        FROM escalations e
        JOIN LATERAL (
            SELECT m.content, m.created_at FROM messages m
            WHERE m.conversation_id = e.conversation_id AND m.direction = 'inbound' AND m.role = 'customer'
              AND m.created_at <= e.created_at
            ORDER BY m.seq DESC LIMIT 1
        ) q ON true
        LEFT JOIN tickets t ON t.id = e.ticket_id
        WHERE e.reason = 'no_answer' AND e.created_at >= :s AND e.created_at < :u
        ORDER BY q.created_at
        """,
        {"s": since, "u": until},
    )
    groups: dict[str, dict[str, Any]] = {}
    for r in rows:
        key = normalise_question(r.content or "")
        if not key:  # an erased message (GDPR) or an attachment with no text
            continue
        group = groups.setdefault(key, {"text": shorten(r.content), "count": 0, "categories": Counter()})
        group["count"] += 1
        group["last"] = r.created_at
        if r.category is not None:
            group["categories"][r.category] += 1
    ranked = sorted(groups.values(), key=lambda g: (-g["count"], -g["last"].timestamp(), g["text"]))
    return [
        UnansweredQuestion(
            text=g["text"],
            count=g["count"],
            category=g["categories"].most_common(1)[0][0] if g["categories"] else None,
            last_asked_at=g["last"],
        )
        for g in ranked[:limit]
    ]


async def report_series(
    session: AsyncSession, *, since: datetime, until: datetime, bucket: timedelta, now: datetime
) -> list[SeriesBucket]:
    """The window cut into buckets of `bucket` (from `since`), each with its own figures, for charts."""
    if bucket <= timedelta(0) or until <= since:
        return []
    p = {"s": since, "u": until, "b": bucket, "now": now}
    starts: list[datetime] = []
    at = since
    while at < until:
        starts.append(at)
        at += bucket
    values: dict[datetime, dict[str, Any]] = {s: {} for s in starts}

    def put(rows: Sequence[Any], name: str, value: Any = None) -> None:
        for r in rows:
            if r.bucket in values:
                values[r.bucket][name] = r.n if value is None else value(r)

    put(
        await _rows(
            session,
            "SELECT date_bin(:b, started_at, :s) AS bucket, count(*) AS n FROM conversations "
            "WHERE started_at >= :s AND started_at < :u GROUP BY 1",
            p,
        ),
        "conversations",
    )
    closed = await _rows(
        session,
        "SELECT date_bin(:b, outcome_at, :s) AS bucket, outcome, count(*) AS n FROM conversations "
        "WHERE outcome IS NOT NULL AND outcome_at >= :s AND outcome_at < :u GROUP BY 1, 2",
        p,
    )
    for r in closed:
        if r.bucket in values:
            values[r.bucket]["outcomes"] = values[r.bucket].get("outcomes", OutcomeCounts()).plus(r.outcome, r.n)
    put(
        await _rows(
            session,
            "SELECT date_bin(:b, created_at, :s) AS bucket, count(*) AS n FROM escalations "
            "WHERE created_at >= :s AND created_at < :u GROUP BY 1",
            p,
        ),
        "escalations",
    )
    put(
        await _rows(
            session,
            "SELECT date_bin(:b, sla_due_at, :s) AS bucket, count(*) AS n FROM escalations "
            "WHERE sla_due_at >= :s AND sla_due_at < :u AND sla_due_at <= :now "
            "AND (least(responded_at, resolved_at) IS NULL OR least(responded_at, resolved_at) > sla_due_at) "
            "GROUP BY 1",
            p,
        ),
        "sla_breached",
    )
    put(
        await _rows(
            session,
            "SELECT date_bin(:b, recorded_at, :s) AS bucket, avg(value) AS mean FROM agent_metrics "
            "WHERE metric_type = 'sentiment' AND recorded_at >= :s AND recorded_at < :u GROUP BY 1",
            p,
        ),
        "average_sentiment",
        lambda r: float(r.mean),
    )
    put(
        await _rows(
            session,
            "SELECT date_bin(:b, started_at, :s) AS bucket, count(*) AS n, "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS p50, "
            f"percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds) AS p95 FROM ({_FIRST_RESPONSE}) x GROUP BY 1",
            p,
        ),
        "first_response",
        lambda r: Durations(count=r.n, p50_seconds=_float(r.p50), p95_seconds=_float(r.p95)),
    )
    return [SeriesBucket(start=s, **values[s]) for s in starts]
