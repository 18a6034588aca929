"""Gmail watch renewal on the session's real Temporal dev server: a Schedule starts GmailWatchWorkflow,
whose activity calls users.watch (Gmail fake, official client) and records the expiry in PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, ScheduleActionExecutionStartWorkflow, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from activities.channels.activities import GmailWatchActivities
from activities.deps import ActivityDeps
from core.settings import Settings
from core.temporal import connect_temporal
from tests.channels.gmail_support import WATCH_TOPIC, GmailOAuthFake, gmail_settings
from tests.workflows.helpers import eventually
from workers.schedules import ensure_gmail_watch_schedule, gmail_watch_schedule_id
from workflows.gmail_watch import GmailWatchInput, GmailWatchResult, GmailWatchWorkflow


@dataclass
class WatchSetup:
    settings: Settings
    client: Client
    gmail: GmailOAuthFake


@pytest.fixture
def gmail() -> Iterator[GmailOAuthFake]:
    with GmailOAuthFake() as fake:
        yield fake


@pytest.fixture
async def watch(settings: Settings, gmail: GmailOAuthFake) -> AsyncIterator[WatchSetup]:
    """A worker with only the watch workflow and activity, on a task queue of its own, full replay."""
    own = gmail_settings(settings, gmail, temporal_task_queue=f"gmail-watch-{uuid.uuid4().hex[:8]}")
    client = await connect_temporal(own)
    deps = ActivityDeps.create(own)
    try:
        async with Worker(
            client,
            task_queue=own.temporal_task_queue,
            workflows=[GmailWatchWorkflow],
            activities=[GmailWatchActivities(deps).renew_gmail_watch],
            max_cached_workflows=0,
        ):
            yield WatchSetup(own, client, gmail)
    finally:
        await deps.close()


async def sync_state(sessions: async_sessionmaker[AsyncSession], mailbox: str) -> tuple[int, datetime | None] | None:
    async with sessions() as session:
        row = (
            await session.execute(
                text("SELECT history_id, watch_expiration FROM gmail_sync_state WHERE mailbox = :m"),
                {"m": mailbox.lower()},
            )
        ).one_or_none()
    return (int(row.history_id), row.watch_expiration) if row is not None else None


async def test_the_schedule_renews_the_watch_at_once_and_stores_baseline_and_expiry(
    watch: WatchSetup, sessions: async_sessionmaker[AsyncSession]
) -> None:
    gmail, client = watch.gmail, watch.client
    gmail.inject_email(from_="ana@example.org", subject="Before the watch", text="old mail")
    baseline = gmail.history_id
    schedule_id = await ensure_gmail_watch_schedule(client, watch.settings)
    assert schedule_id == gmail_watch_schedule_id(watch.settings)
    handle = client.get_schedule_handle(schedule_id)
    try:

        async def started() -> str | None:
            actions = (await handle.describe()).info.recent_actions
            for action in actions:
                if isinstance(action.action, ScheduleActionExecutionStartWorkflow):
                    return action.action.workflow_id
            return None

        workflow_id = await eventually(started, timeout=20, interval=0.2)
        result = await client.get_workflow_handle_for(GmailWatchWorkflow.run, workflow_id).result()
        assert isinstance(result, GmailWatchResult)
        assert result.mailbox == gmail.email_address.lower()
        assert result.baseline_stored and result.history_id == baseline
        assert result.expiration is not None and result.expiration > datetime.now(UTC) + timedelta(days=6)
        assert gmail.watch_requests == [
            {"topicName": WATCH_TOPIC, "labelIds": ["INBOX"], "labelFilterBehavior": "INCLUDE"}
        ]
        assert gmail.watching
        assert await sync_state(sessions, gmail.email_address) == (baseline, result.expiration)

        description = await handle.describe()
        assert description.schedule.spec.intervals[0].every == timedelta(hours=watch.settings.gmail_watch_renew_hours)

        # A worker restart calls it again: the schedule is updated in place, not duplicated or re-run.
        faster = watch.settings.model_copy(update={"gmail_watch_renew_hours": 6.0})
        assert await ensure_gmail_watch_schedule(client, faster) == schedule_id
        description = await handle.describe()
        assert description.schedule.spec.intervals[0].every == timedelta(hours=6)
        assert len(description.info.recent_actions) == 1
    finally:
        await handle.delete()


async def test_a_renewal_keeps_the_stored_cursor_and_updates_the_expiry(
    watch: WatchSetup, sessions: async_sessionmaker[AsyncSession]
) -> None:
    mailbox = watch.gmail.email_address.lower()
    async with sessions() as session, session.begin():
        await session.execute(
            text("INSERT INTO gmail_sync_state (mailbox, history_id) VALUES (:m, 7)"),
            {"m": mailbox},
        )
    result = await watch.client.execute_workflow(
        GmailWatchWorkflow.run,
        GmailWatchInput(mailbox=mailbox),
        id=f"gmail-watch-test-{uuid.uuid4().hex[:8]}",
        task_queue=watch.settings.temporal_task_queue,
    )
    assert not result.baseline_stored and result.history_id == 7
    assert result.expiration is not None
    assert await sync_state(sessions, mailbox) == (7, result.expiration)


async def failed_run(settings: Settings, gmail: GmailOAuthFake, **overrides: object) -> ApplicationError:
    """Run the workflow once with these settings; return the activity's ApplicationError."""
    own = gmail_settings(settings, gmail, temporal_task_queue=f"gmail-watch-{uuid.uuid4().hex[:8]}", **overrides)
    client = await connect_temporal(own)
    deps = ActivityDeps.create(own)
    try:
        async with Worker(
            client,
            task_queue=own.temporal_task_queue,
            workflows=[GmailWatchWorkflow],
            activities=[GmailWatchActivities(deps).renew_gmail_watch],
        ):
            with pytest.raises(WorkflowFailureError) as failure:
                await client.execute_workflow(
                    GmailWatchWorkflow.run,
                    GmailWatchInput(),
                    id=f"gmail-watch-test-{uuid.uuid4().hex[:8]}",
                    task_queue=own.temporal_task_queue,
                    execution_timeout=timedelta(seconds=30),
                )
    finally:
        await deps.close()
    cause = failure.value.cause
    assert isinstance(cause, ActivityError) and isinstance(cause.cause, ApplicationError)
    return cause.cause


async def test_missing_configuration_fails_the_run_without_retrying(settings: Settings, gmail: GmailOAuthFake) -> None:
    error = await failed_run(settings, gmail, gmail_watch_topic=None)
    assert error.type == "GmailNotConfigured" and error.non_retryable
    assert gmail.watch_requests == []


async def test_a_topic_gmail_rejects_fails_the_run_without_retrying(settings: Settings, gmail: GmailOAuthFake) -> None:
    error = await failed_run(settings, gmail, gmail_watch_topic="not-a-topic")
    assert error.type == "WatchRejected" and error.non_retryable
    assert len(gmail.requests_to("/gmail/v1/users/me/watch")) == 1  # rejected once, not retried
