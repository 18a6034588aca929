"""A parent workflow for the notification tests: starts the same notification twice, waits for neither.

Its own module so the workflow sandbox imports only Temporal and `workflows.notifications`.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.notification_contracts import Notification
    from workflows.notifications import start_notification


@workflow.defn(name="NotifyTwiceTestWorkflow")
class NotifyTwiceTestWorkflow:
    """Start one notification twice, as a conversation might on a replayed event."""

    @workflow.run
    async def run(self, notification: Notification) -> list[bool]:
        first = await start_notification(notification)
        second = await start_notification(notification)
        return [first, second]
