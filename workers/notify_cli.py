"""`crm-fte notify test`: send a test notification to one sink now, and say what the sink answered."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated

import typer

from core.vocabulary import NotificationSink
from workers.terminal import make_console, plain

notify_app = typer.Typer(
    rich_markup_mode=None, help="Team notifications: try a sink (email, Slack, webhook).", no_args_is_help=True
)
console = make_console()


@notify_app.command("test")
def notify_test(
    sink: Annotated[str, typer.Option("--sink", help="email, slack or webhook", show_default=False)],
) -> None:
    """Send one test notification to SINK (directly, not through a workflow) and print the outcome."""
    from temporalio.exceptions import ApplicationError

    from activities.deps import ActivityDeps
    from activities.notifications import NotificationActivities, configured_sinks
    from core.vocabulary import NOTIFICATION_SINKS
    from workers.cli import fail, target_settings
    from workflows.notification_contracts import Notification, NotificationDelivery, notification_key

    if sink not in NOTIFICATION_SINKS:
        raise fail(f"--sink must be one of {', '.join(NOTIFICATION_SINKS)}", 2)
    chosen: NotificationSink = sink
    settings = target_settings("notify", ("database",))
    if chosen not in configured_sinks(settings):
        raise fail(f"the {chosen} sink is not configured (see docs/notifications.md for its NOTIFY_* settings)")
    conversation_id = str(uuid.uuid4())
    notification = Notification(
        idempotency_key=notification_key("escalation_new", conversation_id, f"test-{uuid.uuid4().hex}"),
        kind="escalation_new",
        conversation_id=conversation_id,
        ticket_number="TKT-TEST",
        channel="web_form",
        reason="human_request",
        priority="medium",
        summary="Test notification from `crm-fte notify test`: nothing to do.",
        occurred_at=datetime.now(UTC),
    )

    async def main() -> None:
        deps = ActivityDeps.create(settings)
        try:
            await NotificationActivities(deps).send_notification(
                NotificationDelivery(notification=notification, sink=chosen)
            )
        finally:
            await deps.close()

    try:
        asyncio.run(main())
    except ApplicationError as exc:
        kind = "refused" if exc.non_retryable else "failed (would be retried)"
        raise fail(f"{chosen} {kind}: {exc.message}") from None
    except Exception as exc:  # the sink's own errors name no URL or secret
        raise fail(f"{chosen} failed (would be retried): {str(exc) or type(exc).__name__}") from None
    console.print(plain(f"{chosen}: delivered (delivery id {notification.idempotency_key})", "green"))
