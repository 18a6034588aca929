"""The CRM repositories on a real PostgreSQL, each test in a rolled-back transaction."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from core.vocabulary import Channel
from crm.repositories import agent_steps, conversations, customers, escalations, messages, metrics, tickets


async def _customer(session: AsyncSession) -> str:
    return str((await session.execute(text("INSERT INTO customers (name) VALUES ('R') RETURNING id"))).scalar_one())


async def _conversation(session: AsyncSession, channel: Channel = "whatsapp") -> str:
    return await conversations.create_conversation(
        session,
        customer_id=await _customer(session),
        channel=channel,
        conversation_key=f"key-{uuid.uuid4().hex}",
        workflow_id=f"wf-{uuid.uuid4().hex}",
    )


async def test_an_open_conversation_is_found_until_it_is_closed(session: AsyncSession) -> None:
    key = f"+1555{uuid.uuid4().int % 10**7:07d}"
    customer = await _customer(session)
    assert await conversations.find_open(session, conversation_key=key, channel="whatsapp") is None
    created = await conversations.create_conversation(
        session,
        customer_id=customer,
        channel="whatsapp",
        conversation_key=key,
        workflow_id="wf-1",
        workflow_run_id="run-1",
        subject="x" * 600,
    )
    assert await conversations.find_open(session, conversation_key=key, channel="whatsapp") == created
    assert await conversations.find_open(session, conversation_key=key, channel="email") is None
    await conversations.set_workflow_run(session, conversation_id=created, run_id="run-2")
    row = (
        await session.execute(text("SELECT workflow_run_id, subject FROM conversations WHERE id = :c"), {"c": created})
    ).one()
    assert row.workflow_run_id == "run-2"
    assert len(row.subject) == 500
    await session.execute(text("UPDATE conversations SET status = 'closed' WHERE id = :c"), {"c": created})
    assert await conversations.find_open(session, conversation_key=key, channel="whatsapp") is None


async def test_a_conversation_gets_one_ticket_however_often_it_is_asked(session: AsyncSession) -> None:
    conversation = await _conversation(session)
    customer = await session.scalar(text("SELECT customer_id FROM conversations WHERE id = :c"), {"c": conversation})
    first = await tickets.create_ticket(
        session,
        conversation_id=conversation,
        customer_id=str(customer),
        channel="whatsapp",
        subject=None,
        category="bug",
        priority="high",
    )
    again = await tickets.create_ticket(
        session, conversation_id=conversation, customer_id=str(customer), channel="whatsapp", subject="other"
    )
    assert first.created and not again.created
    assert (again.ticket_id, again.ticket_number, again.created_at) == (
        first.ticket_id,
        first.ticket_number,
        first.created_at,
    )
    row = (
        await session.execute(text("SELECT category, priority FROM tickets WHERE id = :t"), {"t": first.ticket_id})
    ).one()
    assert (row.category, row.priority) == ("bug", "high")


async def test_a_ticket_number_drawn_first_is_the_one_the_ticket_gets(session: AsyncSession) -> None:
    number = await tickets.next_ticket_number(session)
    conversation = await _conversation(session, "web_form")
    customer = await session.scalar(text("SELECT customer_id FROM conversations WHERE id = :c"), {"c": conversation})
    ticket = await tickets.create_ticket(
        session,
        conversation_id=conversation,
        customer_id=str(customer),
        channel="web_form",
        subject="Help",
        ticket_number=number,
        contact_email="a@example.com",
    )
    assert ticket.ticket_number == number and number.startswith("TKT-")
    email = await session.scalar(text("SELECT contact_email FROM tickets WHERE id = :t"), {"t": ticket.ticket_id})
    assert email == "a@example.com"


async def test_turn_search_hits_tell_not_searched_from_found_nothing(session: AsyncSession) -> None:
    conversation = await _conversation(session)
    assert await agent_steps.turn_search_hits(session, conversation_id=conversation, turn=1) is None

    async def tool_row(step: int, name: str, result: dict[str, object]) -> None:
        await session.execute(
            text(
                "INSERT INTO agent_steps (conversation_id, turn, step, role, tool_call_id, payload) "
                "VALUES (:c, 1, :s, 'tool', :id, CAST(:p AS jsonb))"
            ),
            {"c": conversation, "s": step, "id": f"call-{step}", "p": json.dumps({"name": name, "result": result})},
        )

    await tool_row(1, "search_knowledge_base", {"error": "query is required", "hits": []})
    assert await agent_steps.turn_search_hits(session, conversation_id=conversation, turn=1) == []
    await tool_row(3, "search_knowledge_base", {"query": "b", "hits": [{"title": "B", "content": "second"}]})
    await tool_row(2, "search_knowledge_base", {"query": "a", "hits": [{"title": "A", "content": "first"}]})
    await tool_row(4, "get_customer_history", {"previous_messages": []})
    hits = await agent_steps.turn_search_hits(session, conversation_id=conversation, turn=1)
    assert [h.get("content") for h in hits or []] == ["first", "second"]
    assert await agent_steps.turn_search_hits(session, conversation_id=conversation, turn=2) is None


async def test_a_verified_identifier_finds_its_customer_and_a_claim_finds_nobody(session: AsyncSession) -> None:
    email = f"r-{uuid.uuid4().hex[:8]}@example.com"
    assert await customers.find_by_identifier(session, kind="email", value=email) is None
    await customers.lock_identifier(session, value=email)
    first = await customers.create_customer(session, email=email, phone=None, name=None)
    await customers.link_identifier(session, customer_id=first, kind="email", value=email, channel="web_form")
    assert await customers.find_by_identifier(session, kind="email", value=email) is None  # a claim
    await customers.link_identifier(
        session, customer_id=first, kind="email", value=email, channel="email", verified_via="gmail"
    )
    second = await customers.create_customer(session, email=None, phone=None, name="Other")
    await customers.link_identifier(session, customer_id=second, kind="email", value=email, channel="web_form")
    assert await customers.find_by_identifier(session, kind="email", value=email) == first
    assert await customers.claimed(session, customer_id=second, kind="email") == [email]
    assert await customers.claimed(session, customer_id=first, kind="email") == []
    filled = await customers.fill_in_contact(
        session, customer_id=first, email="ignored@example.com", phone="+14155550100", name="Ann"
    )
    assert (filled.customer_id, filled.email, filled.phone, filled.name) == (first, email, "+14155550100", "Ann")


async def test_an_inbound_message_is_recorded_once(session: AsyncSession) -> None:
    conversation = await _conversation(session)
    external = f"SM{uuid.uuid4().hex}"

    async def record(content: str) -> messages.InboundRecorded:
        return await messages.record_inbound(
            session,
            conversation_id=conversation,
            channel="whatsapp",
            content=content,
            external_message_id=external,
            attachments=[{"url": "https://example.com/a.png"}],
            attributes={"subject": None, "at": datetime(2026, 1, 1, tzinfo=UTC)},
            received_at=datetime.now(UTC),
        )

    first = await record("hello")
    again = await record("hello again")
    assert not first.duplicate and again.duplicate and again.message_id == first.message_id
    lines = await messages.recent_transcript(session, conversation_id=conversation)
    assert [(line.direction, line.role, line.content) for line in lines] == [("inbound", "customer", "hello")]


async def test_a_conversation_reads_in_arrival_order_whatever_the_senders_clock_says(session: AsyncSession) -> None:
    """The second email's Date is a second *earlier* than the first's (a tie at second precision, or a
    skewed clock): the model must still read it as the customer's latest message (it once answered the
    first message twice and never the second, in the fault-injection run)."""
    conversation = await _conversation(session, "email")
    at = datetime(2026, 12, 2, 12, 0, 5, tzinfo=UTC)

    async def inbound(content: str, received_at: datetime) -> str:
        recorded = await messages.record_inbound(
            session,
            conversation_id=conversation,
            channel="email",
            content=content,
            external_message_id=f"gm-{uuid.uuid4().hex}",
            attachments=[],
            attributes={},
            received_at=received_at,
        )
        return recorded.message_id

    first = await inbound("first question", at)
    await session.execute(
        text(
            "INSERT INTO messages (conversation_id, channel, direction, role, content, delivery_status) "
            "VALUES (:c, 'email', 'outbound', 'agent', 'first answer', 'sent')"
        ),
        {"c": conversation},
    )
    second = await inbound("second question", at - timedelta(seconds=1))

    lines = await messages.recent_transcript(session, conversation_id=conversation)
    assert [line.content for line in lines] == ["first question", "first answer", "second question"]
    assert await messages.contents_by_ids(session, message_ids=[second, first]) == ["first question", "second question"]
    shown = await messages.thread(session, conversation_id=uuid.UUID(conversation))
    assert [m.content for m in shown] == ["first question", "first answer", "second question"]
    latest = await messages.latest_of_conversations(
        session, conversation_ids=[uuid.UUID(conversation)], per_conversation=2
    )
    assert [m.content for m in latest] == ["first answer", "second question"]


async def test_one_open_escalation_per_conversation_and_a_breach_counted_once(session: AsyncSession) -> None:
    conversation = await _conversation(session)
    due = datetime.now(UTC) + timedelta(hours=2)
    opened = await escalations.open_escalation(
        session, conversation_id=conversation, ticket_id=None, reason="refund", priority="high", sla_due_at=due
    )
    again = await escalations.open_escalation(
        session, conversation_id=conversation, ticket_id=None, reason="pricing", priority="low", sla_due_at=due
    )
    assert opened and not again
    current = await escalations.get_open(session, conversation_id=conversation)
    assert (current.reason, current.priority, current.notified_count) == ("refund", "high", 0)
    later = due + timedelta(hours=2)
    bumped = await escalations.raise_priority(
        session, escalation_id=current.escalation_id, priority="urgent", sla_due_at=later
    )
    retried = await escalations.raise_priority(
        session, escalation_id=current.escalation_id, priority="urgent", sla_due_at=later
    )
    assert (bumped.priority, bumped.notified_count, bumped.sla_due_at) == ("urgent", 1, later)
    assert retried.notified_count == 1
    await escalations.resolve(session, escalation_id=current.escalation_id, resolved_by="ana", action="close")
    await escalations.resolve(session, escalation_id=current.escalation_id, resolved_by="bob", action="resume_ai")
    row = (
        await session.execute(
            text("SELECT status, resolved_by, resolution_action FROM escalations WHERE id = :e"),
            {"e": current.escalation_id},
        )
    ).one()
    assert tuple(row) == ("resolved", "ana", "close")


async def test_ticket_status_follows_the_conversation(session: AsyncSession) -> None:
    conversation = await _conversation(session)
    customer = await session.scalar(text("SELECT customer_id FROM conversations WHERE id = :c"), {"c": conversation})
    ticket = await tickets.create_ticket(
        session, conversation_id=conversation, customer_id=str(customer), channel="whatsapp", subject=None
    )

    async def state() -> tuple[str, str, str, str | None]:
        row = (
            await session.execute(
                text("SELECT t.status, t.priority, t.category, t.resolution_notes FROM tickets t WHERE t.id = :t"),
                {"t": ticket.ticket_id},
            )
        ).one()
        return tuple(row)

    await tickets.classify(session, conversation_id=conversation, category="billing", priority=None)
    assert await state() == ("open", "medium", "billing", None)
    await tickets.mark_escalated(session, conversation_id=conversation, priority="high")
    await conversations.mark_escalated(session, conversation_id=conversation)
    assert await state() == ("escalated", "high", "billing", None)
    await tickets.set_priority(session, conversation_id=conversation, priority="urgent")
    await tickets.resume_after_escalation(session, conversation_id=conversation)
    await conversations.end_escalation(session, conversation_id=conversation, status="active")
    assert await state() == ("in_progress", "urgent", "billing", None)
    await conversations.close(session, conversation_id=conversation)
    await tickets.resolve_with_conversation(session, conversation_id=conversation, notes="closed: idle")
    await tickets.resolve_with_conversation(session, conversation_id=conversation, notes="closed: again")
    assert await state() == ("resolved", "urgent", "billing", "closed: idle")
    status = await session.scalar(text("SELECT status FROM conversations WHERE id = :c"), {"c": conversation})
    assert status == "closed"
    found = await tickets.find_for_conversation(session, conversation_id=conversation)
    assert found is not None and found.ticket_number == ticket.ticket_number


async def test_a_metric_point_with_a_turn_is_recorded_once(session: AsyncSession) -> None:
    conversation = await _conversation(session)
    for value in (1.0, 2.0):
        await metrics.record_point(
            session, metric_type="escalation", value=value, conversation_id=conversation, dimensions={"turn": 1}
        )
    rows = (
        await session.execute(
            text("SELECT channel, value FROM agent_metrics WHERE conversation_id = :c"), {"c": conversation}
        )
    ).all()
    assert [tuple(r) for r in rows] == [("whatsapp", 1.0)]
