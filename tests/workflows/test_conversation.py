"""ConversationWorkflow end to end on the real Temporal dev server, PostgreSQL and KB (offline responder)."""

from __future__ import annotations

import asyncio
import json
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.settings import Settings
from tests.workflows.helpers import eventually, inbound, messages_of
from workers.bridge import signal_with_start
from workers.embedded import EmbeddedTemporal, temporal_cli_path
from workflows.contracts import (
    CUSTOMER_CHANGED_SIGNAL,
    INBOUND_SIGNAL,
    ConversationState,
    CustomerChanged,
    conversation_workflow_id,
)


async def _state(client: Client, workflow_id: str) -> ConversationState:
    return await client.get_workflow_handle(workflow_id).query("state", result_type=ConversationState)


async def test_question_gets_a_grounded_reply_a_ticket_and_search_attributes(
    worker, client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # A question the offline responder answers with confidence (below its threshold it hands off).
    message = inbound("web_form", "How do I export a project to CSV?")
    workflow_id = await signal_with_start(client, settings, message)
    assert workflow_id == conversation_workflow_id("web_form", message.conversation_key)

    async def replied() -> list[dict[str, object]] | None:
        rows = await messages_of(sessions, workflow_id)
        sent = [r for r in rows if r["direction"] == "outbound" and r["delivery_status"] != "pending"]
        return rows if sent else None

    rows = await eventually(replied)
    outbound = [r for r in rows if r["direction"] == "outbound"]
    assert len(outbound) == 1
    assert outbound[0]["delivery_status"] == "delivered"
    assert "csv" in str(outbound[0]["content"]).lower()

    # The send activity marks the row delivered before the workflow records the reply in its state:
    # wait for the workflow to have taken the activity's result rather than racing it.
    async def recorded() -> ConversationState | None:
        state = await _state(client, workflow_id)
        return state if any(m.direction == "outbound" for m in state.last_messages) else None

    state = await eventually(recorded)
    assert state.status == "active" and state.turns == 1
    assert state.ticket_number is not None and state.ticket_number.startswith("TKT-")
    assert [m.direction for m in state.last_messages] == ["inbound", "outbound"]
    description = await client.get_workflow_handle(workflow_id).describe()
    attrs = {k.name: v for k, v in ((p.key, p.value) for p in description.typed_search_attributes)}
    assert attrs["TicketNumber"] == state.ticket_number
    assert attrs["Channel"] == "web_form"
    assert attrs["CustomerEmail"] == message.sender.email
    memo = await description.memo_value("summary")
    assert state.ticket_number in str(memo)
    async with sessions() as session:
        steps = (
            await session.execute(
                text(
                    "SELECT s.role, s.payload FROM agent_steps s JOIN conversations c ON c.id = s.conversation_id "
                    "WHERE c.workflow_id = :w ORDER BY s.step, s.role"
                ),
                {"w": workflow_id},
            )
        ).all()
    tools = [c["name"] for role, p in steps if role == "assistant" for c in p["tool_calls"]]
    assert tools == ["search_knowledge_base", "send_response"]


async def test_an_emails_greeting_and_signature_are_not_what_is_searched(
    worker, client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The offline responder searches and ranks what the customer asks, not "Hi there" and a job title."""
    message = inbound(
        "web_form",
        "Hi there,\n\nI hope you're well. How do I turn on two-factor authentication?\n\nThanks a lot,\n"
        "Maria López\nOperations Lead | Newbrand GmbH\nTel. +49 30 1234567",
    )
    workflow_id = await signal_with_start(client, settings, message)

    async def replied() -> list[dict[str, object]] | None:
        rows = await messages_of(sessions, workflow_id)
        return rows if any(r["direction"] == "outbound" for r in rows) else None

    rows = await eventually(replied)
    reply = str(next(r["content"] for r in rows if r["direction"] == "outbound"))
    assert "Two-Factor Authentication" in reply and "Turn on 2FA" in reply, reply
    async with sessions() as session:
        payloads = (
            await session.execute(
                text(
                    "SELECT s.payload FROM agent_steps s JOIN conversations c ON c.id = s.conversation_id "
                    "WHERE c.workflow_id = :w AND s.role = 'assistant' ORDER BY s.step"
                ),
                {"w": workflow_id},
            )
        ).scalars()
        calls = [c for p in payloads for c in p["tool_calls"]]
    assert calls[0]["name"] == "search_knowledge_base"
    assert json.loads(calls[0]["arguments"]) == {"query": "How do I turn on two-factor authentication?"}


async def test_duplicate_signals_give_one_turn_and_one_reply(
    worker, client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    message = inbound("whatsapp", "how can i export my board to csv?")
    workflow_id = ""
    for _ in range(3):  # at-least-once delivery upstream: the same record three times
        workflow_id = await signal_with_start(client, settings, message)

    async def replied() -> list[dict[str, object]] | None:
        rows = await messages_of(sessions, workflow_id)
        return rows if any(r["direction"] == "outbound" for r in rows) else None

    await eventually(replied)
    await asyncio.sleep(1.0)  # give a (wrong) second turn the chance to happen
    rows = await messages_of(sessions, workflow_id)
    assert [r["direction"] for r in rows].count("inbound") == 1
    assert [r["direction"] for r in rows].count("outbound") == 1
    state = await _state(client, workflow_id)
    assert state.turns == 1


async def test_pricing_escalates_and_a_human_resolves_with_the_temporal_cli(
    worker,
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    temporal_server: EmbeddedTemporal,
) -> None:
    message = inbound("web_form", "How much does the Pro plan cost for 40 users? Can you give us a discount?")
    workflow_id = await signal_with_start(client, settings, message)

    async def escalated() -> ConversationState | None:
        state = await _state(client, workflow_id)
        return state if state.status == "escalated" and len(state.last_messages) >= 2 else None

    state = await eventually(escalated)
    assert state.escalation is not None and state.escalation.reason == "pricing"
    holding = [r for r in await messages_of(sessions, workflow_id) if r["direction"] == "outbound"]
    assert len(holding) == 1 and "sales team" in str(holding[0]["content"])
    assert not any(ch.isdigit() and "$" in str(holding[0]["content"]) for ch in "0123456789")

    # While escalated, a new customer message is recorded for the human, not answered by the AI.
    await signal_with_start(
        client, settings, inbound("web_form", "Any news?", key=message.conversation_key, email=message.sender.email)
    )
    await eventually(lambda: _count(sessions, workflow_id, "inbound", 2))
    await asyncio.sleep(0.5)
    assert len([r for r in await messages_of(sessions, workflow_id) if r["direction"] == "outbound"]) == 1

    payload = json.dumps(
        {"agent": "Sam Rivera", "reply": "Our sales team will email you a quote today.", "action": "resume_ai"}
    )
    process = await asyncio.create_subprocess_exec(
        temporal_cli_path(),
        "workflow",
        "signal",
        "--address",
        temporal_server.address,
        "--workflow-id",
        workflow_id,
        "--name",
        "resolve_escalation",
        "--input",
        payload,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    assert process.returncode == 0, err.decode()

    async def resumed() -> ConversationState | None:
        state = await _state(client, workflow_id)
        return state if state.status == "active" else None

    await eventually(resumed)
    rows = await messages_of(sessions, workflow_id)
    human = [r for r in rows if r["role"] == "human_agent"]
    assert len(human) == 1 and "quote today" in str(human[0]["content"]) and "Sam Rivera" in str(human[0]["content"])
    async with sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT e.status, e.resolved_by, e.resolution_action, e.reason FROM escalations e "
                    "JOIN conversations c ON c.id = e.conversation_id WHERE c.workflow_id = :w"
                ),
                {"w": workflow_id},
            )
        ).one()
    assert tuple(row) == ("resolved", "Sam Rivera", "resume_ai", "pricing")

    # A second resolution is ignored: no second human reply.
    await client.get_workflow_handle(workflow_id).signal(
        "resolve_escalation", {"agent": "Sam Rivera", "reply": "dup", "action": "close"}
    )
    await asyncio.sleep(0.5)
    assert len([r for r in await messages_of(sessions, workflow_id) if r["role"] == "human_agent"]) == 1


async def _count(sessions: async_sessionmaker[AsyncSession], workflow_id: str, direction: str, n: int) -> bool:
    return [r["direction"] for r in await messages_of(sessions, workflow_id)].count(direction) >= n


async def test_a_phone_typed_on_the_form_does_not_make_the_whatsapp_customer_yours(
    worker, client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    email = f"omar.{uuid.uuid4().hex[:8]}@example.com"
    web = inbound("web_form", "How do I invite a guest to a board?", email=email, phone=phone)
    whatsapp = inbound("whatsapp", "and how do I remove a guest?", phone=phone)
    web_id = await signal_with_start(client, settings, web)
    wa_id = await signal_with_start(client, settings, whatsapp)
    await eventually(lambda: _count(sessions, web_id, "outbound", 1))
    await eventually(lambda: _count(sessions, wa_id, "outbound", 1))
    async with sessions() as session:
        customers = (
            await session.execute(
                text("SELECT DISTINCT customer_id FROM conversations WHERE workflow_id IN (:a, :b)"),
                {"a": web_id, "b": wa_id},
            )
        ).all()
    # The number was only typed on the form (a claim): the form's customer and the WhatsApp customer
    # stay two records until the number's owner confirms it (crm.identity, issue 15).
    assert len(customers) == 2


async def test_operators_read_what_each_step_decided(
    worker, client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The Temporal UI's "current details" lists each step's outcome, so nobody opens payloads."""
    from temporalio.api.sdk.v1 import WorkflowMetadata

    message = inbound("whatsapp", "How much does the Enterprise plan cost for 40 people?")
    workflow_id = await signal_with_start(client, settings, message)

    async def escalated() -> ConversationState | None:
        state = await _state(client, workflow_id)
        return state if state.status == "escalated" and len(state.last_messages) >= 2 else None

    await eventually(escalated)
    metadata = await client.get_workflow_handle(workflow_id).query(
        "__temporal_workflow_metadata", result_type=WorkflowMetadata
    )
    details = metadata.current_details
    assert "turn 1: inbound guardrails: pricing → escalate" in details
    assert "escalated to a human: pricing, priority medium" in details
    assert "template reply on whatsapp: not_configured" in details
    lines = details.splitlines()
    assert lines.index(next(x for x in lines if "inbound guardrails" in x)) < lines.index(
        next(x for x in lines if "escalated to a human" in x)
    )


async def test_a_merged_customer_is_followed_by_the_open_conversation(
    worker, client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # A human merged this WhatsApp customer into another record: the open workflow learns it by a
    # signal, and its state, search attributes and memo follow the record it now belongs to.
    message = inbound("whatsapp", "how can i export my board to csv?")
    workflow_id = await signal_with_start(client, settings, message)
    await eventually(lambda: _answered(sessions, workflow_id))
    first = await _state(client, workflow_id)
    assert first.customer_id is not None
    target = str(uuid.uuid4())
    handle = client.get_workflow_handle(workflow_id)
    await handle.signal(
        CUSTOMER_CHANGED_SIGNAL,
        CustomerChanged(customer_id=target, email="merged@example.com", phone=None, name="Merged"),
    )

    async def followed() -> ConversationState | None:
        state = await _state(client, workflow_id)
        return state if state.customer_id == target else None

    await eventually(followed)
    description = await handle.describe()
    attrs = {k.name: v for k, v in ((p.key, p.value) for p in description.typed_search_attributes)}
    assert attrs["CustomerEmail"] == "merged@example.com"
    assert "CustomerPhone" not in attrs
    assert "merged@example.com" in str(await description.memo_value("summary"))
    # The same signal again changes nothing and the conversation keeps answering.
    await handle.signal(CUSTOMER_CHANGED_SIGNAL, CustomerChanged(customer_id=target, email="merged@example.com"))
    follow_up = inbound("whatsapp", "and to excel?", key=message.conversation_key, phone=message.sender.phone)
    await handle.signal(INBOUND_SIGNAL, follow_up)

    async def second_turn() -> ConversationState | None:
        state = await _state(client, workflow_id)
        return state if state.turns == 2 else None

    assert (await eventually(second_turn)).customer_id == target


async def _answered(sessions: async_sessionmaker[AsyncSession], workflow_id: str) -> bool | None:
    rows = await messages_of(sessions, workflow_id)
    return True if any(r["direction"] == "outbound" for r in rows) else None
