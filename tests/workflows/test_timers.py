"""Durable timers with Temporal's time-skipping test server: the escalation SLA and idle close.

The activities are the real ones, on the session's PostgreSQL; only the clock is skipped.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from activities.deps import ActivityDeps
from core.settings import Settings
from tests.fakes.webhook_sink import WebhookSink
from tests.workflows.helpers import eventually, inbound, make_worker
from workers.bridge import signal_with_start
from workflows.contracts import OWNERSHIP_UPDATE, ConversationState, OwnershipChange, OwnershipOutcome


async def _state(env: WorkflowEnvironment, workflow_id: str) -> ConversationState:
    return await env.client.get_workflow_handle(workflow_id).query("state", result_type=ConversationState)


async def test_escalation_sla_timer_raises_priority_when_no_human_answers(
    skipping_env: WorkflowEnvironment,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    kb_ingested: None,
) -> None:
    # Today and the next three days are holidays: the SLA clock skips them like a weekend.
    today = (await skipping_env.get_current_time()).date()
    holidays = [today + timedelta(days=n) for n in range(4)]
    # The time-skipping server cannot register custom search attributes.
    own = settings.model_copy(
        update={
            "temporal_task_queue": f"sla-{uuid.uuid4().hex[:8]}",
            "temporal_search_attributes": False,
            "business_holidays": ",".join(d.isoformat() for d in holidays),
        }
    )
    deps = ActivityDeps.create(own)
    try:
        async with make_worker(skipping_env.client, own, deps):
            message = inbound("email", "I was double charged this month and I want a refund for the second charge.")
            workflow_id = await signal_with_start(skipping_env.client, own, message)

            async def escalated() -> ConversationState | None:
                state = await _state(skipping_env, workflow_id)
                return (
                    state
                    if state.escalation is not None
                    and state.last_messages[-1:]
                    and state.last_messages[-1].direction == "outbound"
                    else None
                )

            state = await eventually(escalated)
            assert state.escalation is not None
            assert state.escalation.reason == "refund" and state.escalation.priority == "high"
            due = state.escalation.sla_due_at
            now = await skipping_env.get_current_time()
            assert due > now  # two business hours from now, weekends, nights and holidays excluded
            assert due.date() > holidays[-1] and due.weekday() < 5
            await skipping_env.sleep(due - now + timedelta(minutes=1))
            state = await eventually(lambda: _bumped(skipping_env, workflow_id))
            assert state.escalation is not None and state.escalation.priority == "urgent"
            assert state.escalation.notified_count == 1 and state.status == "escalated"
            async with sessions() as session:
                row = (
                    await session.execute(
                        text(
                            "SELECT e.priority, e.notified_count, t.priority FROM escalations e JOIN tickets t ON "
                            "t.id = e.ticket_id JOIN conversations c ON c.id = e.conversation_id WHERE c.workflow_id = :w"
                        ),
                        {"w": workflow_id},
                    )
                ).one()
            assert tuple(row) == ("urgent", 1, "urgent")
    finally:
        await deps.close()


async def test_the_team_is_warned_before_the_sla_passes_and_told_when_it_has(
    skipping_env: WorkflowEnvironment,
    settings: Settings,
    kb_ingested: None,
) -> None:
    with WebhookSink(status=200) as receiver:
        own = settings.model_copy(
            update={
                "temporal_task_queue": f"sla-notify-{uuid.uuid4().hex[:8]}",
                "temporal_search_attributes": False,
                "notify_webhook_url": receiver.url("/hooks/crm"),
                "notify_webhook_secret": SecretStr("whsec-test-0123456789"),
                "notify_sla_due_soon_minutes": 30.0,
            }
        )
        deps = ActivityDeps.create(own)
        try:
            async with make_worker(skipping_env.client, own, deps):
                message = inbound("whatsapp", "someone took over my account and changed the password")
                workflow_id = await signal_with_start(skipping_env.client, own, message)

                async def kinds(n: int) -> list[str] | None:
                    got = [json.loads(r.body)["type"] for r in receiver.requests]
                    return got if len(got) >= n else None

                assert await eventually(lambda: kinds(1)) == ["escalation_new"]
                state = await _state(skipping_env, workflow_id)
                assert state.escalation is not None
                due = state.escalation.sla_due_at
                now = await skipping_env.get_current_time()
                await skipping_env.sleep(due - now - timedelta(minutes=29))
                assert await eventually(lambda: kinds(2)) == ["escalation_new", "sla_due_soon"]
                await skipping_env.sleep(timedelta(minutes=30))
                assert await eventually(lambda: kinds(3)) == ["escalation_new", "sla_due_soon", "sla_breached"]
                assert (await eventually(lambda: _bumped(skipping_env, workflow_id))).status == "escalated"
        finally:
            await deps.close()


async def _bumped(env: WorkflowEnvironment, workflow_id: str) -> ConversationState | None:
    state = await _state(env, workflow_id)
    return state if state.escalation is not None and state.escalation.notified_count >= 1 else None


async def test_idle_conversation_closes_and_resolves_its_ticket(
    skipping_env: WorkflowEnvironment,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    kb_ingested: None,
) -> None:
    own = settings.model_copy(
        update={
            "temporal_task_queue": f"idle-{uuid.uuid4().hex[:8]}",
            "conversation_idle_timeout_seconds": 3600.0,
            "csat_enabled": False,  # the rating asked after a close has its own tests (test_ratings)
            "temporal_search_attributes": False,
        }
    )
    deps = ActivityDeps.create(own)
    try:
        async with make_worker(skipping_env.client, own, deps):
            message = inbound("web_form", "Thanks! How do I turn on two-factor authentication?")
            workflow_id = await signal_with_start(skipping_env.client, own, message)
            handle = skipping_env.client.get_workflow_handle(workflow_id)

            async def answered() -> ConversationState | None:
                state = await _state(skipping_env, workflow_id)
                return state if any(m.direction == "outbound" for m in state.last_messages) else None

            await eventually(answered)
            await skipping_env.sleep(timedelta(hours=1, minutes=1))
            assert await handle.result() == "closed"
            assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
            async with sessions() as session:
                row = (
                    await session.execute(
                        text(
                            "SELECT c.status, t.status, c.outcome FROM conversations c "
                            "JOIN tickets t ON t.conversation_id = c.id WHERE c.workflow_id = :w"
                        ),
                        {"w": workflow_id},
                    )
                ).one()
            # The AI's answer was delivered and the customer wrote nothing more within the window.
            assert tuple(row) == ("closed", "resolved", "resolved_by_ai")

            # Escalated, handed back by a person who never replied, then silence: nobody answered.
            pricing = inbound("web_form", "how much for 40 seats on pro? any discount?")
            waiting_id = await signal_with_start(skipping_env.client, own, pricing)

            async def waiting() -> ConversationState | None:
                state = await _state(skipping_env, waiting_id)
                return state if state.ownership == "waiting" and len(state.last_messages) >= 2 else None

            await eventually(waiting)
            waiting_handle = skipping_env.client.get_workflow_handle(waiting_id)
            await waiting_handle.execute_update(
                OWNERSHIP_UPDATE, OwnershipChange(action="hand_back", agent="Ana"), result_type=OwnershipOutcome
            )
            await skipping_env.sleep(timedelta(hours=1, minutes=1))
            assert await waiting_handle.result() == "closed"
            async with sessions() as session:
                outcome = await session.scalar(
                    text("SELECT outcome FROM conversations WHERE workflow_id = :w"), {"w": waiting_id}
                )
            assert outcome == "abandoned"
    finally:
        await deps.close()
