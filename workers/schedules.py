"""Temporal Schedules the worker keeps in place: today the Gmail push-watch renewal."""

from __future__ import annotations

import re
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from core.settings import Settings
from workflows.gmail_watch import GMAIL_WATCH_WORKFLOW, WATCH_WORKFLOW_TIMEOUT, GmailWatchInput


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
    try:
        await client.create_schedule(schedule_id, desired, trigger_immediately=True)
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
