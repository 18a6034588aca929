"""Rows for the report tests, inserted directly (conversations with outcomes, messages, escalations,
metric points, model steps), so each figure can be computed by hand from what a test wrote."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def customer(session: AsyncSession) -> str:
    return str(
        (await session.execute(text("INSERT INTO customers (name) VALUES ('Report R') RETURNING id"))).scalar_one()
    )


async def conversation(
    session: AsyncSession,
    *,
    channel: str,
    started_at: datetime,
    status: str = "closed",
    outcome: str | None = None,
    outcome_at: datetime | None = None,
    category: str | None = None,
) -> tuple[str, str | None]:
    """A conversation (and its ticket when `category` is given): (conversation id, ticket id)."""
    owner = await customer(session)
    conv = str(
        (
            await session.execute(
                text(
                    "INSERT INTO conversations (customer_id, channel, conversation_key, workflow_id, status, "
                    "started_at, ended_at, outcome, outcome_at) VALUES (:cu, :ch, :k, :w, :st, :at, :end, :o, :oa) "
                    "RETURNING id"
                ),
                {
                    "cu": owner,
                    "ch": channel,
                    "k": f"report-{uuid.uuid4().hex}",
                    "w": f"report-wf-{uuid.uuid4().hex}",
                    "st": status,
                    "at": started_at,
                    "end": outcome_at,
                    "o": outcome,
                    "oa": outcome_at,
                },
            )
        ).scalar_one()
    )
    ticket = None
    if category is not None:
        ticket = str(
            (
                await session.execute(
                    text(
                        "INSERT INTO tickets (conversation_id, customer_id, category, source_channel, created_at) "
                        "VALUES (:c, :cu, :cat, :ch, :at) RETURNING id"
                    ),
                    {"c": conv, "cu": owner, "cat": category, "ch": channel, "at": started_at},
                )
            ).scalar_one()
        )
    return conv, ticket


async def message(
    session: AsyncSession,
    conv: str,
    *,
    channel: str,
    direction: str,
    role: str,
    at: datetime,
    content: str = "…",
    delivery_status: str | None = None,
) -> None:
    status = delivery_status or ("received" if direction == "inbound" else "sent")
    await session.execute(
        text(
            "INSERT INTO messages (conversation_id, channel, direction, role, content, delivery_status, "
            "external_message_id, created_at) VALUES (:c, :ch, :d, :r, :t, :s, :x, :at)"
        ),
        {
            "c": conv,
            "ch": channel,
            "d": direction,
            "r": role,
            "t": content,
            "s": status,
            "x": f"report-{uuid.uuid4().hex}" if direction == "inbound" else None,
            "at": at,
        },
    )


async def escalation(
    session: AsyncSession,
    conv: str,
    *,
    reason: str,
    created_at: datetime,
    sla_due_at: datetime,
    ticket: str | None = None,
    responded_at: datetime | None = None,
    resolved_at: datetime | None = None,
) -> None:
    await session.execute(
        text(
            "INSERT INTO escalations (conversation_id, ticket_id, reason, priority, status, sla_due_at, created_at, "
            "responded_at, resolved_at) VALUES (:c, :t, :r, 'medium', :st, :due, :at, :resp, :res)"
        ),
        {
            "c": conv,
            "t": ticket,
            "r": reason,
            "st": "resolved" if resolved_at else "open",
            "due": sla_due_at,
            "at": created_at,
            "resp": responded_at,
            "res": resolved_at,
        },
    )


async def sentiment(session: AsyncSession, conv: str, *, channel: str, value: float, at: datetime) -> None:
    await session.execute(
        text(
            "INSERT INTO agent_metrics (metric_type, channel, value, conversation_id, recorded_at) "
            "VALUES ('sentiment', :ch, :v, :c, :at)"
        ),
        {"ch": channel, "v": value, "c": conv, "at": at},
    )


async def model_step(
    session: AsyncSession, conv: str, *, turn: int, prompt: int, completion: int, at: datetime, role: str = "assistant"
) -> None:
    await session.execute(
        text(
            "INSERT INTO agent_steps (conversation_id, turn, step, role, tool_call_id, payload, prompt_tokens, "
            "completion_tokens, created_at) VALUES (:c, :t, 0, :r, :call, CAST(:p AS jsonb), :pt, :ct, :at)"
        ),
        {
            "c": conv,
            "t": turn,
            "r": role,
            "call": None if role == "assistant" else f"call-{uuid.uuid4().hex[:6]}",
            "p": json.dumps({"model": "test"}),
            "pt": prompt,
            "ct": completion,
            "at": at,
        },
    )


LONG_QUESTION = "Can your product " + "really " * 60 + "do this?"


async def seed_known_day(session: AsyncSession, start: datetime) -> None:
    """The day the report tests compute by hand (tests/crm/test_report_figures.py lists each figure).

    `start` is the day's 00:00 UTC; rows just before and after the day check the window's edges.
    """
    from datetime import timedelta

    def at(hours: float, seconds: float = 0) -> datetime:
        return start + timedelta(hours=hours, seconds=seconds)

    # c1: web form, how-to, answered by the AI in 30 s, resolved by the AI.
    c1, _ = await conversation(
        session, channel="web_form", started_at=at(1), outcome="resolved_by_ai", outcome_at=at(2), category="how_to"
    )
    await message(session, c1, channel="web_form", direction="inbound", role="customer", at=at(1))
    await message(session, c1, channel="web_form", direction="outbound", role="agent", at=at(1, 30))
    await sentiment(session, c1, channel="web_form", value=0.5, at=at(1))
    await model_step(session, c1, turn=1, prompt=1000, completion=200, at=at(1))
    await model_step(session, c1, turn=1, prompt=9999, completion=9999, at=at(1), role="tool")  # not a model call

    # c2: email, billing; the AI's reply failed, a person answered after 10 minutes; refund escalation.
    c2, t2 = await conversation(
        session, channel="email", started_at=at(3), outcome="resolved_by_human", outcome_at=at(9), category="billing"
    )
    await message(session, c2, channel="email", direction="inbound", role="customer", at=at(3))
    await message(
        session, c2, channel="email", direction="outbound", role="agent", at=at(3, 10), delivery_status="failed"
    )
    await message(session, c2, channel="email", direction="outbound", role="human_agent", at=at(3, 600))
    await escalation(
        session,
        c2,
        reason="refund",
        created_at=at(3, 5),
        sla_due_at=at(5),
        ticket=t2,
        responded_at=at(3, 600),
        resolved_at=at(9),
    )

    # c3: WhatsApp, how-to; a holding reply in 90 s, escalated no_answer, nobody answered: abandoned.
    c3, t3 = await conversation(
        session, channel="whatsapp", started_at=at(10), outcome="abandoned", outcome_at=at(20), category="how_to"
    )
    await message(
        session,
        c3,
        channel="whatsapp",
        direction="inbound",
        role="customer",
        at=at(10),
        content="How do I export   invoices to PDF?",
    )
    await message(session, c3, channel="whatsapp", direction="outbound", role="agent", at=at(10, 90))
    await escalation(session, c3, reason="no_answer", created_at=at(10, 120), sla_due_at=at(12, 120), ticket=t3)
    await message(
        session, c3, channel="whatsapp", direction="inbound", role="customer", at=at(10, 300), content="hello?"
    )
    await sentiment(session, c3, channel="whatsapp", value=-0.5, at=at(10))
    await model_step(session, c3, turn=1, prompt=3000, completion=800, at=at(10, 60))

    # c4: WhatsApp, bug; still with a person; its SLA deadline falls on the next day.
    c4, t4 = await conversation(session, channel="whatsapp", started_at=at(12), status="escalated", category="bug")
    await message(
        session,
        c4,
        channel="whatsapp",
        direction="inbound",
        role="customer",
        at=at(12),
        content="how do I export invoices to pdf",
    )
    await escalation(
        session, c4, reason="no_answer", created_at=at(12, 60), sla_due_at=at(26), ticket=t4, responded_at=at(25, 60)
    )
    await sentiment(session, c4, channel="whatsapp", value=-0.2, at=at(12))

    # c5: started the day before, closed (by the AI) in the day; its escalation's SLA was met by a
    # resolution without a reply.
    c5, _ = await conversation(
        session, channel="web_form", started_at=at(-3), outcome="resolved_by_ai", outcome_at=at(0.5)
    )
    await escalation(session, c5, reason="human_request", created_at=at(-2), sla_due_at=at(0.25), resolved_at=at(1 / 6))

    # c6: email, account; started late in the day, answered in 20 s, closed the next day.
    c6, t6 = await conversation(
        session,
        channel="email",
        started_at=at(23.5),
        outcome="resolved_by_ai",
        outcome_at=at(24, 600),
        category="account",
    )
    await message(
        session, c6, channel="email", direction="inbound", role="customer", at=at(23.5), content=LONG_QUESTION
    )
    await message(session, c6, channel="email", direction="outbound", role="agent", at=at(23.5, 20))
    await escalation(session, c6, reason="no_answer", created_at=at(23, 2400), sla_due_at=at(25, 2400), ticket=t6)
    await sentiment(session, c6, channel="email", value=1.0, at=at(25))
    await model_step(session, c6, turn=1, prompt=5000, completion=0, at=at(24, 300))

    # Ratings: c1 5, c2 2 in the day; c5's 4, given the day before, is outside it.
    for conv, score, when in ((c1, 5, at(3)), (c2, 2, at(20)), (c5, 4, at(-1))):
        await session.execute(
            text(
                "INSERT INTO csat_ratings (conversation_id, channel, score, via, created_at) "
                "SELECT id, channel, :s, 'reply', :at FROM conversations WHERE id = CAST(:c AS uuid)"
            ),
            {"c": conv, "s": score, "at": when},
        )
