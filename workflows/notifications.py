"""NotificationWorkflow: deliver one team notification to every configured sink, each on its own.

A conversation workflow starts one per event (a new escalation, an SLA about to pass or passed, a
customer reply in a conversation a human owns) as an abandoned child under
`notification_workflow_id(key)`: a second start of the same event is refused by Temporal and
`start_notification` treats that as done. The conversation never waits for a delivery.

The workflow asks a local activity which sinks the worker has configured (settings are read in
activities only), then runs `send_notification` once per sink in parallel, each with its own retry
policy: a sink that is down only delays its own delivery (backoff up to 10 minutes, for a day); a
sink that refuses the notification for good stops at once. The activity records every delivery in
`notification_deliveries` and never sends a delivered one again.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Literal

from temporalio import activity, workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from core.vocabulary import NotificationSink
    from workflows.activity_refs import declared_only
    from workflows.notification_contracts import (
        NOTIFICATION_WORKFLOW,
        Notification,
        NotificationDelivered,
        NotificationDelivery,
        NotificationErrorType,
        NotificationOutcome,
        NotificationSinks,
        notification_workflow_id,
    )

SEND_NOTIFICATION_ACTIVITY = "send_notification"
NOTIFICATION_SINKS_ACTIVITY = "notification_sinks"

# One HTTP call (Slack, a webhook) or one Gmail send, plus two small writes.
SEND_TIMEOUT = timedelta(seconds=30)
# A sink that is down is retried with backoff (5 s, 10 s, ... at most every 10 minutes) for a day;
# a refusal (4xx other than 408/429, a bad URL, no secret) is final at once.
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=0,
    non_retryable_error_types=[NotificationErrorType.REFUSED],
)
SEND_SCHEDULE_TO_CLOSE = timedelta(hours=24)
# Reading settings: instant; retried briefly.
SINKS_TIMEOUT = timedelta(seconds=10)
SINKS_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=5)


@activity.defn(name=NOTIFICATION_SINKS_ACTIVITY)
async def notification_sinks() -> NotificationSinks:
    """The sinks configured on this worker (email, slack, webhook)."""
    declared_only(NOTIFICATION_SINKS_ACTIVITY)


@activity.defn(name=SEND_NOTIFICATION_ACTIVITY)
async def send_notification(inp: NotificationDelivery) -> NotificationDelivered:
    """Deliver one notification to one sink, at most once (a delivered one is never sent again)."""
    declared_only(SEND_NOTIFICATION_ACTIVITY)


@workflow.defn(name=NOTIFICATION_WORKFLOW)
class NotificationWorkflow:
    """Deliver one notification to each configured sink; never fails."""

    @workflow.run
    async def run(self, notification: Notification) -> NotificationOutcome:
        configured = await workflow.execute_local_activity(
            notification_sinks, start_to_close_timeout=SINKS_TIMEOUT, retry_policy=SINKS_RETRY
        )
        sinks = sorted(set(configured.sinks))
        results = await asyncio.gather(*(self._deliver(notification, sink) for sink in sinks))
        outcome = NotificationOutcome()
        for sink, result in zip(sinks, results, strict=True):
            if result == "delivered":
                outcome.delivered.append(sink)
            elif result == "refused":
                outcome.refused.append(sink)
            else:
                outcome.gave_up.append(sink)
        workflow.logger.info(
            "notification %s: delivered %s, refused %s, gave up %s",
            notification.kind,
            outcome.delivered,
            outcome.refused,
            outcome.gave_up,
        )
        return outcome

    async def _deliver(
        self, notification: Notification, sink: NotificationSink
    ) -> Literal["delivered", "refused", "gave_up"]:
        try:
            await workflow.execute_activity(
                send_notification,
                NotificationDelivery(notification=notification, sink=sink),
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


async def start_notification(notification: Notification) -> bool:
    """From a workflow: start the notification's workflow as an abandoned child; False if it already ran.

    The child outlives its parent (a conversation that continues-as-new or closes does not cancel a
    delivery) and the parent only waits for the start, never for a delivery.
    """
    try:
        await workflow.start_child_workflow(
            NotificationWorkflow.run,
            notification,
            id=notification_workflow_id(notification.idempotency_key),
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        return False
    return True
