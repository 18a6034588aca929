"""Temporal Schedules the worker keeps in place: the Gmail push-watch renewal and the daily report."""

from __future__ import annotations

import re
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from core.settings import Settings
from workflows.gmail_watch import GMAIL_WATCH_WORKFLOW, WATCH_WORKFLOW_TIMEOUT, GmailWatchInput
from workflows.report_contracts import DAILY_REPORT_WORKFLOW, DailyReportInput
from workflows.reports import DAILY_REPORT_WORKFLOW_TIMEOUT

DAILY_REPORT_SCHEDULE_ID = "daily-report"


def gmail_watch_schedule_id(settings: Settings) -> str:
    """One schedule per support mailbox: `gmail-watch-support_example.com`."""
    mailbox = (settings.gmail_user_email or "mailbox").strip().lower()
    return "gmail-watch-" + re.sub(r"[^a-z0-9_.-]", "_", mailbox)


async def ensure_gmail_watch_schedule(client: Client, settings: Settings) -> str:
    """Create the renewal schedule (first run immediately) or bring an existing one up to date.

    Idempotent: every worker start may call it. An existing schedule keeps its state (an operator
    may have paused it) and gets the current interval, task queue and workflow options.
    """
    schedule_id = gmail_watch_schedule_id(settings)
    desired = Schedule(
        action=ScheduleActionStartWorkflow(
            GMAIL_WATCH_WORKFLOW,
            GmailWatchInput(mailbox=(settings.gmail_user_email or "").strip().lower() or None),
            id=schedule_id,
            task_queue=settings.temporal_task_queue,
            execution_timeout=WATCH_WORKFLOW_TIMEOUT,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=settings.gmail_watch_renew_hours))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(note="Renews Gmail's users.watch so Pub/Sub push notifications keep arriving."),
    )
    return await _create_or_update(client, schedule_id, desired, trigger_now=True)


async def _create_or_update(client: Client, schedule_id: str, desired: Schedule, *, trigger_now: bool) -> str:
    """Create the schedule, or bring an existing one's action, spec and policy up to date (its state,
    e.g. paused by an operator, is kept)."""
    try:
        await client.create_schedule(schedule_id, desired, trigger_immediately=trigger_now)
        return schedule_id
    except ScheduleAlreadyRunningError:
        pass

    def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
        schedule = current.description.schedule
        schedule.action = desired.action
        schedule.spec = desired.spec
        schedule.policy = desired.policy
        return ScheduleUpdate(schedule=schedule)

    await client.get_schedule_handle(schedule_id).update(update)
    return schedule_id


def daily_report_spec(settings: Settings) -> ScheduleSpec:
    """Every day at DAILY_REPORT_TIME_UTC."""
    hour, minute = (int(part) for part in settings.daily_report_time_utc.split(":"))
    return ScheduleSpec(
        calendars=[ScheduleCalendarSpec(hour=[ScheduleRange(hour)], minute=[ScheduleRange(minute)])],
        time_zone_name="UTC",
    )


async def ensure_daily_report_schedule(client: Client, settings: Settings) -> str:
    """Create (or update) the schedule that reports on the previous UTC day, every day.

    Idempotent: every worker start may call it. Each run starts `DailyReportWorkflow` with no day:
    the workflow takes the day before the run's scheduled time. Runs may overlap (a day whose
    delivery still retries must not make the next day's report skip); a run missed while Temporal
    was down is caught up for up to a week, each on its own day.
    """
    desired = Schedule(
        action=ScheduleActionStartWorkflow(
            DAILY_REPORT_WORKFLOW,
            DailyReportInput(),
            id=DAILY_REPORT_SCHEDULE_ID,
            task_queue=settings.temporal_task_queue,
            execution_timeout=DAILY_REPORT_WORKFLOW_TIMEOUT,
        ),
        spec=daily_report_spec(settings),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.ALLOW_ALL, catchup_window=timedelta(days=7)),
        state=ScheduleState(note="The daily support report of the previous UTC day (crm-fte report run)."),
    )
    return await _create_or_update(client, DAILY_REPORT_SCHEDULE_ID, desired, trigger_now=False)
