"""GmailWatchWorkflow: keep Gmail's push watch alive, started by a Temporal Schedule (not cron).

`users.watch` expires after at most seven days; Google recommends renewing it daily. The schedule
(`workers.schedules.ensure_gmail_watch_schedule`, called by the worker at start-up) starts this
workflow every `GMAIL_WATCH_RENEW_HOURS`, once right away when it is created, and skips a run while
the previous one is still retrying. The workflow itself is one activity with its own timeout and retry policy,
so an outage of the Gmail API is retried and visible in the Temporal UI.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from workflows.contracts import ErrorType

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
    non_retryable_error_types=[ErrorType.WATCH_REJECTED, ErrorType.GMAIL_NOT_CONFIGURED],
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
        # Called by name: the activity lives with the other Gmail I/O, outside the workflow sandbox.
        result: GmailWatchResult = await workflow.execute_activity(
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
