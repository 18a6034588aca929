"""CSAT: asked once after a resolved conversation closes, read from a reply or taken through the
`rate_conversation` update, stored once; a low one reopens the conversation to a person.

Time-skipping test server (the idle close and the rating window are hours); real activities on the
session's PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.deps import ActivityDeps
from core.settings import Settings
from tests.workflows.helpers import eventually, inbound, make_worker, messages_of
from workers.bridge import signal_with_start
from workflows.contracts import RATE_UPDATE, ConversationState, Rating, RatingOutcome
from workflows.ratings import parse_rating


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("4", (4, None)),
        ("4/5", (4, None)),
        ("5 stars!", (5, None)),
        ("\u2b50\u2b50\u2b50\u2b50", (4, None)),
        ("2 - took way too long", (2, "took way too long")),
        ("3. ok I guess", (3, "ok I guess")),
        ("1)useless", (1, "useless")),
        ("4 out of 5", (4, None)),
        ("10 users cant log in", None),
        ("2fa is broken again", None),
        ("hi, one more question", None),
        ("6", None),
    ],
)
def test_a_reply_is_read_as_a_rating_only_when_it_starts_with_one(
    reply: str, expected: tuple[int, str | None] | None
) -> None:
    assert parse_rating(reply) == expected


async def _state(env: WorkflowEnvironment, workflow_id: str) -> ConversationState:
    return await env.client.get_workflow_handle(workflow_id).query("state", result_type=ConversationState)


async def _answered_then_closed(env: WorkflowEnvironment, own: Settings, channel: str) -> tuple[str, str | None]:
    """A question the AI answers; an hour of silence closes it (resolved by the AI); the rating is asked."""
    message = inbound(channel, "How do I turn on two-factor authentication?")
    workflow_id = await signal_with_start(env.client, own, message)

    async def answered() -> ConversationState | None:
        state = await _state(env, workflow_id)
        return state if any(m.direction == "outbound" for m in state.last_messages) else None

    await eventually(answered)
    await env.sleep(timedelta(hours=1, minutes=1))

    async def asked() -> ConversationState | None:
        state = await _state(env, workflow_id)
        outbound = [m for m in state.last_messages if m.direction == "outbound"]
        return state if state.status == "closed" and len(outbound) >= 2 else None

    await eventually(asked)
    return workflow_id, message.sender.phone


async def test_a_low_reply_rating_reopens_the_conversation_and_a_high_page_rating_is_stored_once(
    skipping_env: WorkflowEnvironment, settings: Settings, sessions: async_sessionmaker[AsyncSession], kb_ingested: None
) -> None:
    own = settings.model_copy(
        update={
            "temporal_task_queue": f"csat-{uuid.uuid4().hex[:8]}",
            "conversation_idle_timeout_seconds": 3600.0,
            "temporal_search_attributes": False,
        }
    )
    deps = ActivityDeps.create(own)
    try:
        async with make_worker(skipping_env.client, own, deps):
            # WhatsApp: the customer answers the question with "2 - …": stored, and a person follows up.
            whatsapp_id, phone = await _answered_then_closed(skipping_env, own, "whatsapp")
            asked = [r for r in await messages_of(sessions, whatsapp_id) if r["direction"] == "outbound"][-1]
            assert "How did we do?" in str(asked["content"]) and "1 (very poor) to 5 (excellent)" in str(
                asked["content"]
            )
            key = phone or ""
            await signal_with_start(
                skipping_env.client,
                own,
                inbound("whatsapp", "2 - the steps did not match my screen", key=key, phone=phone),
            )

            async def reopened() -> ConversationState | None:
                state = await _state(skipping_env, whatsapp_id)
                return state if state.status == "escalated" else None

            state = await eventually(reopened)
            assert state.escalation is not None and state.escalation.reason == "low_rating"
            async with sessions() as session:
                rating = (
                    await session.execute(
                        text(
                            "SELECT r.score, r.comment, r.via, r.channel FROM csat_ratings r "
                            "JOIN conversations c ON c.id = r.conversation_id WHERE c.workflow_id = :w"
                        ),
                        {"w": whatsapp_id},
                    )
                ).one()
                note = await session.scalar(
                    text(
                        "SELECT n.body FROM conversation_notes n JOIN conversations c ON c.id = n.conversation_id "
                        "WHERE c.workflow_id = :w"
                    ),
                    {"w": whatsapp_id},
                )
                status = await session.scalar(
                    text("SELECT status FROM conversations WHERE workflow_id = :w"), {"w": whatsapp_id}
                )
            assert tuple(rating) == (2, "the steps did not match my screen", "reply", "whatsapp")
            assert note == "Rated 2/5: the steps did not match my screen"
            assert status == "escalated"  # reopened: in the people's queue
            holding = [r for r in await messages_of(sessions, whatsapp_id) if r["direction"] == "outbound"][-1]
            assert "sorry we fell short" in str(holding["content"])
            # Rated once: the ticket page cannot rate it again while a person follows up.
            with pytest.raises(WorkflowUpdateFailedError) as again:
                await skipping_env.client.get_workflow_handle(whatsapp_id).execute_update(
                    RATE_UPDATE, Rating(score=5, via="ticket_page"), result_type=RatingOutcome
                )
            assert "already_rated" in str(again.value.cause)

            # The web form: the ticket page's rating (the gateway's update) is stored; a second is refused.
            web_id, _ = await _answered_then_closed(skipping_env, own, "web_form")
            handle = skipping_env.client.get_workflow_handle(web_id)
            outcome = await handle.execute_update(
                RATE_UPDATE, Rating(score=5, comment="Quick and clear", via="ticket_page"), result_type=RatingOutcome
            )
            assert (outcome.score, outcome.reopened) == (5, False)
            # Rated: nothing more to wait for, the run ends (the gateway answers a late rating with 410).
            assert await handle.result() == "closed"
            with pytest.raises((RPCError, WorkflowUpdateFailedError)):
                await handle.execute_update(RATE_UPDATE, Rating(score=1, via="ticket_page"), result_type=RatingOutcome)
            async with sessions() as session:
                stored = (
                    await session.execute(
                        text(
                            "SELECT r.score, r.via FROM csat_ratings r JOIN conversations c "
                            "ON c.id = r.conversation_id WHERE c.workflow_id = :w"
                        ),
                        {"w": web_id},
                    )
                ).all()
            assert [tuple(r) for r in stored] == [(5, "ticket_page")]
    finally:
        await deps.close()


async def test_without_a_rating_the_window_ends_the_run(
    skipping_env: WorkflowEnvironment, settings: Settings, sessions: async_sessionmaker[AsyncSession], kb_ingested: None
) -> None:
    own = settings.model_copy(
        update={
            "temporal_task_queue": f"csat-{uuid.uuid4().hex[:8]}",
            "conversation_idle_timeout_seconds": 3600.0,
            "csat_window_hours": 2.0,
            "temporal_search_attributes": False,
        }
    )
    deps = ActivityDeps.create(own)
    try:
        async with make_worker(skipping_env.client, own, deps):
            workflow_id, _ = await _answered_then_closed(skipping_env, own, "web_form")
            handle = skipping_env.client.get_workflow_handle(workflow_id)
            # Nobody rates within the two-hour window: the run ends.
            await skipping_env.sleep(timedelta(hours=2, minutes=1))
            assert await handle.result() == "closed"
            async with sessions() as session:
                count = await session.scalar(
                    text(
                        "SELECT count(*) FROM csat_ratings r JOIN conversations c ON c.id = r.conversation_id "
                        "WHERE c.workflow_id = :w"
                    ),
                    {"w": workflow_id},
                )
            assert count == 0
    finally:
        await deps.close()


async def test_after_a_day_of_silence_whatsapp_is_not_asked_for_a_rating(
    skipping_env: WorkflowEnvironment, settings: Settings, sessions: async_sessionmaker[AsyncSession], kb_ingested: None
) -> None:
    """WhatsApp refuses a free-form message 24 h after the customer's last one: an idle close after
    25 h asks nothing (a refused question would otherwise hand the conversation to a person)."""
    own = settings.model_copy(
        update={
            "temporal_task_queue": f"csat-{uuid.uuid4().hex[:8]}",
            "conversation_idle_timeout_seconds": 25 * 3600.0,
            "temporal_search_attributes": False,
        }
    )
    deps = ActivityDeps.create(own)
    try:
        async with make_worker(skipping_env.client, own, deps):
            message = inbound("whatsapp", "How do I turn on two-factor authentication?")
            workflow_id = await signal_with_start(skipping_env.client, own, message)

            async def answered() -> ConversationState | None:
                state = await _state(skipping_env, workflow_id)
                return state if any(m.direction == "outbound" for m in state.last_messages) else None

            await eventually(answered)
            await skipping_env.sleep(timedelta(hours=25, minutes=1))
            handle = skipping_env.client.get_workflow_handle(workflow_id)
            assert await handle.result() == "closed"
            replies = [r for r in await messages_of(sessions, workflow_id) if r["direction"] == "outbound"]
            assert replies and not any("How did we do?" in str(r["content"]) for r in replies)
            async with sessions() as session:
                outcome = await session.scalar(
                    text("SELECT outcome FROM conversations WHERE workflow_id = :w"), {"w": workflow_id}
                )
            assert outcome == "resolved_by_ai"
    finally:
        await deps.close()
