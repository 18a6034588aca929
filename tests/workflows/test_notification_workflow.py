"""NotificationWorkflow on the real Temporal server: each sink on its own, once, never blocking its caller.

The worker replays every task (max_cached_workflows=0); Slack, the webhook receiver and Gmail are
the local HTTP fakes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.worker import Worker

from activities.deps import ActivityDeps
from core.settings import Settings
from crm.repositories import notifications as repo
from crm.repositories.notifications import NotificationDeliveryRow
from tests.activities.test_notifications import a_notification, notify_settings
from tests.channels.gmail_support import GmailOAuthFake
from tests.fakes.slack_fake import SlackFake
from tests.fakes.webhook_sink import WebhookSink
from tests.workflows.helpers import eventually, inbound
from tests.workflows.notify_parent import NotifyTwiceTestWorkflow
from workers.bridge import signal_with_start
from workers.registry import activity_callables, workflow_classes, workflow_runner
from workflows.contracts import ConversationState
from workflows.notification_contracts import Notification, NotificationOutcome, notification_workflow_id
from workflows.notifications import NotificationWorkflow


@pytest.fixture
def slack() -> Iterator[SlackFake]:
    with SlackFake() as fake:
        yield fake


@pytest.fixture
def receiver() -> Iterator[WebhookSink]:
    with WebhookSink(status=200, body="thanks") as sink:
        yield sink


@pytest.fixture
def gmail() -> Iterator[GmailOAuthFake]:
    with GmailOAuthFake() as fake:
        yield fake


@pytest.fixture
async def notify_worker(
    client: Client, settings: Settings, gmail: GmailOAuthFake, slack: SlackFake, receiver: WebhookSink
) -> AsyncIterator[tuple[Worker, Settings]]:
    own = notify_settings(settings, gmail, slack, receiver).model_copy(
        update={"temporal_task_queue": f"notify-{uuid.uuid4().hex[:8]}"}
    )
    deps = ActivityDeps.create(own)
    worker = Worker(
        client,
        task_queue=own.temporal_task_queue,
        workflows=[*workflow_classes(), NotifyTwiceTestWorkflow],
        workflow_runner=workflow_runner(),
        activities=activity_callables(deps),
        max_cached_workflows=0,
    )
    try:
        async with worker:
            yield worker, own
    finally:
        await deps.close()


async def start(client: Client, own: Settings, n: Notification, **options: Any) -> Any:
    return await client.start_workflow(
        NotificationWorkflow.run,
        n,
        id=notification_workflow_id(n.idempotency_key),
        task_queue=own.temporal_task_queue,
        **options,
    )


async def rows(sessions: async_sessionmaker[AsyncSession], n: Notification) -> dict[str, NotificationDeliveryRow]:
    async with sessions() as session:
        return {r.sink: r for r in await repo.deliveries_of(session, idempotency_key=n.idempotency_key)}


async def test_every_sink_gets_it_once_and_a_second_start_sends_nothing(
    client: Client,
    notify_worker: tuple[Worker, Settings],
    slack: SlackFake,
    receiver: WebhookSink,
    gmail: GmailOAuthFake,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    _, own = notify_worker
    n = a_notification()
    handle = await start(client, own, n)
    outcome: NotificationOutcome = await handle.result()
    assert outcome == NotificationOutcome(delivered=["email", "slack", "webhook"])
    assert len(slack.posts) == 1 and len(receiver.requests) == 1 and len(gmail.sent) == 1

    # The same event again: Temporal refuses the workflow id ...
    with pytest.raises(WorkflowAlreadyStartedError):
        await start(client, own, n, id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
    # ... and once the id could be reused (after the namespace's retention), the table holds.
    again = await start(client, own, n, id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE)
    assert (await again.result()).delivered == ["email", "slack", "webhook"]
    assert len(slack.posts) == 1 and len(receiver.requests) == 1 and len(gmail.sent) == 1
    assert {sink: r.attempts for sink, r in (await rows(sessions, n)).items()} == {"email": 1, "slack": 1, "webhook": 1}


async def test_a_sink_that_is_down_delays_only_itself_and_is_delivered_once(
    client: Client,
    notify_worker: tuple[Worker, Settings],
    slack: SlackFake,
    receiver: WebhookSink,
    gmail: GmailOAuthFake,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    _, own = notify_worker
    n = a_notification(kind="sla_due_soon")
    # Slack fails once (retried after the policy's 5 s), then rate limits three times (its Retry-After,
    # 1 s, is honoured instead of the policy's growing backoff).
    slack.fail_next(500, "rollup_error")
    slack.fail_next(429, "rate_limited", retry_after=1, times=3)
    handle = await start(client, own, n)

    async def others_delivered() -> dict[str, NotificationDeliveryRow] | None:
        found = await rows(sessions, n)
        done = all(found.get(s) is not None and found[s].status == "delivered" for s in ("email", "webhook"))
        return found if done else None

    found = await eventually(others_delivered, timeout=15)
    assert found["slack"].status == "pending" and slack.posts == []
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING

    outcome = await asyncio.wait_for(handle.result(), timeout=60)
    assert outcome.delivered == ["email", "slack", "webhook"]
    assert len(slack.posts) == 1 and len(receiver.requests) == 1 and len(gmail.sent) == 1
    final = (await rows(sessions, n))["slack"]
    assert final.status == "delivered" and final.attempts == 5 and final.last_error is None


async def test_a_refusal_is_final_and_the_caller_never_waits(
    client: Client,
    notify_worker: tuple[Worker, Settings],
    slack: SlackFake,
    receiver: WebhookSink,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    _, own = notify_worker
    n = a_notification(kind="customer_replied", assignee="ann@example.test")
    slack.revoke()
    receiver.fail_next(503, times=1)  # the webhook is down for one attempt (retried after 5 s)
    parent = await client.start_workflow(
        NotifyTwiceTestWorkflow.run, n, id=f"notify-parent-{uuid.uuid4().hex[:8]}", task_queue=own.temporal_task_queue
    )
    # The parent started the child once (the second start found it) and finished without waiting.
    assert await asyncio.wait_for(parent.result(), timeout=10) == [True, False]
    child = client.get_workflow_handle(notification_workflow_id(n.idempotency_key), result_type=NotificationOutcome)
    assert (await child.describe()).status == WorkflowExecutionStatus.RUNNING

    outcome = await asyncio.wait_for(child.result(), timeout=60)
    assert outcome == NotificationOutcome(delivered=["email", "webhook"], refused=["slack"])
    found = await rows(sessions, n)
    assert found["slack"].status == "refused" and found["slack"].attempts == 1
    assert "no_service" in (found["slack"].last_error or "")
    assert found["webhook"].attempts == 2 and len(receiver.requests) == 2


async def test_a_conversation_tells_the_team_of_its_escalation_and_of_the_customers_next_message(
    client: Client,
    notify_worker: tuple[Worker, Settings],
    kb_ingested: None,
    receiver: WebhookSink,
) -> None:
    """ConversationWorkflow → abandoned NotificationWorkflow children → the signed webhook."""
    _, own = notify_worker
    first = inbound("whatsapp", "how much is the enterprise plan for 300 seats?")
    workflow_id = await signal_with_start(client, own, first)

    async def kinds(n: int) -> list[str] | None:
        got = [json.loads(r.body)["type"] for r in receiver.requests]
        return got if len(got) >= n else None

    assert await eventually(lambda: kinds(1), timeout=45) == ["escalation_new"]
    posted = json.loads(receiver.requests[0].body)
    assert posted["reason"] == "pricing" and posted["channel"] == "whatsapp"
    assert posted["ticket_number"] and "enterprise plan" in posted["summary"]
    # While a person owns it, the customer writes again: the AI stays quiet, the team hears of it.
    again = inbound("whatsapp", "hello?? anyone there", key=first.conversation_key, phone=first.sender.phone)
    await signal_with_start(client, own, again)
    assert await eventually(lambda: kinds(2), timeout=45) == ["escalation_new", "customer_replied"]
    state = await client.get_workflow_handle(workflow_id).query("state", result_type=ConversationState)
    assert state.status == "escalated"
