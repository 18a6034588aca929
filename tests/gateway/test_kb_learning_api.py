"""Learning from resolved tickets (issue 17) on the real stack: a `no_answer` gap a person answered
becomes a suggestion; an agent edits and approves it; KB search finds it at once; the next customer
who asks gets the AI's answer with the person's words instead of an escalation. Plus the ownership
path (suggestion created inside `resolve_escalation_record`), bad input, the audit trail and
`gaps_closed`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from activities.channels.formatting import format_reply
from core.settings import Settings
from crm.db import transaction
from crm.repositories import channel_configs, kb_suggestions, knowledge_base
from kb.learning import ReplyPart, strip_framing
from tests.gateway.agent_helpers import bearer, new_key
from tests.workflows.helpers import eventually, inbound, messages_of
from workers.bridge import signal_with_start

# Nothing in the bundled articles answers this: the offline responder hands off with `no_answer`.
QUESTION = "Does the Zephyr 9000 label printer work with TechCorp, and which driver should I install for it?"
PARAPHRASE = "hi, which driver do i need so my zephyr 9000 label printer works with techcorp??"
ANSWER = (
    "Yes. Install the Zephyr Universal Driver 4.2 from zephyr.example/drivers, then choose "
    "Settings > Printing > Zephyr 9000 in TechCorp."
)


async def _open_escalation(sessions: async_sessionmaker[AsyncSession], workflow_id: str) -> dict[str, Any] | None:
    async with sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT e.id, e.reason, t.ticket_number, c.id AS conversation_id FROM escalations e "
                    "JOIN conversations c ON c.id = e.conversation_id JOIN tickets t ON t.conversation_id = c.id "
                    "WHERE c.workflow_id = :w AND e.status = 'open'"
                ),
                {"w": workflow_id},
            )
        ).one_or_none()
    return dict(row._mapping) if row is not None else None


async def _escalated_no_answer(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession], question: str
) -> dict[str, Any]:
    workflow_id = await signal_with_start(client, settings, inbound("web_form", question, name="Ana Souza"))

    async def escalated() -> dict[str, Any] | None:
        return await _open_escalation(sessions, workflow_id)

    found = await eventually(escalated)
    assert found["reason"] == "no_answer"

    async def holding_reply_sent() -> bool:
        rows = await messages_of(sessions, workflow_id)
        return any(r["direction"] == "outbound" and r["delivery_status"] != "pending" for r in rows)

    await eventually(holding_reply_sent)
    return {**found, "workflow_id": workflow_id}


async def _forget_article(sessions: async_sessionmaker[AsyncSession], article_id: str | None) -> None:
    # The session's knowledge base is shared with other tests: leave it as the bundled articles.
    if article_id:
        async with transaction(sessions) as session:
            await knowledge_base.delete_articles(session, article_ids=[article_id])


async def test_a_person_answer_becomes_a_kb_entry_the_next_customer_gets(
    http: httpx.AsyncClient, worker, client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    gap = await _escalated_no_answer(client, settings, sessions, QUESTION)
    agent, key = await new_key(sessions)
    resolved = await http.post(
        f"/api/v1/escalations/{gap['ticket_number']}/resolve",
        json={"reply": ANSWER, "action": "close"},
        headers=bearer(key),
    )
    assert resolved.status_code == 200, resolved.text
    # The one-step resolve records the reply after the escalation's resolution: the reply's own
    # activity stores the suggestion, before anyone opens the review panel.
    async with sessions() as session:
        early = await session.scalar(
            text("SELECT count(*) FROM kb_suggestions WHERE escalation_id = :e"), {"e": gap["id"]}
        )
    assert early == 1

    async def suggested() -> dict[str, Any] | None:
        listed = await http.get("/api/v1/kb-suggestions", params={"status": "pending"}, headers=bearer(key))
        assert listed.status_code == 200, listed.text
        mine = [s for s in listed.json()["suggestions"] if s["escalation_id"] == str(gap["id"])]
        return mine[0] if mine else None

    suggestion = await eventually(suggested)
    assert suggestion["question"] == QUESTION
    # The person's words only: no greeting, no signature, no ticket reference.
    assert suggestion["answer"] == ANSWER
    sid = suggestion["id"]
    article_id = f"learned-{sid}"
    try:
        edited = await http.patch(
            f"/api/v1/kb-suggestions/{sid}",
            json={"question": "Which driver does the Zephyr 9000 label printer need with TechCorp?"},
            headers=bearer(key),
        )
        assert edited.status_code == 200, edited.text
        assert edited.json()["edited_by"] == agent and edited.json()["answer"] == ANSWER

        approved = await http.post(f"/api/v1/kb-suggestions/{sid}/approve", headers=bearer(key))
        assert approved.status_code == 200, approved.text
        body = approved.json()
        assert (body["status"], body["reviewed_by"], body["article_id"]) == ("approved", agent, article_id)

        # Searchable at once, by the same search the AI's tool uses.
        found = await http.get("/api/v1/kb/search", params={"q": "Zephyr 9000 driver"}, headers=bearer(key))
        assert found.status_code == 200, found.text
        assert found.json()["hits"][0]["article_id"] == article_id
        assert "Zephyr Universal Driver 4.2" in found.json()["hits"][0]["content"]

        # Reviewed once: a second approval or a rejection is refused; so is an edit.
        assert (await http.post(f"/api/v1/kb-suggestions/{sid}/approve", headers=bearer(key))).status_code == 409
        assert (await http.post(f"/api/v1/kb-suggestions/{sid}/reject", headers=bearer(key))).status_code == 409
        late = await http.patch(f"/api/v1/kb-suggestions/{sid}", json={"answer": "x"}, headers=bearer(key))
        assert late.status_code == 409

        # The next customer, asking in their own words, gets the AI's answer with the person's words.
        workflow_b = await signal_with_start(client, settings, inbound("web_form", PARAPHRASE, name="Ben Ode"))

        async def answered() -> str | None:
            rows = await messages_of(sessions, workflow_b)
            replies = [r for r in rows if r["direction"] == "outbound" and r["role"] == "agent"]
            return str(replies[0]["content"]) if replies else None

        reply = await eventually(answered)
        assert "Zephyr Universal Driver 4.2" in reply
        assert await _open_escalation(sessions, workflow_b) is None

        async with sessions() as session:
            actions = (
                await session.execute(
                    text(
                        "SELECT action FROM human_actions WHERE agent_name = :a AND action LIKE 'kb_suggestion.%' "
                        "ORDER BY id"
                    ),
                    {"a": agent},
                )
            ).scalars()
            assert list(actions) == ["kb_suggestion.edited", "kb_suggestion.approved"]
            now = datetime.now(UTC)
            assert (
                await kb_suggestions.gaps_closed(session, now - timedelta(minutes=5), now + timedelta(minutes=1)) >= 1
            )
            assert (
                await kb_suggestions.gaps_closed(session, now + timedelta(minutes=1), now + timedelta(minutes=2)) == 0
            )
    finally:
        await _forget_article(sessions, article_id)


async def test_an_owned_answer_is_suggested_when_handed_back_and_can_be_rejected(
    http: httpx.AsyncClient, worker, client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    gap = await _escalated_no_answer(client, settings, sessions, "Can TechCorp print my Gantt chart on an A0 plotter?")
    _, key = await new_key(sessions)
    conversation = gap["conversation_id"]
    sent = await http.post(
        f"/api/v1/conversations/{conversation}/replies",
        json={"reply": "Yes: export the chart as PDF (A0) from the Gantt view."},
        headers=bearer(key),
    )
    assert sent.status_code == 200, sent.text
    back = await http.post(f"/api/v1/conversations/{conversation}/hand-back", json={}, headers=bearer(key))
    assert back.status_code == 200, back.text

    # Created inside `resolve_escalation_record`'s transaction: no listing needed.
    async with sessions() as session:
        stored = await session.execute(
            text("SELECT id, answer FROM kb_suggestions WHERE escalation_id = :e"), {"e": gap["id"]}
        )
        [(sid, answer)] = list(stored)
    assert answer == "Yes: export the chart as PDF (A0) from the Gantt view."

    assert (await http.get(f"/api/v1/kb-suggestions/{sid}", headers=bearer(key))).json()["status"] == "pending"
    empty = await http.patch(f"/api/v1/kb-suggestions/{sid}", json={"answer": "   "}, headers=bearer(key))
    assert empty.status_code == 422
    nothing = await http.patch(f"/api/v1/kb-suggestions/{sid}", json={}, headers=bearer(key))
    assert nothing.status_code == 422
    rejected = await http.post(f"/api/v1/kb-suggestions/{sid}/reject", headers=bearer(key))
    assert rejected.status_code == 200, rejected.text
    assert (rejected.json()["status"], rejected.json()["article_id"]) == ("rejected", None)
    assert (await http.post(f"/api/v1/kb-suggestions/{sid}/approve", headers=bearer(key))).status_code == 409

    for unknown in (str(uuid.uuid4()), "not-a-uuid"):
        assert (await http.get(f"/api/v1/kb-suggestions/{unknown}", headers=bearer(key))).status_code == 404
        assert (await http.post(f"/api/v1/kb-suggestions/{unknown}/approve", headers=bearer(key))).status_code == 404
    assert (await http.get("/api/v1/kb-suggestions")).status_code == 401
    _, reader = await new_key(sessions, scopes=("escalations:read",))
    assert (await http.post(f"/api/v1/kb-suggestions/{sid}/reject", headers=bearer(reader))).status_code == 403


@pytest.mark.parametrize("channel", ["web_form", "email", "whatsapp"])
async def test_the_channel_framing_is_taken_off_a_stored_reply(
    channel: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # The real formatter of each channel, so kb/learning.py's framing rules cannot drift from it.
    async with sessions() as session:
        style = await channel_configs.get_style(session, channel=channel)
    body = "Install the Zephyr driver 4.2.\n\nThen restart TechCorp."
    parts = format_reply(body, style=style, customer_name="Ana Souza", ticket_number="TKT-0042", human_agent="Bob Li")
    stored = [ReplyPart(content=p, human_agent="Bob Li", part=i + 1) for i, p in enumerate(parts)]
    assert strip_framing(stored, style=style, ticket_number="TKT-0042", human_agent="Bob Li") == body
