"""Support figures for the agent console's dashboard: a window's summary and its time series.

The figures are defined in `crm.repositories.reports` (and, in words, in docs/architecture.md); the
daily report stores and sends the same document. A window is the last day (24 hourly buckets), week
or month (7 or 30 daily buckets) ending at the next bucket boundary, or an explicit [since, until).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from core.errors import BadRequest
from crm.report_document import Bucket, ReportSeries, ReportSummary, SeriesPoint
from crm.repositories.reports import report_figures, report_series
from gateway.agents.auth import ReadingAgent
from gateway.deps import ResourcesDep

router = APIRouter(tags=["human agents"])

Window = Literal["day", "week", "month"]
# An explicit window spans at most this long (a quarter): the queries scan the window's rows.
MAX_SPAN = timedelta(days=92)
_WINDOWS: dict[Window, tuple[timedelta, Bucket]] = {
    "day": (timedelta(days=1), "hour"),
    "week": (timedelta(days=7), "day"),
    "month": (timedelta(days=30), "day"),
}
_BUCKETS: dict[Bucket, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}

_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Both a window and since/until, only one of since and until, or a bad span"},
    401: {"description": "No, malformed, unknown or revoked API key"},
    403: {"description": "The key lacks the required scope"},
    422: {"description": "A window, since or until that is not valid (the message says which)"},
    503: {"description": "The database is not available; retry"},
}


@dataclass(frozen=True)
class ReportWindow:
    since: datetime
    until: datetime
    bucket: Bucket


def _aligned_end(now: datetime, bucket: Bucket) -> datetime:
    """The end of the bucket `now` falls in: windows end on a boundary so every bucket is whole."""
    start = now.replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        start = start.replace(hour=0)
    return start + _BUCKETS[bucket]


def report_window(
    window: Annotated[Window | None, Query(description="The last day, week or month (default: day)")] = None,
    since: Annotated[datetime | None, Query(description="Start (inclusive) of an explicit window, with a zone")] = None,
    until: Annotated[datetime | None, Query(description="End (exclusive) of an explicit window, with a zone")] = None,
) -> ReportWindow:
    """The window asked for: a named one, or since/until (hourly buckets up to two days, else daily)."""
    if since is None and until is None:
        length, bucket = _WINDOWS[window or "day"]
        end = _aligned_end(datetime.now(UTC), bucket)
        return ReportWindow(since=end - length, until=end, bucket=bucket)
    if window is not None:
        raise BadRequest("give either window or since and until, not both")
    if since is None or until is None:
        raise BadRequest("give both since and until")
    if since.tzinfo is None or until.tzinfo is None:
        raise BadRequest("since and until need a time zone (e.g. 2026-12-01T00:00:00Z)")
    if not since < until:
        raise BadRequest("since must be before until")
    span = until - since
    if span > MAX_SPAN:
        raise BadRequest(f"a window spans at most {MAX_SPAN.days} days")
    try:
        start, end = since.astimezone(UTC), until.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset that leaves the calendar
        raise BadRequest("since and until must lie between the years 1 and 9999 in UTC") from None
    return ReportWindow(since=start, until=end, bucket="hour" if span <= timedelta(days=2) else "day")


WindowDep = Annotated[ReportWindow, Depends(report_window)]


@router.get("/api/v1/reports/summary", response_model=ReportSummary, responses=_RESPONSES)
async def report_summary(agent: ReadingAgent, resources: ResourcesDep, w: WindowDep) -> ReportSummary:
    """Every figure of the window: volumes, outcomes and rates, escalations, SLA, response times, cost."""
    s = resources.settings
    async with resources.sessions() as session:
        figures = await report_figures(
            session,
            since=w.since,
            until=w.until,
            now=datetime.now(UTC),
            prompt_cost_per_1k_usd=s.llm_prompt_cost_per_1k_usd,
            completion_cost_per_1k_usd=s.llm_completion_cost_per_1k_usd,
        )
    return ReportSummary.of(
        figures,
        prompt_cost_per_1k_usd=s.llm_prompt_cost_per_1k_usd,
        completion_cost_per_1k_usd=s.llm_completion_cost_per_1k_usd,
    )


@router.get("/api/v1/reports/series", response_model=ReportSeries, responses=_RESPONSES)
async def report_time_series(agent: ReadingAgent, resources: ResourcesDep, w: WindowDep) -> ReportSeries:
    """The window cut into hours (a day) or days (a week, a month), for the dashboard's charts."""
    async with resources.sessions() as session:
        buckets = await report_series(
            session, since=w.since, until=w.until, bucket=_BUCKETS[w.bucket], now=datetime.now(UTC)
        )
    return ReportSeries(since=w.since, until=w.until, bucket=w.bucket, points=[SeriesPoint.of(b) for b in buckets])
