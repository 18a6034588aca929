"""The report's figures on a real PostgreSQL, against numbers computed by hand (rolled back after each test).

The day is in 2001, so rows other tests leave in the session's database fall outside every window;
only `open_with_human` (a snapshot of now) is compared as a difference.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from crm.report_document import ReportSummary
from crm.repositories import daily_reports
from crm.repositories.reports import (
    Durations,
    OutcomeCounts,
    SlaFigures,
    normalise_question,
    report_figures,
    report_series,
    shorten,
)
from tests.crm.report_rows import LONG_QUESTION, seed_known_day

DAY = datetime(2001, 3, 4, tzinfo=UTC)
NEXT = DAY + timedelta(days=1)
NOW = datetime(2001, 3, 6, tzinfo=UTC)
PRICES = {"prompt_cost_per_1k_usd": 0.0025, "completion_cost_per_1k_usd": 0.01}


async def _open_with_human(session: AsyncSession) -> int:
    return int(await session.scalar(text("SELECT count(*) FROM conversations WHERE status = 'escalated'")) or 0)


async def test_every_figure_of_a_known_day(session: AsyncSession) -> None:
    before = await _open_with_human(session)
    await seed_known_day(session, DAY)
    f = await report_figures(session, since=DAY, until=NEXT, now=NOW, **PRICES)

    # Volumes: c1, c2, c3, c4, c6 started in the day (c5 the day before).
    assert f.conversations == 5
    assert f.conversations_by_channel == {"email": 2, "whatsapp": 2, "web_form": 1}
    assert f.conversations_by_topic == {"how_to": 2, "billing": 1, "bug": 1, "account": 1}
    # Closed in the day: c1 and c5 by the AI, c2 by a person, c3 abandoned (c6 closed the next day).
    assert f.outcomes == OutcomeCounts(resolved_by_ai=2, resolved_by_human=1, abandoned=1)
    assert (f.outcomes.resolution_rate, f.outcomes.automation_rate) == (0.75, 0.5)
    assert f.outcomes_by_channel == {
        "web_form": OutcomeCounts(resolved_by_ai=2),
        "email": OutcomeCounts(resolved_by_human=1),
        "whatsapp": OutcomeCounts(abandoned=1),
    }
    assert f.outcomes_by_topic == {
        "how_to": OutcomeCounts(resolved_by_ai=1, abandoned=1),
        "billing": OutcomeCounts(resolved_by_human=1),
    }
    assert f.open_with_human - before == 1  # c4
    # Escalations created in the day: refund (c2), no_answer (c3, c4, c6).
    assert f.escalations == 4
    assert f.escalations_by_reason == {"no_answer": 3, "refund": 1}
    # Deadlines in the day: c5's (met by its resolution), c2's (met by a reply), c3's (breached).
    assert f.sla == SlaFigures(due=3, breached=1)
    # First responses 30 s (c1), 600 s (c2: its failed reply does not count), 90 s (c3), 20 s (c6):
    # p50 = (30 + 90) / 2; p95 = 90 + 0.85 * (600 - 90).
    assert f.first_response == Durations(count=4, p50_seconds=60.0, p95_seconds=pytest.approx(523.5))
    # A person's first reply: 595 s (c2), 46 800 s (c4: 12:01 → 01:01 the next morning).
    assert f.human_first_response.count == 2
    assert f.human_first_response.p50_seconds == pytest.approx((595 + 46800) / 2)
    assert f.human_first_response.p95_seconds == pytest.approx(595 + 0.95 * (46800 - 595))
    assert f.sentiment_points == 3 and f.average_sentiment == pytest.approx(-0.2 / 3)
    # Tokens of the model calls only: (1000 + 3000) prompt, (200 + 800) completion.
    assert (f.model.prompt_tokens, f.model.completion_tokens) == (4000, 1000)
    assert f.model.cost_usd == pytest.approx(4 * 0.0025 + 1 * 0.01)
    assert f.model.resolutions == 3
    assert f.model.cost_per_resolution_usd == pytest.approx(0.02 / 3)
    assert (f.csat, f.csat_ratings) == (3.5, 2)  # c1's 5 and c2's 2; c5's 4 came the day before
    assert f.gaps_closed == 0
    # c3's and c4's questions are one question; c6's long one is cut to one line.
    questions = [(q.text, q.count, q.category) for q in f.unanswered_questions]
    assert questions == [
        ("How do I export invoices to PDF?", 2, "how_to"),
        (shorten(LONG_QUESTION), 1, "account"),
    ]
    assert len(questions[1][0]) == 120 and questions[1][0].endswith("…")
    assert f.unanswered_questions[0].last_asked_at == DAY + timedelta(hours=12)

    document = ReportSummary.of(f, **PRICES)
    assert document.outcomes.resolution_rate == 0.75 and document.first_response.p95_seconds == 523.5
    assert document.model.cost_per_resolution_usd == 0.006667
    assert (document.csat_average, document.csat_ratings) == (3.5, 2)


async def test_an_sla_whose_deadline_has_not_passed_is_not_counted(session: AsyncSession) -> None:
    await seed_known_day(session, DAY)
    during = DAY + timedelta(hours=6)
    f = await report_figures(session, since=DAY, until=NEXT, now=during, **PRICES)
    assert f.sla == SlaFigures(due=2, breached=0)  # c3's deadline (12:02) is still ahead


async def test_an_empty_window_has_counts_of_zero_and_no_rates(session: AsyncSession) -> None:
    since = datetime(1999, 1, 1, tzinfo=UTC)
    f = await report_figures(session, since=since, until=since + timedelta(days=1), now=NOW, **PRICES)
    assert f.conversations == 0 and f.outcomes.closed == 0 and f.escalations == 0
    assert f.outcomes.resolution_rate is None and f.outcomes.automation_rate is None
    assert f.first_response == Durations() and f.average_sentiment is None
    assert f.model.cost_per_resolution_usd is None and f.unanswered_questions == []


async def test_the_series_cuts_the_day_into_buckets(session: AsyncSession) -> None:
    await seed_known_day(session, DAY)
    series = await report_series(session, since=DAY, until=NEXT, bucket=timedelta(hours=6), now=NOW)
    assert [b.start for b in series] == [DAY + timedelta(hours=h) for h in (0, 6, 12, 18)]
    assert [b.conversations for b in series] == [2, 1, 1, 1]
    assert [b.outcomes for b in series] == [
        OutcomeCounts(resolved_by_ai=2),
        OutcomeCounts(resolved_by_human=1),
        OutcomeCounts(),
        OutcomeCounts(abandoned=1),
    ]
    assert [b.escalations for b in series] == [1, 1, 1, 1]
    assert [b.sla_breached for b in series] == [0, 0, 1, 0]
    assert [b.average_sentiment for b in series] == [0.5, -0.5, -0.2, None]
    assert series[0].first_response == Durations(count=2, p50_seconds=315.0, p95_seconds=pytest.approx(571.5))
    assert series[2].first_response == Durations()
    assert series[3].first_response == Durations(count=1, p50_seconds=20.0, p95_seconds=20.0)
    # The buckets add up to the window's totals.
    total = await report_figures(session, since=DAY, until=NEXT, now=NOW, **PRICES)
    assert sum(b.conversations for b in series) == total.conversations
    assert sum(b.escalations for b in series) == total.escalations


def test_questions_are_grouped_by_their_words_not_their_punctuation() -> None:
    assert normalise_question("How do I export   invoices?!") == normalise_question("how do i export invoices")
    assert normalise_question("   ") == ""
    assert shorten("a\nb  c") == "a b c"


async def test_a_daily_report_is_kept_once(session: AsyncSession) -> None:
    day = date(2001, 3, 4)
    assert await daily_reports.store_report(session, day=day, since=DAY, until=NEXT, figures={"n": 1})
    assert not await daily_reports.store_report(session, day=day, since=DAY, until=NEXT, figures={"n": 2})
    stored = await daily_reports.get_report(session, day=day)
    assert stored is not None and stored.figures == {"n": 1}
    first = await daily_reports.begin_delivery(session, day=day, sink="webhook", at=NOW)
    assert (first.status, first.attempts) == ("pending", 1)
    await daily_reports.record_delivered(session, day=day, sink="webhook", at=NOW)
    again = await daily_reports.begin_delivery(session, day=day, sink="webhook", at=NOW)
    assert (again.status, again.attempts) == ("delivered", 1)
