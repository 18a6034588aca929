"""Internal notes and saved replies through the human-agent API, on the session's real PostgreSQL.

A note is seen by the team (its own endpoint and the conversation's history) and by nobody else:
not the customer's ticket page, not the model's transcript, not the messages table. Saved replies
are created, edited, deleted and rendered for a conversation with their placeholders filled.
Every bad input is a 4xx with a reason and changes nothing; every change is audited.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm.db import transaction
from crm.repositories import customer_data, messages, notes
from gateway.agents import SCOPE_READ, SCOPE_WRITE, create_api_key
from tests.crm import customer_records as rec


@dataclass
class Agent:
    name: str
    headers: dict[str, str]


async def agent(sessions: async_sessionmaker[AsyncSession], *scopes: str) -> Agent:
    name = f"Agent {rec.tag()}"
    async with transaction(sessions) as session:
        _, key = await create_api_key(session, name=name, scopes=scopes or (SCOPE_READ, SCOPE_WRITE))
    return Agent(name, {"Authorization": f"Bearer {key}"})


@dataclass
class Conversation:
    id: uuid.UUID
    ticket: str
    contact_email: str


async def conversation(sessions: async_sessionmaker[AsyncSession], name: str | None = "Dana Scully") -> Conversation:
    async with transaction(sessions) as session:
        who = await rec.customer(session, name=name, email=f"dana.{rec.tag()}@example.com")
        conv = await rec.conversation(session, who, channel="web_form", escalate=True)
        row = (
            await session.execute(
                text("SELECT ticket_number, contact_email FROM tickets WHERE id = :t"), {"t": who.ticket_ids[0]}
            )
        ).one()
    return Conversation(conv, row.ticket_number, row.contact_email)


async def count(sessions: async_sessionmaker[AsyncSession], sql: str, **params: Any) -> int:
    async with sessions() as session:
        return int(await session.scalar(text(sql), params) or 0)


async def audit(sessions: async_sessionmaker[AsyncSession], agent_name: str) -> list[dict[str, Any]]:
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT action, ticket_number, conversation_id, detail FROM human_actions "
                "WHERE agent_name = :a AND action NOT IN ('conversation.viewed', 'api_key.created') ORDER BY id"
            ),
            {"a": agent_name},
        )
        return [dict(r._mapping) for r in rows]


# ----------------------------------------------------------------------------- notes


async def test_notes_are_for_the_team_only_in_time_order_and_audited(
    http: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    sam = await agent(sessions)
    conv = await conversation(sessions)
    messages_before = await count(sessions, "SELECT count(*) FROM messages WHERE conversation_id = :c", c=conv.id)
    secret = f"Customer is on a legacy contract {rec.tag()}; check with billing first"
    first = await http.post(
        f"/api/v1/conversations/{conv.id}/notes", json={"body": f"  {secret}  "}, headers=sam.headers
    )
    assert first.status_code == 201, first.text
    note = first.json()
    assert note["body"] == secret and note["author"] == sam.name and note["conversation_id"] == str(conv.id)
    longest = "x" * 5000
    second = await http.post(f"/api/v1/conversations/{conv.id}/notes", json={"body": longest}, headers=sam.headers)
    assert second.status_code == 201, second.text

    listed = await http.get(f"/api/v1/conversations/{conv.id}/notes", headers=sam.headers)
    assert listed.status_code == 200, listed.text
    assert [n["body"] for n in listed.json()["notes"]] == [secret, longest]

    # Beside the messages in the team's view of the conversation…
    history = (await http.get(f"/api/v1/conversations/{conv.id}", headers=sam.headers)).json()
    current = next(c for c in history["conversations"] if c["id"] == str(conv.id))
    assert [n["body"] for n in current["notes"]] == [secret, longest]
    assert all(secret not in m["content"] for m in current["messages"])
    assert [(a["action"], a["ticket_number"]) for a in history["human_actions"]] == [
        ("note.added", conv.ticket),
        ("note.added", conv.ticket),
    ]

    # …and nowhere a customer or the model could read it.
    assert (
        await count(sessions, "SELECT count(*) FROM messages WHERE conversation_id = :c", c=conv.id) == messages_before
    )
    async with sessions() as session:
        transcript = await messages.recent_transcript(session, conversation_id=str(conv.id), limit=100)
    assert transcript and all(secret not in line.content for line in transcript)
    page = await http.get(f"/api/v1/tickets/{conv.ticket}", params={"email": conv.contact_email})
    assert page.status_code == 200, page.text
    assert secret not in page.text and "legacy contract" not in page.text
    as_agent = await http.get(f"/api/v1/tickets/{conv.ticket}", headers=sam.headers)
    assert as_agent.status_code == 200 and secret not in as_agent.text

    rows = await audit(sessions, sam.name)
    assert [r["action"] for r in rows] == ["note.added", "note.added"]
    assert rows[0]["conversation_id"] == conv.id and rows[0]["detail"]["note_id"] == note["id"]
    assert secret not in str(rows[0]["detail"]), "the note's text lives only in the notes table"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"body": ""}, "at least 1 character"),
        ({"body": "   \n\t "}, "at least 1 character"),
        ({"body": "y" * 5001}, "at most 5000 characters"),
        ({}, "Field required"),
        ({"body": 42}, "valid string"),
    ],
)
async def test_a_bad_note_is_422_with_the_reason_and_nothing_is_stored(
    http: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], body: dict[str, Any], reason: str
) -> None:
    sam = await agent(sessions)
    conv = await conversation(sessions)
    response = await http.post(f"/api/v1/conversations/{conv.id}/notes", json=body, headers=sam.headers)
    assert response.status_code == 422, response.text
    assert any(reason in d["message"] for d in response.json()["detail"]), response.text
    assert await count(sessions, "SELECT count(*) FROM conversation_notes WHERE conversation_id = :c", c=conv.id) == 0
    assert await audit(sessions, sam.name) == []


async def test_notes_on_an_unknown_conversation_or_without_the_scope_are_refused(
    http: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    writer = await agent(sessions)
    reader = await agent(sessions, SCOPE_READ)
    conv = await conversation(sessions)
    for unknown in (str(uuid.uuid4()), "not-a-uuid"):
        posted = await http.post(f"/api/v1/conversations/{unknown}/notes", json={"body": "hi"}, headers=writer.headers)
        assert posted.status_code == 404 and "no conversation" in posted.json()["message"]
        listed = await http.get(f"/api/v1/conversations/{unknown}/notes", headers=writer.headers)
        assert listed.status_code == 404
    refused = await http.post(f"/api/v1/conversations/{conv.id}/notes", json={"body": "hi"}, headers=reader.headers)
    assert refused.status_code == 403 and "escalations:write" in refused.json()["message"]
    assert (await http.post(f"/api/v1/conversations/{conv.id}/notes", json={"body": "hi"})).status_code == 401
    assert (await http.get(f"/api/v1/conversations/{conv.id}/notes", headers=reader.headers)).status_code == 200
    assert await count(sessions, "SELECT count(*) FROM conversation_notes WHERE conversation_id = :c", c=conv.id) == 0


# ----------------------------------------------------------------------------- saved replies


async def test_saved_replies_create_list_edit_delete_and_audit(
    http: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    sam = await agent(sessions)
    title = f"Refund timeline {rec.tag()}"
    body = "Hi {first_name}, refunds for {ticket} take 5 business days. {agent_name}"
    created = await http.post("/api/v1/saved-replies", json={"title": f" {title} ", "body": body}, headers=sam.headers)
    assert created.status_code == 201, created.text
    reply = created.json()
    assert reply["title"] == title and reply["body"] == body and reply["created_by"] == sam.name
    listed = (await http.get("/api/v1/saved-replies", headers=sam.headers)).json()
    assert listed["placeholders"] == ["first_name", "ticket", "agent_name"]
    assert reply["id"] in {r["id"] for r in listed["saved_replies"]}
    assert (await http.get(f"/api/v1/saved-replies/{reply['id']}", headers=sam.headers)).json()["title"] == title

    renamed = await http.patch(
        f"/api/v1/saved-replies/{reply['id']}", json={"title": title + " (v2)"}, headers=sam.headers
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["title"] == title + " (v2)" and renamed.json()["body"] == body
    rewritten = await http.patch(
        f"/api/v1/saved-replies/{reply['id']}", json={"body": "Thanks, {first_name}!"}, headers=sam.headers
    )
    assert rewritten.status_code == 200 and rewritten.json()["body"] == "Thanks, {first_name}!"
    assert rewritten.json()["updated_by"] == sam.name

    deleted = await http.delete(f"/api/v1/saved-replies/{reply['id']}", headers=sam.headers)
    assert deleted.status_code == 204
    assert (await http.get(f"/api/v1/saved-replies/{reply['id']}", headers=sam.headers)).status_code == 404
    assert (await http.delete(f"/api/v1/saved-replies/{reply['id']}", headers=sam.headers)).status_code == 404

    rows = await audit(sessions, sam.name)
    assert [r["action"] for r in rows] == [
        "saved_reply.created",
        "saved_reply.updated",
        "saved_reply.updated",
        "saved_reply.deleted",
    ]
    assert all(r["detail"]["saved_reply_id"] == reply["id"] for r in rows)
    assert rows[-1]["detail"]["body"] == "Thanks, {first_name}!", "what was deleted stays in the audit"


async def test_bad_saved_replies_are_refused_with_the_reason_and_change_nothing(
    http: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    sam = await agent(sessions)
    reader = await agent(sessions, SCOPE_READ)
    title = f"Greeting {rec.tag()}"
    other = f"Farewell {rec.tag()}"
    first = await http.post("/api/v1/saved-replies", json={"title": title, "body": "Hello!"}, headers=sam.headers)
    second = await http.post("/api/v1/saved-replies", json={"title": other, "body": "Bye!"}, headers=sam.headers)
    assert first.status_code == second.status_code == 201
    reply_id = first.json()["id"]
    before = await count(sessions, "SELECT count(*) FROM saved_replies")

    unknown = await http.post(
        "/api/v1/saved-replies",
        json={"title": f"Bad {rec.tag()}", "body": "Hi {customer}, see {ticket} and {order_id}"},
        headers=sam.headers,
    )
    assert unknown.status_code == 422, unknown.text
    message = " ".join(d["message"] for d in unknown.json()["detail"])
    assert "{customer}" in message and "{order_id}" in message and "{first_name}" in message
    assert "{ticket}, " not in message.split("known")[0], "a known placeholder is not named as unknown"

    duplicate = await http.post(
        "/api/v1/saved-replies", json={"title": title.upper(), "body": "Again"}, headers=sam.headers
    )
    assert duplicate.status_code == 409 and "already exists" in duplicate.json()["message"]
    taken = await http.patch(f"/api/v1/saved-replies/{reply_id}", json={"title": other}, headers=sam.headers)
    assert taken.status_code == 409
    for bad in ({"title": "", "body": "x"}, {"title": "t" * 121, "body": "x"}, {"title": "ok", "body": " "}):
        refused = await http.post("/api/v1/saved-replies", json=bad, headers=sam.headers)
        assert refused.status_code == 422, (bad, refused.text)
    nothing = await http.patch(f"/api/v1/saved-replies/{reply_id}", json={}, headers=sam.headers)
    assert nothing.status_code == 422 and "new title, a new body" in nothing.text
    bad_edit = await http.patch(f"/api/v1/saved-replies/{reply_id}", json={"body": "{nope}"}, headers=sam.headers)
    assert bad_edit.status_code == 422 and "{nope}" in bad_edit.text
    for missing in (str(uuid.uuid4()), "not-a-uuid"):
        assert (
            await http.patch(f"/api/v1/saved-replies/{missing}", json={"body": "x"}, headers=sam.headers)
        ).status_code == 404
    forbidden = await http.post("/api/v1/saved-replies", json={"title": "R", "body": "x"}, headers=reader.headers)
    assert forbidden.status_code == 403
    assert (await http.delete(f"/api/v1/saved-replies/{reply_id}", headers=reader.headers)).status_code == 403

    assert await count(sessions, "SELECT count(*) FROM saved_replies") == before
    kept = (await http.get(f"/api/v1/saved-replies/{reply_id}", headers=reader.headers)).json()
    assert kept["title"] == title and kept["body"] == "Hello!"
    assert [r["action"] for r in await audit(sessions, sam.name)] == ["saved_reply.created", "saved_reply.created"]


async def test_render_fills_the_placeholders_for_a_conversation(
    http: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    sam = await agent(sessions)
    reader = await agent(sessions, SCOPE_READ)
    conv = await conversation(sessions, name="Dana Katherine Scully")
    nameless = await conversation(sessions, name=None)
    body = "Hi {first_name}, about {ticket}: {unknown-ish} {agent_name}"
    created = await http.post(
        "/api/v1/saved-replies", json={"title": f"Render {rec.tag()}", "body": body}, headers=sam.headers
    )
    assert created.status_code == 201, created.text
    reply_id = created.json()["id"]
    path = f"/api/v1/saved-replies/{reply_id}/render"

    by_id = await http.post(path, json={"conversation_id": str(conv.id)}, headers=reader.headers)
    assert by_id.status_code == 200, by_id.text
    assert by_id.json()["text"] == f"Hi Dana, about {conv.ticket}: {{unknown-ish}} {reader.name}"
    assert by_id.json()["unfilled"] == []
    by_ticket = await http.post(path, json={"ticket_id": conv.ticket.lower()}, headers=sam.headers)
    assert by_ticket.status_code == 200 and by_ticket.json()["text"].endswith(sam.name)
    no_name = await http.post(path, json={"conversation_id": str(nameless.id)}, headers=sam.headers)
    assert no_name.json()["text"].startswith("Hi {first_name}, about " + nameless.ticket)
    assert no_name.json()["unfilled"] == ["first_name"]

    refusals = [
        ({"conversation_id": str(conv.id), "ticket_id": conv.ticket}, 422, "either conversation_id or ticket_id"),
        ({}, 422, "either conversation_id or ticket_id"),
        ({"conversation_id": "nope"}, 422, "UUID"),
        ({"conversation_id": str(uuid.uuid4())}, 404, "no conversation"),
        ({"ticket_id": "TKT-99999999999"}, 404, "no ticket"),
        ({"ticket_id": "hello"}, 404, "no ticket"),
    ]
    for request, status, reason in refusals:
        response = await http.post(path, json=request, headers=sam.headers)
        assert response.status_code == status and reason in response.text, (request, response.text)
    gone = await http.post(
        f"/api/v1/saved-replies/{uuid.uuid4()}/render", json={"conversation_id": str(conv.id)}, headers=sam.headers
    )
    assert gone.status_code == 404 and "no saved reply" in gone.text
    assert (await http.post(path, json={"conversation_id": str(conv.id)})).status_code == 401


async def test_a_gdpr_export_carries_the_notes_and_an_erasure_deletes_them(session: AsyncSession) -> None:
    who = await rec.customer(session, name="Erin Erased", email=f"erin.{rec.tag()}@example.com")
    conv = await rec.conversation(session, who, channel="email")
    written = await notes.add_note(
        session, conversation_id=conv, author="Sam", body="Erin mentioned her divorce", api_key_id=None
    )
    exported = await customer_data.export_rows(session, customer_ids=[who.customer_id])
    assert [n["body"] for n in exported["notes"]] == ["Erin mentioned her divorce"]
    assert exported["notes"][0]["id"] == str(written.id)
    counts = await customer_data.erase(session, customer_ids=[who.customer_id], erased_by="dpo")
    assert counts["notes"] == 1
    assert await notes.notes_of(session, conversation_ids=[conv]) == []
