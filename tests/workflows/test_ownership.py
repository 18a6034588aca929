"""Ownership as workflow state, on the real Temporal dev server and PostgreSQL (offline responder).

AI → waiting for a person → a named person → back to the AI (with a note) or closed; the worker
replays every task (max_cached_workflows=0), so each step is also a determinism check.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowUpdateFailedError

from core.settings import Settings
from tests.workflows.helpers import eventually, inbound, messages_of
from workers.bridge import signal_with_start
from workflows.contracts import (
    OWNERSHIP_UPDATE,
    RATE_UPDATE,
    ConversationState,
    OwnershipChange,
    OwnershipOutcome,
    Rating,
    RatingOutcome,
)


async def _state(client: Client, workflow_id: str) -> ConversationState:
    return await client.get_workflow_handle(workflow_id).query("state", result_type=ConversationState)


async def _act(client: Client, workflow_id: str, **change: str) -> OwnershipOutcome:
    return await client.get_workflow_handle(workflow_id).execute_update(
        OWNERSHIP_UPDATE, OwnershipChange.model_validate(change), result_type=OwnershipOutcome
    )


async def _escalation(sessions: async_sessionmaker[AsyncSession], workflow_id: str) -> dict[str, object]:
    async with sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT e.reason, e.status, e.assignee, e.assigned_at, e.responded_at, e.resolved_by, "
                    "e.resolution_action FROM escalations e JOIN conversations c ON c.id = e.conversation_id "
                    "WHERE c.workflow_id = :w ORDER BY e.created_at DESC LIMIT 1"
                ),
                {"w": workflow_id},
            )
        ).one()
    return dict(row._mapping)


async def _assignee_attribute(client: Client, workflow_id: str) -> str | None:
    description = await client.get_workflow_handle(workflow_id).describe()
    attrs = {p.key.name: p.value for p in description.typed_search_attributes}
    value = attrs.get("Assignee")
    return str(value) if value is not None else None


async def test_a_person_claims_replies_many_times_and_hands_back_with_a_note(
    worker, client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    first = inbound("web_form", "How much would 40 Pro seats cost us per year? Any discount for nonprofits?")
    workflow_id = await signal_with_start(client, settings, first)

    async def waiting() -> ConversationState | None:
        state = await _state(client, workflow_id)
        return state if state.ownership == "waiting" and len(state.last_messages) >= 2 else None

    state = await eventually(waiting)
    assert state.status == "escalated" and state.assignee is None

    claimed = await _act(client, workflow_id, action="claim", agent="Ana")
    assert (claimed.ownership, claimed.assignee, claimed.status) == ("human", "Ana", "escalated")
    assert await _assignee_attribute(client, workflow_id) == "Ana"
    row = await _escalation(sessions, workflow_id)
    assert row["assignee"] == "Ana" and row["assigned_at"] is not None and row["responded_at"] is None

    # Someone else cannot claim it, reply to it or release it: the refusal names the holder.
    for change in ({"action": "claim"}, {"action": "reply", "reply": "Hi!"}, {"action": "release"}):
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await _act(client, workflow_id, agent="Bob", **change)
        assert "held by Ana" in str(refused.value.cause)

    # The customer writes while Ana owns it: recorded, not answered by the AI.
    await signal_with_start(
        client,
        settings,
        inbound("web_form", "hello?? anyone there", key=first.conversation_key, email=first.sender.email),
    )

    async def second_inbound() -> bool | None:
        rows = await messages_of(sessions, workflow_id)
        return True if len([r for r in rows if r["direction"] == "inbound"]) == 2 else None

    await eventually(second_inbound)
    for text_ in ("Hi! Let me check the nonprofit discount for you.", "Good news: 30 % off, I sent the quote."):
        outcome = await _act(client, workflow_id, action="reply", agent="Ana", reply=text_)
        assert outcome.reply_delivered and len(outcome.reply_message_ids) == 1 and outcome.assignee == "Ana"
    rows = await messages_of(sessions, workflow_id)
    assert [r["role"] for r in rows if r["direction"] == "outbound"] == ["agent", "human_agent", "human_agent"]
    assert (await _escalation(sessions, workflow_id))["responded_at"] is not None

    back = await _act(client, workflow_id, action="hand_back", agent="Ana", note="Quote sent with 30 % NGO discount.")
    assert (back.ownership, back.assignee, back.status) == ("ai", None, "active")
    assert await _assignee_attribute(client, workflow_id) is None
    row = await _escalation(sessions, workflow_id)
    assert (row["status"], row["resolved_by"], row["resolution_action"]) == ("resolved", "Ana", "resume_ai")
    async with sessions() as session:
        notes = (
            await session.execute(
                text(
                    "SELECT n.kind, n.author, n.body FROM conversation_notes n "
                    "JOIN conversations c ON c.id = n.conversation_id WHERE c.workflow_id = :w"
                ),
                {"w": workflow_id},
            )
        ).all()
    assert [tuple(n) for n in notes] == [("hand_back", "Ana", "Quote sent with 30 % NGO discount.")]

    # Back with the AI: nothing to hand back or release any more.
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await _act(client, workflow_id, action="release", agent="Ana")
    assert "take it over first" in str(refused.value.cause)


async def test_taking_over_from_the_ai_sends_no_holding_message_and_closing_ends_it(
    worker, client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    first = inbound("whatsapp", "How do I export a project to CSV?")
    workflow_id = await signal_with_start(client, settings, first)

    async def answered() -> ConversationState | None:
        state = await _state(client, workflow_id)
        return state if state.ownership == "ai" and len(state.last_messages) >= 2 else None

    await eventually(answered)
    # Not closed yet: the customer cannot rate it (the ticket page says so).
    with pytest.raises(WorkflowUpdateFailedError) as early:
        await client.get_workflow_handle(workflow_id).execute_update(
            RATE_UPDATE, Rating(score=4, via="ticket_page"), result_type=RatingOutcome
        )
    assert "not_closed" in str(early.value.cause)
    taken = await _act(client, workflow_id, action="take_over", agent="Ana")
    assert (taken.ownership, taken.assignee, taken.status) == ("human", "Ana", "escalated")
    row = await _escalation(sessions, workflow_id)
    assert (row["reason"], row["assignee"]) == ("taken_over", "Ana")
    # No "a person will answer you" message: the person who took it answers.
    assert len([r for r in await messages_of(sessions, workflow_id) if r["direction"] == "outbound"]) == 1

    # Ana gives it to Bob (a lead may reassign whoever holds it); Bob releases it to the queue.
    given = await _act(client, workflow_id, action="assign", agent="Ana", to="Bob")
    assert given.assignee == "Bob"
    released = await _act(client, workflow_id, action="release", agent="Bob")
    assert (released.ownership, released.assignee) == ("waiting", None)
    assert (await _escalation(sessions, workflow_id))["assignee"] is None

    closed = await _act(client, workflow_id, action="close", agent="Bob")
    assert (closed.ownership, closed.status) == ("closed", "closed")
    assert (await _escalation(sessions, workflow_id))["resolution_action"] == "close"

    # Resolved by a person: the customer is asked once for a rating (the run waits for it).
    async def asked() -> bool | None:
        rows = await messages_of(sessions, workflow_id)
        return True if "How did we do?" in str(rows[-1]["content"]) else None

    await eventually(asked)
    async with sessions() as session:
        outcome = await session.scalar(
            text("SELECT outcome FROM conversations WHERE workflow_id = :w"), {"w": workflow_id}
        )
    assert outcome == "resolved_by_human"
