"""Continue-as-new keeps the dedupe state; checked-in histories still replay (determinism)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.deps import ActivityDeps
from core.settings import Settings
from tests.workflows.helpers import eventually, inbound, make_worker, messages_of
from workers.bridge import signal_with_start
from workflows.contracts import ConversationState
from workflows.conversation import ConversationWorkflow

HISTORIES = Path(__file__).parent / "histories"


async def test_continue_as_new_carries_the_dedupe_state(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession], kb_ingested: None
) -> None:
    own = settings.model_copy(
        update={"temporal_task_queue": f"can-{uuid.uuid4().hex[:8]}", "conversation_max_turns_per_run": 1}
    )
    deps = ActivityDeps.create(own)
    try:
        async with make_worker(client, own, deps):
            first = inbound("whatsapp", "How do I export a project to CSV?")
            workflow_id = await signal_with_start(client, own, first)
            handle = client.get_workflow_handle(workflow_id)
            first_run = (await handle.describe()).run_id

            async def new_run() -> str | None:
                run_id = (await client.get_workflow_handle(workflow_id).describe()).run_id
                return run_id if run_id != first_run else None

            second_run = await eventually(new_run)
            # The same message again (a replayed Kafka record) reaches the new run: still a duplicate.
            await signal_with_start(client, own, first)
            second = inbound("whatsapp", "And how do I turn on two-factor authentication?", phone=first.sender.phone)
            await signal_with_start(client, own, second)

            async def two_replies() -> list[dict[str, object]] | None:
                rows = await messages_of(sessions, workflow_id)
                return rows if [r["direction"] for r in rows].count("outbound") >= 2 else None

            rows = await eventually(two_replies)
            assert [r["direction"] for r in rows].count("inbound") == 2
            assert [r["external_message_id"] for r in rows if r["direction"] == "inbound"] == [
                first.external_message_id,
                second.external_message_id,
            ]
            state = await client.get_workflow_handle(workflow_id).query("state", result_type=ConversationState)
            assert state.turns == 2 and state.ticket_number is not None
            assert second_run != first_run
    finally:
        await deps.close()


def _histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


@pytest.mark.parametrize("path", _histories(), ids=lambda p: p.stem)
async def test_checked_in_histories_replay_without_nondeterminism(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[ConversationWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


def _send_inputs(path: Path) -> list[object]:
    """The decoded inputs of the send activities a history scheduled."""
    events = json.loads(path.read_text())["events"]
    inputs = []
    for event in events:
        attributes = event.get("activityTaskScheduledEventAttributes")
        if attributes and attributes["activityType"]["name"].startswith("send_"):
            inputs.append(json.loads(base64.b64decode(attributes["input"]["payloads"][0]["data"])))
    return inputs


def test_there_are_checked_in_histories() -> None:
    names = {p.stem for p in _histories()}
    assert {"answered_web_question", "escalated_then_resolved", "owned_then_handed_back"} <= names
    # Older shapes must keep replaying: v1_* have only regular activities (before the short steps
    # became local activities, behind workflow.patched); v2_* pass the send activities a bare
    # message id (before SendReplyInput); the current ones pass {"message_id": ...}.
    assert {"v1_answered_web_question", "v1_escalated_then_resolved"} <= names
    assert {"v2_answered_web_question", "v2_escalated_then_resolved"} <= names
    for path in _histories():
        markers = path.read_text().count("EVENT_TYPE_MARKER_RECORDED")
        if path.stem.startswith("v1_"):
            assert markers == 0, path.name
        else:
            assert markers > 0, path.name
        sends = _send_inputs(path)
        assert sends, path.name
        if path.stem.startswith(("v1_", "v2_")):
            assert all(isinstance(value, str) for value in sends), path.name
        else:
            assert all(isinstance(value, dict) and set(value) == {"message_id"} for value in sends), path.name


async def test_queries_during_the_first_turn_never_break_replay(worker, client: Client, settings: Settings) -> None:
    """A query that arrives while the first workflow task runs its local activities makes the server
    end that task early, so the turn's markers land in the next task. With full replay on every task
    (this worker caches nothing) each query replays that split history: every one must succeed, and
    the finished history must replay."""
    message = inbound("web_form", "How much does the Pro plan cost for 40 users? Can you give us a discount?")
    workflow_id = await signal_with_start(client, settings, message)
    handle = client.get_workflow_handle(workflow_id)
    for _ in range(200):
        state = await handle.query("state", result_type=ConversationState)  # raises if replay fails
        if state.status == "escalated" and len(state.last_messages) >= 2:
            break
        await asyncio.sleep(0.02)
    assert state.status == "escalated" and state.escalation is not None and state.escalation.reason == "pricing"
    history = await handle.fetch_history()
    replayer = Replayer(workflows=[ConversationWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
