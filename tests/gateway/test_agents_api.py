"""The human-agent API and CLI on the real stack: API keys, the queue, history, resolving, the audit.

Escalations come from real ConversationWorkflows (a pricing question escalates) on the session's
Temporal dev server and PostgreSQL; the gateway runs in-process with its real lifespan.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.settings import Settings
from core.vocabulary import PRIORITIES
from crm import identity
from crm.db import transaction
from gateway.agents import SCOPE_READ, SCOPE_WRITE, OptionalAgent, create_api_key, revoke_api_key
from gateway.app import create_app
from tests.gateway.agent_helpers import audit_rows, bearer, escalate, new_key, run_cli
from tests.workflows.helpers import eventually, inbound, messages_of
from workers.agents_cli import agents_app, escalations_app
from workers.bridge import signal_with_start
from workflows.contracts import CUSTOMER_CHANGED_SIGNAL, CustomerChanged

# ----------------------------------------------------------------------------- authentication


async def test_no_key_malformed_unknown_or_wrong_secret_is_401_with_a_challenge(
    http: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, key = await new_key(sessions)
    prefix = key.split("_")[1]
    attempts: list[dict[str, str]] = [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        bearer("not-a-key"),
        bearer(f"crmfte_{uuid.uuid4().hex[:12]}_{'x' * 43}"),  # well-formed, no such prefix
        bearer(f"crmfte_{prefix}_{'x' * 43}"),  # a real prefix with the wrong secret
        bearer(key + "x"),
    ]
    for headers in attempts:
        for method, path in (("GET", "/api/v1/escalations"), ("POST", "/api/v1/escalations/TKT-0001/resolve")):
            response = await http.request(
                method, path, headers=headers, json={"reply": "hi", "action": "close"} if method == "POST" else None
            )
            assert response.status_code == 401, (headers, path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer"), response.headers
            assert response.json()["error"] == "unauthorized"
    assert (await http.get("/api/v1/escalations", headers=bearer(key))).status_code == 200


async def test_a_revoked_key_is_401_from_its_next_request(
    http: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    name, key = await new_key(sessions)
    me = await http.get("/api/v1/agents/me", headers=bearer(key))
    assert me.status_code == 200 and me.json() == {"name": name, "scopes": [SCOPE_READ, SCOPE_WRITE]}
    async with transaction(sessions) as session:
        await revoke_api_key(session, name=name)
    response = await http.get("/api/v1/escalations", headers=bearer(key))
    assert response.status_code == 401
    assert "revoked" in response.json()["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    # The name is free again: the same person can be given a new key, which works.
    async with transaction(sessions) as session:
        _, fresh = await create_api_key(session, name=name)
    assert (await http.get("/api/v1/escalations", headers=bearer(fresh))).status_code == 200
    async with sessions() as session:
        stored = await session.scalar(
            text("SELECT count(*) FROM api_keys WHERE key_hash = :h OR key_hash = :f"), {"h": key, "f": fresh}
        )
    assert stored == 0  # only hashes are stored, never the key


async def test_a_key_without_the_scope_is_403(
    http: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, reader = await new_key(sessions, (SCOPE_READ,))
    _, writer = await new_key(sessions, (SCOPE_WRITE,))
    refused = await http.post(
        "/api/v1/escalations/TKT-0001/resolve", headers=bearer(reader), json={"reply": "hi", "action": "close"}
    )
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden" and refused.json()["detail"] == {"required_scope": SCOPE_WRITE}
    assert (await http.get("/api/v1/escalations", headers=bearer(writer))).status_code == 403
    assert (await http.get(f"/api/v1/conversations/{uuid.uuid4()}", headers=bearer(writer))).status_code == 403
    assert (await http.get("/api/v1/escalations", headers=bearer(reader))).status_code == 200


async def test_optional_agent_lets_customers_through_and_checks_agents(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The dependency customer-facing endpoints (ticket status) use to also admit agents."""
    app = create_app(settings)

    @app.get("/probe")
    async def probe(agent: OptionalAgent) -> dict[str, str | None]:
        return {"agent": agent.name if agent else None}

    name, reader = await new_key(sessions, (SCOPE_READ,))
    _, writer = await new_key(sessions, (SCOPE_WRITE,))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            assert (await client.get("/probe")).json() == {"agent": None}
            assert (await client.get("/probe", headers=bearer(reader))).json() == {"agent": name}
            assert (await client.get("/probe", headers=bearer("crmfte_nope"))).status_code == 401
            assert (await client.get("/probe", headers=bearer(writer))).status_code == 403


# ----------------------------------------------------------------------------- queue, history, resolve


async def test_queue_history_resolve_then_409_and_every_action_audited(
    worker,  # type: ignore[no-untyped-def]
    http: httpx.AsyncClient,
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    name, key = await new_key(sessions)
    email = f"dana.{uuid.uuid4().hex[:8]}@example.com"
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    # The same customer asked a how-to question on WhatsApp first (the AI searched the KB there).
    earlier = inbound("whatsapp", "How do I export my board to CSV?", phone=phone, name="Dana Scully")
    earlier_id = await signal_with_start(client, settings, earlier)
    await eventually(lambda: _has_outbound(sessions, earlier_id))
    ticket = await escalate(client, settings, sessions, email=email, phone=phone, name="Dana Scully")

    queue = await http.get("/api/v1/escalations", headers=bearer(key))
    assert queue.status_code == 200, queue.text
    items = queue.json()["escalations"]
    rank = {p: i for i, p in enumerate(reversed(PRIORITIES))}
    order = [(rank[i["priority"]], datetime.fromisoformat(i["sla_due_at"]), i["created_at"]) for i in items]
    assert order == sorted(order), "most urgent first, then SLA due soonest (see test_queue_order.py)"
    item = next(i for i in items if i["ticket_id"] == ticket)
    assert item["reason"] == "pricing" and item["channel"] == "web_form" and item["priority"] == "medium"
    assert item["sla_due_at"] and item["overdue"] is False
    assert item["customer"]["email"] == email and item["customer"]["name"] == "Dana Scully"
    assert item["last_customer_message"].startswith("How much does the Pro plan cost")

    # The number typed on the form is only a claim (issue 15) until its owner confirms it (the link's
    # POST /verify): then the form's record joins the WhatsApp customer's, and the workflow is told.
    async with transaction(sessions) as session:
        form_customer = await session.scalar(
            text("SELECT customer_id FROM tickets WHERE ticket_number = :t"), {"t": ticket}
        )
        joined = await identity.confirm_claim(
            session, customer_id=str(form_customer), kind="phone", value=phone, at=datetime.now(UTC)
        )
    assert joined.merge is not None
    change = CustomerChanged(customer_id=joined.customer_id, email=email, phone=phone, name="Dana Scully")
    for workflow_id in joined.merge.open_workflow_ids:
        await client.get_workflow_handle(workflow_id).signal(CUSTOMER_CHANGED_SIGNAL, change)

    history = await http.get(f"/api/v1/conversations/{item['conversation_id']}", headers=bearer(key))
    assert history.status_code == 200, history.text
    body = history.json()
    assert body["customer"]["email"] == email and body["customer"]["phone"] == phone
    by_channel = {c["channel"]: c for c in body["conversations"]}
    assert set(by_channel) == {"whatsapp", "web_form"}, "the history spans the customer's channels"
    web = by_channel["web_form"]
    assert web["ticket"]["ticket_id"] == ticket and web["ticket"]["status"] == "escalated"
    assert [e["status"] for e in web["escalations"]] == ["open"]
    assert [m["role"] for m in web["messages"]] == ["customer", "agent"]
    # Every message carries its delivery status: the customer's as received, the holding reply as sent.
    assert [m["delivery_status"] for m in web["messages"]] == ["received", "delivered"]
    whatsapp = by_channel["whatsapp"]
    assert [m["direction"] for m in whatsapp["messages"]] == ["inbound", "outbound"]
    assert whatsapp["kb_articles"], "the KB articles the AI retrieved are listed"
    assert all(a["article_id"] and a["title"] and a["query"] for a in whatsapp["kb_articles"])
    assert (await http.get(f"/api/v1/conversations/{uuid.uuid4()}", headers=bearer(key))).status_code == 404
    assert (await http.get("/api/v1/conversations/not-a-uuid", headers=bearer(key))).status_code == 404

    reply = "Hi Dana, our sales team will send you a quote for 40 Pro seats today."
    resolved = await http.post(
        f"/api/v1/escalations/{ticket}/resolve", headers=bearer(key), json={"reply": reply, "action": "resume_ai"}
    )
    assert resolved.status_code == 200, resolved.text
    outcome = resolved.json()
    assert outcome["ticket_id"] == ticket and outcome["resolved_by"] == name and outcome["reply_sent"] is True
    assert outcome["conversation_status"] == "active" and outcome["reply_message_ids"]
    assert outcome["delivery_status"] == "delivered"  # what the web channel recorded for the reply
    async with sessions() as session:
        sent = (
            await session.execute(
                text("SELECT role, content, delivery_status FROM messages WHERE id = ANY(:ids)"),
                {"ids": [uuid.UUID(i) for i in outcome["reply_message_ids"]]},
            )
        ).all()
        escalation = (
            await session.execute(
                text(
                    "SELECT e.status, e.resolved_by, e.resolution_action FROM escalations e "
                    "JOIN conversations c ON c.id = e.conversation_id WHERE c.id = :c"
                ),
                {"c": uuid.UUID(item["conversation_id"])},
            )
        ).one()
    assert [(r.role, r.delivery_status) for r in sent] == [("human_agent", "delivered")]
    assert "sales team will send you a quote" in sent[0].content
    assert tuple(escalation) == ("resolved", name, "resume_ai")

    again = await http.post(
        f"/api/v1/escalations/{ticket}/resolve", headers=bearer(key), json={"reply": "Twice?", "action": "close"}
    )
    assert again.status_code == 409 and again.json()["error"] == "conflict"
    human = [m for m in await _messages_by_ticket(sessions, ticket) if m["role"] == "human_agent"]
    assert len(human) == 1, "a second resolution sends nothing"
    after = (await http.get("/api/v1/escalations", headers=bearer(key))).json()["escalations"]
    assert ticket not in {i["ticket_id"] for i in after}, "a resolved escalation leaves the queue"

    audit = await audit_rows(sessions, ticket)
    assert [(a["action"], a["detail"].get("outcome")) for a in audit] == [
        ("conversation.viewed", None),
        ("escalation.resolve", "completed"),
        ("escalation.resolve", "refused"),
    ]
    assert {a["agent_name"] for a in audit} == {name} and {a["key_name"] for a in audit} == {name}
    assert audit[1]["detail"]["action"] == "resume_ai" and audit[1]["detail"]["reply"] == reply
    assert audit[1]["detail"]["via"] == "api" and audit[1]["detail"]["conversation_status"] == "active"

    unknown = await http.post(
        "/api/v1/escalations/TKT-99999999/resolve", headers=bearer(key), json={"reply": "hi", "action": "close"}
    )
    assert unknown.status_code == 404
    empty = await http.post(
        f"/api/v1/escalations/{ticket}/resolve", headers=bearer(key), json={"reply": "   ", "action": "close"}
    )
    assert empty.status_code == 422
    bad_action = await http.post(
        f"/api/v1/escalations/{ticket}/resolve", headers=bearer(key), json={"reply": "hi", "action": "delete"}
    )
    assert bad_action.status_code == 422


async def test_two_agents_resolving_at_once_give_one_reply_and_one_409(
    worker,  # type: ignore[no-untyped-def]
    http: httpx.AsyncClient,
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    (first, first_key), (second, second_key) = await new_key(sessions), await new_key(sessions)
    ticket = await escalate(client, settings, sessions)
    responses = await asyncio.gather(
        *(
            http.post(
                f"/api/v1/escalations/{ticket}/resolve",
                headers=bearer(k),
                json={"reply": f"Answer from {n}", "action": "close"},
            )
            for n, k in ((first, first_key), (second, second_key))
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
    winner = next(r for r in responses if r.status_code == 200).json()
    assert winner["conversation_status"] == "closed"
    human = [m for m in await _messages_by_ticket(sessions, ticket) if m["role"] == "human_agent"]
    assert len(human) == 1 and winner["resolved_by"] in human[0]["content"]
    outcomes = sorted(a["detail"]["outcome"] for a in await audit_rows(sessions, ticket))
    assert outcomes == ["completed", "refused"]


# ----------------------------------------------------------------------------- CLI


async def test_cli_creates_lists_and_revokes_keys_and_resolves_from_the_queue(
    worker,  # type: ignore[no-untyped-def]
    http: httpx.AsyncClient,
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    name = f"Cli Agent {uuid.uuid4().hex[:6]}"
    created = await asyncio.to_thread(run_cli, settings, agents_app, ["create", name, "--scope", SCOPE_READ])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("crmfte_")
    assert (await http.get("/api/v1/escalations", headers=bearer(key))).status_code == 200
    duplicate = await asyncio.to_thread(run_cli, settings, agents_app, ["create", name])
    assert duplicate.exit_code == 3 and "already has an active API key" in duplicate.output
    bad_scope = await asyncio.to_thread(run_cli, settings, agents_app, ["create", "someone", "--scope", "admin"])
    assert bad_scope.exit_code == 1 and "unknown scope" in bad_scope.output

    listed = await asyncio.to_thread(run_cli, settings, agents_app, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    mine = [json.loads(line) for line in listed.stdout.splitlines() if json.loads(line)["name"] == name]
    assert len(mine) == 1 and mine[0]["scopes"] == [SCOPE_READ] and mine[0]["revoked_at"] is None
    assert key not in listed.stdout and key.split("_", 2)[2] not in listed.stdout  # the whole secret

    revoked = await asyncio.to_thread(run_cli, settings, agents_app, ["revoke", name])
    assert revoked.exit_code == 0, revoked.output
    assert (await http.get("/api/v1/escalations", headers=bearer(key))).status_code == 401
    missing = await asyncio.to_thread(run_cli, settings, agents_app, ["revoke", name])
    assert missing.exit_code == 1 and "no active API key" in missing.output

    ticket = await escalate(client, settings, sessions)
    queue = await asyncio.to_thread(run_cli, settings, escalations_app, ["list", "--json"])
    assert queue.exit_code == 0, queue.output
    assert ticket in {json.loads(line)["ticket_id"] for line in queue.stdout.splitlines()}
    table = await asyncio.to_thread(run_cli, settings, escalations_app, ["list"])
    assert ticket in table.stdout and "pricing" in table.stdout

    args = [
        "resolve",
        ticket.lower(),
        "--reply",
        "A quote is on its way.",
        "--action",
        "close",
        "--agent",
        "Sam Rivera",
    ]
    done = await asyncio.to_thread(run_cli, settings, escalations_app, args)
    assert done.exit_code == 0, done.output
    # The web channel records the reply as delivered: the CLI says what happened, not just "sent".
    assert f"{ticket}: reply delivered by Sam Rivera; conversation closed" in done.stdout
    twice = await asyncio.to_thread(run_cli, settings, escalations_app, args)
    assert twice.exit_code == 3 and "no open escalation" in twice.output
    unknown = await asyncio.to_thread(
        run_cli, settings, escalations_app, ["resolve", "TKT-99999999", "--reply", "x", "--action", "close"]
    )
    assert unknown.exit_code == 1 and "no ticket TKT-99999999" in unknown.output
    audit = await audit_rows(sessions, ticket)
    assert [(a["agent_name"], a["detail"]["via"], a["detail"]["outcome"], a["api_key_id"]) for a in audit] == [
        ("Sam Rivera", "cli", "completed", None),
        ("Sam Rivera", "cli", "refused", None),
    ]


async def _has_outbound(sessions: async_sessionmaker[AsyncSession], workflow_id: str) -> bool:
    rows = await messages_of(sessions, workflow_id)
    return any(r["direction"] == "outbound" and r["delivery_status"] != "pending" for r in rows)


async def _messages_by_ticket(sessions: async_sessionmaker[AsyncSession], ticket: str) -> list[dict[str, Any]]:
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT m.role, m.content FROM messages m JOIN tickets t ON t.conversation_id = m.conversation_id "
                "WHERE t.ticket_number = :t ORDER BY m.created_at"
            ),
            {"t": ticket},
        )
        return [dict(r._mapping) for r in rows]


async def test_a_reply_on_an_unconfigured_channel_is_reported_as_not_sent(
    worker,  # type: ignore[no-untyped-def]
    http: httpx.AsyncClient,
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # The session's settings have no Twilio credentials: WhatsApp replies are recorded, not sent.
    assert not settings.twilio_configured
    _, key = await new_key(sessions)
    ticket = await escalate(client, settings, sessions, channel="whatsapp")
    resolved = await http.post(
        f"/api/v1/escalations/{ticket}/resolve",
        headers=bearer(key),
        json={"reply": "Our sales team will call you today.", "action": "resume_ai"},
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["delivery_status"] == "not_configured"
    conversation_id = await _conversation_of(sessions, ticket)
    history = (await http.get(f"/api/v1/conversations/{conversation_id}", headers=bearer(key))).json()
    outbound = [m for c in history["conversations"] for m in c["messages"] if m["direction"] == "outbound"]
    assert outbound and {m["delivery_status"] for m in outbound} == {"not_configured"}

    # The CLI says so too, and exits non-zero: the customer did not get the reply.
    second = await escalate(client, settings, sessions, channel="whatsapp")
    args = ["resolve", second, "--reply", "Calling you now.", "--action", "close", "--agent", "Sam Rivera"]
    done = await asyncio.to_thread(run_cli, settings, escalations_app, args)
    assert done.exit_code == 4, done.output
    assert f"{second}: the reply was recorded but NOT sent: the channel is not configured" in done.stdout


async def _conversation_of(sessions: async_sessionmaker[AsyncSession], ticket: str) -> str:
    async with sessions() as session:
        found = await session.scalar(
            text("SELECT conversation_id FROM tickets WHERE ticket_number = :t"), {"t": ticket}
        )
    return str(found)
