"""DailyReportWorkflow: compute one day's support report once, keep it, send it to each sink.

A Temporal Schedule (`workers.schedules.ensure_daily_report_schedule`) starts it every day at
DAILY_REPORT_TIME_UTC for the previous UTC day; `crm-fte report run --date D` starts it for any day
that has ended. The day is the report's id: `compute_daily_report` stores the figures in
`daily_reports` with insert-on-conflict-do-nothing, so a second run (a retry, the operator, a
schedule catch-up) keeps the first report, and `send_daily_report` records each sink's delivery so
a delivered report is never sent again. Only the day travels through history, never the figures.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Literal

from temporalio import activity, workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.activity_refs import declared_only
    from workflows.notification_contracts import NotificationErrorType
    from workflows.report_contracts import (
        DAILY_REPORT_WORKFLOW,
        DailyReportDelivered,
        DailyReportDelivery,
        DailyReportErrorType,
        DailyReportInput,
        DailyReportOutcome,
        DailyReportRequest,
        DailyReportStored,
        report_day_for,
    )

COMPUTE_DAILY_REPORT_ACTIVITY = "compute_daily_report"
SEND_DAILY_REPORT_ACTIVITY = "send_daily_report"

# A handful of aggregate queries over one day and one insert.
COMPUTE_TIMEOUT = timedelta(minutes=2)
# The database may be restarting or failing over: retry with backoff for up to an hour (the report
# is due once a day; later is fine, missing is not). A day that has not ended fails at once.
COMPUTE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=0,
    non_retryable_error_types=[DailyReportErrorType.DAY_NOT_ENDED],
)
COMPUTE_SCHEDULE_TO_CLOSE = timedelta(hours=1)
# One sink: as a notification (5 s, doubling, at most every 10 minutes; a refusal is final), but for
# 12 hours only: by then the next day's report is half a day away.
SEND_TIMEOUT = timedelta(seconds=30)
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=0,
    non_retryable_error_types=[NotificationErrorType.REFUSED],
)
SEND_SCHEDULE_TO_CLOSE = timedelta(hours=12)
# The whole run: the computation's hour plus the deliveries' 12 hours, with room.
DAILY_REPORT_WORKFLOW_TIMEOUT = timedelta(hours=14)

# Set by Temporal on every workflow a schedule starts: the time the run was due (not when it ran).
SCHEDULED_START_TIME = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")


@activity.defn(name=COMPUTE_DAILY_REPORT_ACTIVITY)
async def compute_daily_report(inp: DailyReportRequest) -> DailyReportStored:
    """Compute and keep a day's report (once per day), and say which sinks are configured."""
    declared_only(COMPUTE_DAILY_REPORT_ACTIVITY)


@activity.defn(name=SEND_DAILY_REPORT_ACTIVITY)
async def send_daily_report(inp: DailyReportDelivery) -> DailyReportDelivered:
    """Send a stored day's report to one sink, at most once (a delivered one is never sent again)."""
    declared_only(SEND_DAILY_REPORT_ACTIVITY)


@workflow.defn(name=DAILY_REPORT_WORKFLOW)
class DailyReportWorkflow:
    """Compute, keep and send one day's support report; fails only when the day has not ended."""

    @workflow.run
    async def run(self, inp: DailyReportInput) -> DailyReportOutcome:
        day = inp.day
        if day is None:
            # A schedule's run: the day before the one it was due in, even when it starts late
            # (a catch-up after an outage reports on the right day).
            info = workflow.info()
            due = info.typed_search_attributes.get(SCHEDULED_START_TIME) or info.start_time
            day = report_day_for(due)
        stored = await workflow.execute_activity(
            compute_daily_report,
            DailyReportRequest(day=day),
            start_to_close_timeout=COMPUTE_TIMEOUT,
            schedule_to_close_timeout=COMPUTE_SCHEDULE_TO_CLOSE,
            retry_policy=COMPUTE_RETRY,
        )
        sinks = sorted(set(stored.sinks))
        results = await asyncio.gather(*(self._deliver(DailyReportDelivery(day=day, sink=s)) for s in sinks))
        outcome = DailyReportOutcome(day=day, created=stored.created)
        for sink, result in zip(sinks, results, strict=True):
            getattr(outcome, result).append(sink)
        workflow.logger.info(
            "daily report %s (new: %s): delivered %s, refused %s, gave up %s",
            day,
            stored.created,
            outcome.delivered,
            outcome.refused,
            outcome.gave_up,
        )
        return outcome

    async def _deliver(self, delivery: DailyReportDelivery) -> Literal["delivered", "refused", "gave_up"]:
        try:
            await workflow.execute_activity(
                send_daily_report,
                delivery,
                start_to_close_timeout=SEND_TIMEOUT,
                schedule_to_close_timeout=SEND_SCHEDULE_TO_CLOSE,
                retry_policy=SEND_RETRY,
            )
        except ActivityError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == NotificationErrorType.REFUSED:
                return "refused"
            return "gave_up"
        return "delivered"
