"""Ownership through the human-agent API on the real stack: claim, 409 naming the holder, the queue's
"mine"/"unassigned" filters, many replies, hand back, take over, bad input, the audit trail, and the
console's live stream (server-sent events over a real uvicorn socket).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from typer.testing import Result

from core.settings import Settings
from tests.gateway.agent_helpers import audit_rows, bearer, escalate, new_key, run_cli
from tests.gateway_server import ThreadedGateway
from tests.workflows.helpers import eventually, inbound
from workers.agents_cli import conversations_app, escalations_app
from workers.bridge import signal_with_start
from workers.embedded import free_port


async def _queue(http: httpx.AsyncClient, key: str, ticket: str, **params: Any) -> list[dict[str, Any]]:
    response = await http.get("/api/v1/escalations", params={"ticket": ticket, **params}, headers=bearer(key))
    assert response.status_code == 200, response.text
    return list(response.json()["escalations"])


async def test_claim_reply_many_times_and_hand_back_through_the_api(
    http: httpx.AsyncClient, worker, client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ticket = await escalate(client, settings, sessions)
    ana, ana_key = await new_key(sessions)
    bob, bob_key = await new_key(sessions)
    [entry] = await _queue(http, ana_key, ticket)
    conversation = entry["conversation_id"]
    assert entry["assignee"] is None
    assert await _queue(http, ana_key, ticket, unassigned="true")

    claimed = await http.post(f"/api/v1/conversations/{conversation}/claim", headers=bearer(ana_key))
    assert claimed.status_code == 200, claimed.text
    assert (claimed.json()["assignee"], claimed.json()["ownership"]) == (ana, "human")

    taken = await http.post(f"/api/v1/conversations/{conversation}/claim", headers=bearer(bob_key))
    assert taken.status_code == 409
    assert ana in taken.json()["message"] and taken.json()["detail"]["holder"] == ana

    assert [e["ticket_id"] for e in await _queue(http, ana_key, ticket, mine="true")] == [ticket]
    assert await _queue(http, bob_key, ticket, mine="true") == []
    assert await _queue(http, ana_key, ticket, unassigned="true") == []
    assert [e["assignee"] for e in await _queue(http, bob_key, ticket, assignee=ana)] == [ana]

    for text_ in ("Checking the discount for you now.", "You get 20 % off; the quote is in your inbox."):
        sent = await http.post(
            f"/api/v1/conversations/{conversation}/replies", json={"reply": text_}, headers=bearer(ana_key)
        )
        assert sent.status_code == 200, sent.text
        assert sent.json()["delivery_status"] == "delivered" and len(sent.json()["reply_message_ids"]) == 1
    # Answered: the SLA is met, so the queue no longer counts it overdue whatever the clock says.
    [entry] = await _queue(http, ana_key, ticket)
    assert entry["responded_at"] is not None and entry["overdue"] is False

    back = await http.post(
        f"/api/v1/conversations/{conversation}/hand-back",
        json={"note": "Sent the quote with 20 % off; nothing else to do."},
        headers=bearer(ana_key),
    )
    assert back.status_code == 200, back.text
    assert (back.json()["ownership"], back.json()["assignee"], back.json()["status"]) == ("ai", None, "active")
    history = (await http.get(f"/api/v1/conversations/{conversation}", headers=bearer(ana_key))).json()
    [notes] = [c["notes"] for c in history["conversations"] if c["id"] == conversation]
    assert [(n["kind"], n["author"]) for n in notes] == [("hand_back", ana)]
    human = [m for c in history["conversations"] for m in c["messages"] if m["role"] == "human_agent"]
    assert len(human) == 2

    actions = [
        (r["agent_name"], r["action"], r["detail"]["outcome"])
        for r in await audit_rows(sessions, ticket)
        if r["action"].startswith("conversation.") and r["action"] != "conversation.viewed"
    ]
    assert (ana, "conversation.claim", "completed") in actions
    assert (bob, "conversation.claim", "refused") in actions
    assert actions.count((ana, "conversation.reply", "completed")) == 2
    assert (ana, "conversation.hand_back", "completed") in actions


async def test_bad_ownership_requests_are_clear_4xx_and_send_nothing(
    http: httpx.AsyncClient, worker, client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ticket = await escalate(client, settings, sessions)
    _, key = await new_key(sessions)
    _, reader = await new_key(sessions, scopes=("escalations:read",))
    [entry] = await _queue(http, key, ticket)
    conversation = entry["conversation_id"]
    base = f"/api/v1/conversations/{conversation}"

    empty = await http.post(f"{base}/replies", json={"reply": "   "}, headers=bearer(key))
    assert empty.status_code == 422
    assert (await http.post(f"{base}/replies", json={}, headers=bearer(key))).status_code == 422
    unknown = await http.post(f"{base}/assign", json={"to": "Nobody Atall"}, headers=bearer(key))
    assert unknown.status_code == 404 and "Nobody Atall" in unknown.json()["message"]
    assert (await http.post(f"{base}/claim", headers=bearer(reader))).status_code == 403
    assert (await http.post("/api/v1/conversations/not-a-uuid/claim", headers=bearer(key))).status_code == 404
    nobody = await http.post(f"{base}/release", headers=bearer(key))
    assert nobody.status_code == 409 and "nobody holds" in nobody.json()["message"]
    both = await http.get("/api/v1/escalations", params={"mine": "true", "unassigned": "true"}, headers=bearer(key))
    assert both.status_code == 400

    closed = await http.post(f"{base}/close", headers=bearer(key))
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    late = await http.post(f"{base}/replies", json={"reply": "one more thing"}, headers=bearer(key))
    assert late.status_code == 409
    history = (await http.get(base, headers=bearer(key))).json()
    assert not [m for c in history["conversations"] for m in c["messages"] if m["role"] == "human_agent"]


async def test_the_live_stream_sends_the_customers_new_messages_and_ownership_changes(
    worker, client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    first = inbound("web_form", "How much does the Pro plan cost for 40 users? Can you give us a discount?")
    ticket = await escalate(client, settings, sessions, key=first.conversation_key, email=first.sender.email)
    name, key = await new_key(sessions)
    gateway = ThreadedGateway(settings, free_port())
    await asyncio.to_thread(gateway.start)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            [entry] = await _queue(http, key, ticket)
            conversation = entry["conversation_id"]
            events: list[tuple[str, dict[str, Any]]] = []

            async def listen() -> None:
                async with http.stream(
                    "GET", f"/api/v1/conversations/{conversation}/events", headers=bearer(key)
                ) as stream:
                    assert stream.status_code == 200
                    assert stream.headers["content-type"].startswith("text/event-stream")
                    kind = ""
                    async for line in stream.aiter_lines():
                        if line.startswith("event: "):
                            kind = line.removeprefix("event: ")
                        elif line.startswith("data: "):
                            events.append((kind, json.loads(line.removeprefix("data: "))))

            listener = asyncio.create_task(listen())
            try:
                await eventually(lambda: _seen(events, "conversation"))
                assert events[0][1] == {"status": "escalated", "assignee": None}
                claimed = await http.post(f"/api/v1/conversations/{conversation}/claim", headers=bearer(key))
                assert claimed.status_code == 200
                await signal_with_start(
                    client,
                    settings,
                    inbound(
                        "web_form",
                        "still waiting on that quote!!",
                        key=first.conversation_key,
                        email=first.sender.email,
                    ),
                )
                said = await eventually(lambda: _said(events, "still waiting on that quote!!"))
                assert said["direction"] == "inbound" and said["role"] == "customer"
                owner = await eventually(lambda: _owner(events))
                assert owner == name
                # Only what arrived after the stream opened: the first message and the holding reply are not resent.
                assert not [d for k, d in events if k == "message" and "Pro plan" in str(d["content"])]
            finally:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
            missing = await http.get(
                "/api/v1/conversations/00000000-0000-0000-0000-000000000000/events", headers=bearer(key)
            )
            assert missing.status_code == 404
    finally:
        await asyncio.to_thread(gateway.stop)


async def _seen(events: list[tuple[str, dict[str, Any]]], kind: str) -> bool | None:
    return True if any(k == kind for k, _ in events) else None


async def _said(events: list[tuple[str, dict[str, Any]]], content: str) -> dict[str, Any] | None:
    return next((d for k, d in events if k == "message" and d["content"] == content), None)


async def _owner(events: list[tuple[str, dict[str, Any]]]) -> str | None:
    return next((d["assignee"] for k, d in reversed(events) if k == "conversation" and d["assignee"]), None)


async def test_the_cli_claims_refuses_a_second_holder_notes_replies_and_hands_back(
    worker, client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ticket = await escalate(client, settings, sessions)

    async def cli(*args: str) -> Result:
        return await asyncio.to_thread(run_cli, settings, conversations_app, list(args))

    claimed = await cli("claim", ticket, "--agent", "Casey Ops")
    assert claimed.exit_code == 0, claimed.output
    assert claimed.stdout.strip() == f"{ticket}: owned by Casey Ops"
    refused = await cli("claim", ticket, "--agent", "Dana Ops")
    assert refused.exit_code == 3 and f"{ticket} is held by Casey Ops" in refused.output
    assert "Traceback" not in refused.output

    noted = await cli("note", ticket, "--agent", "Casey Ops", "--body", "Customer is a charity; check with sales.")
    assert noted.exit_code == 0 and noted.stdout.startswith("note ")
    replied = await cli("reply", ticket, "--agent", "Casey Ops", "--reply", "We can do 20 % off for charities.")
    assert replied.exit_code == 0, replied.output
    assert replied.stdout.strip() == f"{ticket}: owned by Casey Ops; reply delivered"
    back = await cli("hand-back", ticket, "--agent", "Casey Ops", "--note", "Offered 20 % off.")
    assert back.exit_code == 0 and back.stdout.strip() == f"{ticket}: the AI answers"
    listed = await cli("notes", ticket)
    assert listed.exit_code == 0
    lines = listed.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("Casey Ops: Customer is a charity; check with sales.")
    assert lines[1].endswith("Casey Ops (for the AI): Offered 20 % off.")

    empty = await cli("reply", ticket, "--reply", "   ")
    assert empty.exit_code != 0 and "Traceback" not in empty.output
    unknown = await cli("claim", "TKT-99999999")
    assert unknown.exit_code == 1 and "no ticket TKT-99999999" in unknown.output
    queue = await asyncio.to_thread(run_cli, settings, escalations_app, ["list", "--unassigned", "--json"])
    assert queue.exit_code == 0 and ticket not in queue.stdout  # handed back: no longer escalated
