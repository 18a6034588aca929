"""`send_notification`: each sink's wire format, once per (notification, sink), refusals are final.

Real PostgreSQL; Slack, the webhook receiver and Gmail are local HTTP fakes the production code
talks to over TCP.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.deps import ActivityDeps
from activities.notifications import NotificationActivities, configured_sinks
from activities.notifications.sinks import SinkUnavailable, sign
from core.logging import configure_logging
from core.settings import Settings
from core.vocabulary import NotificationSink
from crm.repositories import notifications as repo
from crm.repositories.notifications import NotificationDeliveryRow
from tests.channels.gmail_support import GmailOAuthFake, gmail_settings
from tests.fakes.slack_fake import SlackFake
from tests.fakes.webhook_sink import WebhookSink
from workers.registry import activity_callables
from workflows import notifications as wf
from workflows.notification_contracts import (
    SUMMARY_MAX_CHARS,
    Notification,
    NotificationDelivery,
    NotificationErrorType,
    notification_key,
)

WEBHOOK_SECRET = "whsec-" + uuid.uuid4().hex
PUBLIC = "https://support.example.test"


@pytest.fixture
def slack() -> Iterator[SlackFake]:
    with SlackFake() as fake:
        yield fake


@pytest.fixture
def receiver() -> Iterator[WebhookSink]:
    with WebhookSink(status=204) as sink:
        yield sink


@pytest.fixture
def gmail() -> Iterator[GmailOAuthFake]:
    with GmailOAuthFake() as fake:
        yield fake


def notify_settings(
    settings: Settings, gmail: GmailOAuthFake, slack: SlackFake, receiver: WebhookSink, **extra: Any
) -> Settings:
    """The session settings with all three sinks configured against the fakes."""
    update: dict[str, Any] = {
        "public_base_url": PUBLIC,
        "notify_email_to": "team@example.test, lead@example.test",
        "notify_slack_webhook_url": SecretStr(slack.webhook_url),
        "notify_webhook_url": receiver.url("/hooks/crm"),
        "notify_webhook_secret": SecretStr(WEBHOOK_SECRET),
        "notify_http_timeout_seconds": 5.0,
    }
    return gmail_settings(settings, gmail, **(update | extra))


@pytest.fixture
async def deps(
    settings: Settings, gmail: GmailOAuthFake, slack: SlackFake, receiver: WebhookSink
) -> AsyncIterator[ActivityDeps]:
    deps = ActivityDeps.create(notify_settings(settings, gmail, slack, receiver))
    yield deps
    await deps.close()


def a_notification(**changes: Any) -> Notification:
    conversation_id = str(uuid.uuid4())
    fields: dict[str, Any] = {
        "idempotency_key": notification_key("escalation_new", conversation_id, str(uuid.uuid4())),
        "kind": "escalation_new",
        "conversation_id": conversation_id,
        "ticket_number": "TKT-0042",
        "channel": "email",
        "reason": "refund",
        "priority": "high",
        "sla_due_at": datetime(2026, 12, 2, 14, 0, tzinfo=UTC),
        "summary": "Customer asks for a refund of the annual plan <after> the trial & renewal.",
        "occurred_at": datetime(2026, 12, 2, 12, 0, tzinfo=UTC),
    }
    fields.update(changes)
    return Notification(**fields)


async def send(deps: ActivityDeps, n: Notification, sink: NotificationSink, attempt: int = 1) -> Any:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return await env.run(
        NotificationActivities(deps).send_notification, NotificationDelivery(notification=n, sink=sink)
    )


async def row(sessions: async_sessionmaker[AsyncSession], n: Notification, sink: str) -> NotificationDeliveryRow:
    async with sessions() as session:
        found = {r.sink: r for r in await repo.deliveries_of(session, idempotency_key=n.idempotency_key)}
    return found[sink]  # type: ignore[index]


def documented_verify() -> Callable[..., bool]:
    """The receiver's check exactly as docs/notifications.md writes it (its Python example, run)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "notifications.md").read_text()
    [code] = re.findall(r"```python\n(.*?)```", doc, re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/notifications.md", "exec"), namespace)
    return namespace["verify"]  # type: ignore[no-any-return]


def verify(secret: str, recorded: dict[str, str], body: bytes) -> bool:
    headers = {
        "X-CRM-FTE-Timestamp": recorded["x-crm-fte-timestamp"],
        "X-CRM-FTE-Signature": recorded["x-crm-fte-signature"],
    }
    return documented_verify()(secret.encode(), headers, body)


# --- each sink's wire format -------------------------------------------------------------------


async def test_slack_gets_text_and_blocks_once(
    deps: ActivityDeps, slack: SlackFake, sessions: async_sessionmaker[AsyncSession]
) -> None:
    n = a_notification()
    first = await send(deps, n, "slack")
    again = await send(deps, n, "slack", attempt=2)
    assert first.sink == "slack" and not first.already_delivered
    assert again.already_delivered and len(slack.posts) == 1
    [post] = slack.posts
    link = f"{PUBLIC}/agent?conversation={n.conversation_id}"
    assert "New escalation · TKT-0042 · Refund · High" in post["text"] and link in post["text"]
    # The customer's words go as plain_text (Slack renders no markup or links in it); the rest is mrkdwn.
    assert {"type": "plain_text", "text": n.summary, "emoji": False} in [b.get("text") for b in post["blocks"]]
    blocks = json.dumps(post["blocks"])
    assert link in blocks and "Assignee" in blocks and "unassigned" in blocks
    stored = await row(sessions, n, "slack")
    assert stored.status == "delivered" and stored.attempts == 1 and stored.delivered_at is not None


async def test_the_webhook_is_signed_and_the_signature_verifies(
    deps: ActivityDeps, receiver: WebhookSink, sessions: async_sessionmaker[AsyncSession]
) -> None:
    n = a_notification(summary="x" * 5000, assignee="ann@example.test", kind="sla_breached")
    assert len(n.summary) == SUMMARY_MAX_CHARS and n.summary.endswith("…")
    await send(deps, n, "webhook")
    [request] = receiver.requests_to("/hooks/crm")
    assert request.method == "POST" and request.header("content-type") == "application/json"
    assert request.header("x-crm-fte-delivery") == n.idempotency_key
    assert request.header("x-crm-fte-signature", "").startswith("v1=")
    assert verify(WEBHOOK_SECRET, request.headers, request.body)
    assert not verify("another-secret", request.headers, request.body)
    assert not verify(WEBHOOK_SECRET, request.headers, request.body + b" ")
    # A correctly signed but stale request (a replay ten minutes later) is refused.
    old = int(time.time()) - 600
    stale = {"x-crm-fte-timestamp": str(old), "x-crm-fte-signature": sign(WEBHOOK_SECRET, old, request.body)}
    assert not verify(WEBHOOK_SECRET, stale, request.body)
    body = request.json()
    assert body["id"] == n.idempotency_key and body["type"] == "sla_breached" and body["version"] == 1
    assert body["ticket_number"] == "TKT-0042" and body["assignee"] == "ann@example.test"
    assert body["console_url"] == f"{PUBLIC}/agent?conversation={n.conversation_id}"
    assert len(body["summary"]) == SUMMARY_MAX_CHARS
    assert WEBHOOK_SECRET not in request.body.decode()
    assert (await row(sessions, n, "webhook")).status == "delivered"


async def test_email_goes_to_the_team_in_a_new_thread_once(deps: ActivityDeps, gmail: GmailOAuthFake) -> None:
    n = a_notification(kind="customer_replied", assignee="ann@example.test", reason=None)
    first = await send(deps, n, "email")
    # A retried attempt whose row was not marked (the answer was lost) finds its own Message-ID.
    async with deps.sessions() as session, session.begin():
        await session.execute(
            text(
                "UPDATE notification_deliveries SET status = 'pending', delivered_at = NULL WHERE idempotency_key = :k"
            ),
            {"k": n.idempotency_key},
        )
    again = await send(deps, n, "email", attempt=2)
    assert len(gmail.sent) == 1 and first.provider_id == again.provider_id == gmail.sent[0].id
    [mail] = gmail.sent
    # The conversation has an owner with an address: the email goes to them, not the whole team.
    assert mail.to == "ann@example.test" and mail.sender == gmail.email_address
    assert mail.subject == "Customer replied · TKT-0042 · High"
    assert mail.in_reply_to is None and mail.references is None
    assert mail.text is not None and f"{PUBLIC}/agent?conversation={n.conversation_id}" in mail.text
    assert "Assignee: ann@example.test" in mail.text

    unowned = a_notification(assignee=None)
    await send(deps, unowned, "email")
    assert gmail.sent[-1].to == "team@example.test, lead@example.test"
    assert gmail.sent[-1].subject == "New escalation · TKT-0042 · Refund · High"
    named = a_notification(assignee="Ann Lee")  # an agent named without an address: the team
    await send(deps, named, "email")
    assert gmail.sent[-1].to == "team@example.test, lead@example.test"


# --- retries and refusals ----------------------------------------------------------------------


async def test_a_retryable_failure_is_recorded_then_delivered_exactly_once(
    deps: ActivityDeps, slack: SlackFake, sessions: async_sessionmaker[AsyncSession]
) -> None:
    n = a_notification()
    slack.fail_next(500, "rollup_error")
    with pytest.raises(SinkUnavailable, match="HTTP 500: rollup_error"):
        await send(deps, n, "slack")
    failed = await row(sessions, n, "slack")
    assert failed.status == "pending" and failed.attempts == 1 and "rollup_error" in (failed.last_error or "")
    slack.fail_next(429, "rate_limited", retry_after=7)
    with pytest.raises(ApplicationError) as limited:
        await send(deps, n, "slack", attempt=2)
    assert not limited.value.non_retryable and limited.value.next_retry_delay == timedelta(seconds=7)
    await send(deps, n, "slack", attempt=3)
    await send(deps, n, "slack", attempt=4)
    assert len(slack.posts) == 1
    done = await row(sessions, n, "slack")
    assert done.status == "delivered" and done.attempts == 3 and done.last_error is None


async def test_a_final_refusal_stops_and_is_recorded(
    deps: ActivityDeps, slack: SlackFake, receiver: WebhookSink, sessions: async_sessionmaker[AsyncSession]
) -> None:
    n = a_notification()
    slack.revoke()
    with pytest.raises(ApplicationError) as refused:
        await send(deps, n, "slack")
    assert refused.value.non_retryable and refused.value.type == NotificationErrorType.REFUSED
    assert "HTTP 404: no_service" in str(refused.value)
    # Asked again (a second workflow for the same event): refused from the record, nothing posted.
    calls = len(slack.requests)
    with pytest.raises(ApplicationError, match="no_service"):
        await send(deps, n, "slack", attempt=2)
    assert len(slack.requests) == calls
    stored = await row(sessions, n, "slack")
    assert stored.status == "refused" and stored.attempts == 1 and stored.delivered_at is None

    # The webhook: 4xx is final except 408 and 429.
    timeout = a_notification()
    receiver.fail_next(408)
    with pytest.raises(SinkUnavailable):
        await send(deps, timeout, "webhook")
    await send(deps, timeout, "webhook", attempt=2)
    gone = a_notification()
    receiver.fail_next(410)
    with pytest.raises(ApplicationError, match="HTTP 410") as final:
        await send(deps, gone, "webhook")
    assert final.value.non_retryable
    assert (await row(sessions, gone, "webhook")).status == "refused"


async def test_an_unsigned_webhook_is_never_sent(
    settings: Settings, gmail: GmailOAuthFake, slack: SlackFake, receiver: WebhookSink
) -> None:
    deps = ActivityDeps.create(notify_settings(settings, gmail, slack, receiver, notify_webhook_secret=None))
    try:
        with pytest.raises(ApplicationError, match="NOTIFY_WEBHOOK_SECRET") as refused:
            await send(deps, a_notification(), "webhook")
        assert refused.value.non_retryable and receiver.requests == []
    finally:
        await deps.close()


async def test_no_secret_reaches_the_logs_or_the_errors(
    deps: ActivityDeps, slack: SlackFake, receiver: WebhookSink, capsys: pytest.CaptureFixture[str]
) -> None:
    structlog.reset_defaults()
    configure_logging(level="DEBUG", log_format="json", process="test")
    slack_token = slack.webhook_url.rsplit("/", 1)[1]
    errors: list[str] = []
    try:
        slack.fail_next(503, "service_unavailable")
        receiver.fail_next(500)
        for sink in ("slack", "webhook"):
            with pytest.raises(Exception) as failed:
                await send(deps, a_notification(), sink)  # type: ignore[arg-type]
            errors.append(str(failed.value))
        await send(deps, a_notification(), "slack")  # delivered: httpx would log the URL at INFO
        slack.revoke()
        with pytest.raises(ApplicationError) as refused:
            await send(deps, a_notification(), "slack")
        errors.append(str(refused.value))
        await send(deps, a_notification(), "webhook")
        # Slack unreachable: the transport error names no URL either.
        slack.stop()
        with pytest.raises(SinkUnavailable) as unreachable:
            await send(deps, a_notification(), "slack")
        errors.append(str(unreachable.value))
    finally:
        logs = capsys.readouterr().err
        structlog.reset_defaults()
        configure_logging(level="WARNING", log_format="console")
    assert "notification.refused" in logs and "notification.attempt_failed" in logs
    for secret in (slack_token, WEBHOOK_SECRET, slack.path):
        assert secret not in logs
        assert all(secret not in e for e in errors)


# --- configuration and declarations ------------------------------------------------------------


def test_the_configured_sinks_follow_the_settings(settings: Settings) -> None:
    assert configured_sinks(settings) == []
    everything = settings.model_copy(
        update={
            "notify_email_to": "team@example.test",
            "notify_slack_webhook_url": SecretStr("https://hooks.slack.example/services/x"),
            "notify_webhook_url": "https://receiver.example/hook",
        }
    )
    assert configured_sinks(everything) == ["email", "slack", "webhook"]


def test_a_sink_url_that_is_not_http_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="NOTIFY_SLACK_WEBHOOK_URL must be an http") as error:
        Settings(_env_file=None, notify_slack_webhook_url="ftp://hooks.example/T0/B0/very-secret")  # type: ignore[call-arg]
    assert "very-secret" not in str(error.value)
    with pytest.raises(ValueError):
        Settings(_env_file=None, notify_webhook_url="file:///etc/passwd")  # type: ignore[call-arg]


def test_the_idempotency_key_is_stable_and_safe() -> None:
    one = notification_key("sla_breached", "c-1", "esc 7/2026-12-02T14:00:00+00:00")
    assert one == notification_key("sla_breached", "c-1", "esc 7/2026-12-02T14:00:00+00:00")
    assert one != notification_key("sla_due_soon", "c-1", "esc 7/2026-12-02T14:00:00+00:00")
    assert " " not in one and "/" not in one
    assert len(notification_key("customer_replied", "c", "m" * 500)) <= 200


@pytest.mark.parametrize("declared", [wf.send_notification, wf.notification_sinks])
def test_the_declarations_match_the_registered_activities(settings: Settings, declared: Any) -> None:
    import inspect
    import typing

    def signature(fn: Any) -> tuple[list[object], object]:
        hints = typing.get_type_hints(fn)
        return [hints.get(p) for p in inspect.signature(fn).parameters if p != "self"], hints.get("return")

    registered = {
        activity._Definition.must_from_callable(fn).name: fn for fn in activity_callables(ActivityDeps.create(settings))
    }
    name = activity._Definition.must_from_callable(declared).name
    assert name in registered and signature(declared) == signature(registered[name])
