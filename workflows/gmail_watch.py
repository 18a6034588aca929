"""GmailWatchWorkflow: keep Gmail's push watch alive, started by a Temporal Schedule (not cron).

`users.watch` expires after at most seven days; Google recommends renewing it daily. The schedule
(`ensure_gmail_watch_schedule`, called by the worker at start-up) starts this workflow every
`GMAIL_WATCH_RENEW_HOURS`, once right away when it is created, and skips a run while the previous
one is still retrying. The workflow itself is one activity with its own timeout and retry policy,
so an outage of the Gmail API is retried and visible in the Temporal UI.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

if TYPE_CHECKING:
    from temporalio.client import Client

    from core.settings import Settings

GMAIL_WATCH_WORKFLOW = "GmailWatchWorkflow"
RENEW_GMAIL_WATCH_ACTIVITY = "renew_gmail_watch"

# One users.watch call and one small upsert.
WATCH_TIMEOUT = timedelta(seconds=30)
# Gmail outages and 429s retry with backoff for an hour (the watch still has days left); a request
# Gmail rejects (bad topic, missing Pub/Sub permission) or missing configuration fails at once.
WATCH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=0,
    non_retryable_error_types=["WatchRejected", "GmailNotConfigured"],
)
WATCH_SCHEDULE_TO_CLOSE = timedelta(hours=1)
WATCH_WORKFLOW_TIMEOUT = timedelta(hours=2)


class GmailWatchInput(BaseModel):
    """Start input of a renewal; the mailbox is informational (the activity renews the configured one)."""

    mailbox: str | None = None


class GmailWatchResult(BaseModel):
    mailbox: str
    history_id: int
    expiration: datetime | None = None
    # True when this renewal stored the first historyId baseline for the mailbox.
    baseline_stored: bool = False


@workflow.defn(name=GMAIL_WATCH_WORKFLOW)
class GmailWatchWorkflow:
    """Renew the support mailbox's Gmail push watch and record its expiry."""

    @workflow.run
    async def run(self, inp: GmailWatchInput) -> GmailWatchResult:
        result = await workflow.execute_activity(
            RENEW_GMAIL_WATCH_ACTIVITY,
            inp,
            result_type=GmailWatchResult,
            start_to_close_timeout=WATCH_TIMEOUT,
            schedule_to_close_timeout=WATCH_SCHEDULE_TO_CLOSE,
            retry_policy=WATCH_RETRY,
        )
        workflow.logger.info(
            "gmail watch renewed for %s until %s (historyId %s)", result.mailbox, result.expiration, result.history_id
        )
        return result


def gmail_watch_schedule_id(settings: Settings) -> str:
    """One schedule per support mailbox: `gmail-watch-support_example.com`."""
    mailbox = (settings.gmail_user_email or "mailbox").strip().lower()
    return "gmail-watch-" + re.sub(r"[^a-z0-9_.-]", "_", mailbox)


async def ensure_gmail_watch_schedule(client: Client, settings: Settings) -> str:
    """Create the renewal schedule (first run immediately) or bring an existing one up to date.

    Idempotent: every worker start may call it. An existing schedule keeps its state (an operator
    may have paused it) and gets the current interval, task queue and workflow options.
    """
    from temporalio.client import (
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
