"""The notification activities: which sinks are configured, and one delivery to one sink.

`send_notification` is idempotent per (idempotency key, sink): the attempt is recorded in
`notification_deliveries` first; a delivered row returns without sending, a refused one refuses
again; after the sink's answer the row is marked delivered, refused (final) or keeps its last error
(retried by the workflow's policy). The email sink also survives a lost answer (a retried attempt
finds its own Message-ID in the mailbox); Slack and webhooks may see a repeat in that one case, which
is why a webhook receiver dedupes on the delivery id.
"""

from __future__ import annotations

import email.utils
import hashlib
from datetime import UTC, datetime

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import ActivityDeps
from activities.notifications import render
from activities.notifications.sinks import SinkRefused, post_slack, post_webhook, send_email
from core.logging import get_logger
from core.settings import Settings
from core.vocabulary import NotificationSink
from crm.db import transaction
from crm.repositories import notifications as repo
from workflows.notification_contracts import (
    Notification,
    NotificationDelivered,
    NotificationDelivery,
    NotificationErrorType,
    NotificationSinks,
)
from workflows.notifications import NOTIFICATION_SINKS_ACTIVITY, SEND_NOTIFICATION_ACTIVITY

log = get_logger(__name__)


def configured_sinks(settings: Settings) -> list[NotificationSink]:
    """The sinks whose setting is set (a sink missing a companion setting is refused when used, visibly)."""
    sinks: list[NotificationSink] = []
    if settings.notify_email_to:
        sinks.append("email")
    if settings.notify_slack_webhook_url is not None:
        sinks.append("slack")
    if settings.notify_webhook_url is not None:
        sinks.append("webhook")
    return sinks


def email_recipients(team: str, n: Notification) -> str:
    """The assignee when the conversation's owner is an email address (agents are named by key), else the team."""
    owner = email.utils.parseaddr(n.assignee or "")[1]
    return owner if "@" in owner and " " not in owner else team


def _refused(message: str) -> ApplicationError:
    return ApplicationError(message, type=NotificationErrorType.REFUSED, non_retryable=True)


class NotificationActivities:
    """Team notifications through the support mailbox, Slack and a signed webhook."""

    def __init__(self, deps: ActivityDeps) -> None:
        self.deps = deps

    @activity.defn(name=NOTIFICATION_SINKS_ACTIVITY)
    async def notification_sinks(self) -> NotificationSinks:
        """The sinks configured on this worker (email, slack, webhook)."""
        return NotificationSinks(sinks=configured_sinks(self.deps.settings))

    @activity.defn(name=SEND_NOTIFICATION_ACTIVITY)
    async def send_notification(self, inp: NotificationDelivery) -> NotificationDelivered:
        """Deliver one notification to one sink, at most once (a delivered one is never sent again)."""
        n, sink = inp.notification, inp.sink
        async with transaction(self.deps.sessions) as session:
            row = await repo.begin_attempt(
                session,
                idempotency_key=n.idempotency_key,
                sink=sink,
                kind=n.kind,
                conversation_id=n.conversation_id,
                at=datetime.now(UTC),
            )
        if row.status == "delivered":
            log.info("notification.already_delivered", sink=sink, key=n.idempotency_key)
            return NotificationDelivered(
                sink=sink, attempts=row.attempts, already_delivered=True, provider_id=row.provider_id
            )
        if row.status == "refused":
            raise _refused(row.last_error or f"{sink} refused this notification")
        try:
            provider_id = await self._deliver(n, sink)
        except SinkRefused as exc:
            await self._record_failure(n, sink, str(exc), final=True)
            log.warning("notification.refused", sink=sink, key=n.idempotency_key, error=str(exc))
            raise _refused(str(exc)) from None
        except Exception as exc:
            # Retryable: the workflow's policy tries again with backoff. A cancellation (timeout,
            # worker shutdown) is not an Exception and leaves the row as it was.
            error = str(exc) or type(exc).__name__
            await self._record_failure(n, sink, error, final=False)
            log.warning(
                "notification.attempt_failed", sink=sink, key=n.idempotency_key, attempt=row.attempts, error=error
            )
            raise
        async with transaction(self.deps.sessions) as session:
            await repo.record_delivered(
                session, idempotency_key=n.idempotency_key, sink=sink, provider_id=provider_id, at=datetime.now(UTC)
            )
        log.info("notification.delivered", sink=sink, kind=n.kind, key=n.idempotency_key, attempts=row.attempts)
        return NotificationDelivered(sink=sink, attempts=row.attempts, provider_id=provider_id)

    async def _record_failure(self, n: Notification, sink: NotificationSink, error: str, *, final: bool) -> None:
        async with transaction(self.deps.sessions) as session:
            await repo.record_failure(session, idempotency_key=n.idempotency_key, sink=sink, error=error, final=final)

    async def _deliver(self, n: Notification, sink: NotificationSink) -> str | None:
        s = self.deps.settings
        link = render.console_url(s, n)
        if sink == "email":
            if not s.notify_email_to:
                raise SinkRefused("NOTIFY_EMAIL_TO is not set")
            # A stable Message-ID per notification: a retried attempt finds its own earlier send.
            message_id = "notify-" + hashlib.sha256(n.idempotency_key.encode()).hexdigest()[:32]
            return await send_email(
                s,
                message_id=message_id,
                to=email_recipients(s.notify_email_to, n),
                subject=render.headline(n),
                text=render.email_text(n, link),
            )
        async with httpx.AsyncClient(timeout=s.notify_http_timeout_seconds, follow_redirects=False) as client:
            if sink == "slack":
                if s.notify_slack_webhook_url is None:
                    raise SinkRefused("NOTIFY_SLACK_WEBHOOK_URL is not set")
                await post_slack(client, s.notify_slack_webhook_url.get_secret_value(), render.slack_payload(n, link))
                return None
            if s.notify_webhook_url is None:
                raise SinkRefused("NOTIFY_WEBHOOK_URL is not set")
            if s.notify_webhook_secret is None or not s.notify_webhook_secret.get_secret_value():
                # Never send an unsigned webhook: its receiver could not tell it from a forgery.
                raise SinkRefused("NOTIFY_WEBHOOK_SECRET is not set: an unsigned webhook is never sent")
            await post_webhook(
                client,
                str(s.notify_webhook_url),
                secret=s.notify_webhook_secret.get_secret_value(),
                delivery_id=n.idempotency_key,
                body=render.webhook_body(n, link),
            )
            return None
