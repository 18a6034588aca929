"""The data of the daily report (issue 17): which day, what was stored, one delivery to one sink.

Pydantic models only (imported inside the workflow sandbox). The report itself never travels
through workflow history: the activity that computes it stores it in `daily_reports` and the
workflow passes only the day on. Fields may be added with defaults; never renamed or removed.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Final

from pydantic import BaseModel, Field

from core.vocabulary import NotificationSink

DAILY_REPORT_WORKFLOW: Final = "DailyReportWorkflow"


class DailyReportErrorType:
    """`ApplicationError.type` names of the daily report (non-retryable)."""

    # The day asked for has not ended yet (UTC): its figures would be incomplete.
    DAY_NOT_ENDED: Final = "DailyReportDayNotEnded"


def daily_report_workflow_id(day: date) -> str:
    """`daily-report-2026-12-01`: the operator's run of a day (the schedule's runs add their own time)."""
    return f"daily-report-{day.isoformat()}"


def report_day_for(scheduled_at: datetime) -> date:
    """The day a scheduled run reports on: the UTC day before the one it was scheduled in."""
    offset = scheduled_at.utcoffset() or timedelta(0)  # Temporal's times are UTC; a naive one is taken as UTC
    return (scheduled_at - offset).date() - timedelta(days=1)


class DailyReportInput(BaseModel):
    """Start input: a day (UTC), or None for the day before the scheduled run."""

    day: date | None = None


class DailyReportRequest(BaseModel):
    """Input of `compute_daily_report`."""

    day: date


class DailyReportStored(BaseModel):
    """The day's report is in `daily_reports` (`created`: by this run), and the sinks to send it to."""

    day: date
    created: bool
    sinks: list[NotificationSink] = Field(default_factory=list)


class DailyReportDelivery(BaseModel):
    """One day's report to one sink: the input of `send_daily_report`."""

    day: date
    sink: NotificationSink


class DailyReportDelivered(BaseModel):
    """A sink accepted the report (now, or earlier: then nothing was sent again)."""

    sink: NotificationSink
    attempts: int
    already_delivered: bool = False


class DailyReportOutcome(BaseModel):
    """What `DailyReportWorkflow` achieved."""

    day: date
    # False: the day's report was already stored (an earlier run); it was not computed again.
    created: bool
    delivered: list[NotificationSink] = Field(default_factory=list)
    refused: list[NotificationSink] = Field(default_factory=list)
    gave_up: list[NotificationSink] = Field(default_factory=list)
