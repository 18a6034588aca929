"""Customer records with everything hanging off them, written straight into the CRM for merge and GDPR tests."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass
class Seeded:
    """One customer and the ids of what was written for it."""

    customer_id: uuid.UUID
    conversation_ids: list[uuid.UUID] = field(default_factory=list)
    workflow_ids: list[str] = field(default_factory=list)
    ticket_ids: list[uuid.UUID] = field(default_factory=list)
    identifier_ids: list[uuid.UUID] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def tag() -> str:
    return uuid.uuid4().hex[:10]


async def customer(
    session: AsyncSession, *, name: str | None = None, email: str | None = None, phone: str | None = None
) -> Seeded:
    cid = await session.scalar(
        text("INSERT INTO customers (name, email, phone) VALUES (:n, :e, :p) RETURNING id"),
        {"n": name, "e": email, "p": phone},
    )
    assert cid is not None
    return Seeded(customer_id=cid)


async def identifier(
    session: AsyncSession, seeded: Seeded, *, kind: str, value: str, verified: bool, channel: str = "email"
) -> uuid.UUID:
    via = None if not verified else ("gmail" if kind == "email" else "whatsapp")
    iid = await session.scalar(
        text(
            "INSERT INTO customer_identifiers (customer_id, identifier_type, identifier_value, channel, "
            "verified_at, verified_via) VALUES (:c, :t, :v, :ch, CASE WHEN :verified THEN now() END, :via) RETURNING id"
        ),
        {"c": seeded.customer_id, "t": kind, "v": value, "ch": channel, "verified": verified, "via": via},
    )
    assert iid is not None
    seeded.identifier_ids.append(iid)
    return iid


async def conversation(
    session: AsyncSession,
    seeded: Seeded,
    *,
    channel: str = "email",
    status: str = "active",
    body: str | None = None,
    escalate: bool = False,
    workflow_id: str | None = None,
) -> uuid.UUID:
    """A conversation with an inbound and an outbound message, a ticket, an agent step and a metric point."""
    key = f"key-{tag()}"
    workflow_id = workflow_id or f"conversation-test-{key}"
    conv = await session.scalar(
        text(
            "INSERT INTO conversations (customer_id, channel, conversation_key, workflow_id, status, subject) "
            "VALUES (:c, :ch, :k, :w, :s, :subj) RETURNING id"
        ),
        {"c": seeded.customer_id, "ch": channel, "k": key, "w": workflow_id, "s": status, "subj": f"Subject {key}"},
    )
    assert conv is not None
    body = body or f"My secret message {tag()}"
    reply = f"Our reply {tag()}"
    await session.execute(
        text(
            "INSERT INTO messages (conversation_id, channel, direction, role, content, external_message_id, "
            "delivery_status, attributes) VALUES (:c, :ch, 'inbound', 'customer', :b, :x, 'received', "
            "CAST(:attr AS jsonb))"
        ),
        {"c": conv, "ch": channel, "b": body, "x": f"ext-{tag()}", "attr": json.dumps({"from": "someone"})},
    )
    await session.execute(
        text(
            "INSERT INTO messages (conversation_id, channel, direction, role, content, idempotency_key, "
            "delivery_status) VALUES (:c, :ch, 'outbound', 'agent', :b, :k, 'sent')"
        ),
        {"c": conv, "ch": channel, "b": reply, "k": f"idem-{tag()}"},
    )
    ticket = await session.scalar(
        text(
            "INSERT INTO tickets (conversation_id, customer_id, subject, source_channel, contact_email) "
            "VALUES (:c, :cu, :s, :ch, :e) RETURNING id"
        ),
        {"c": conv, "cu": seeded.customer_id, "s": f"Ticket {key}", "ch": channel, "e": f"{key}@example.com"},
    )
    assert ticket is not None
    await session.execute(
        text(
            "INSERT INTO agent_steps (conversation_id, turn, step, role, payload) "
            "VALUES (:c, 1, 1, 'assistant', CAST(:p AS jsonb))"
        ),
        {"c": conv, "p": json.dumps({"content": f"model said about {body}"})},
    )
    await session.execute(
        text("INSERT INTO agent_metrics (metric_type, channel, value, conversation_id) VALUES ('latency', :ch, 1, :c)"),
        {"ch": channel, "c": conv},
    )
    if escalate:
        await session.execute(
            text(
                "INSERT INTO escalations (conversation_id, ticket_id, reason, priority, sla_due_at) "
                "VALUES (:c, :t, 'legal', 'high', now() + interval '2 hours')"
            ),
            {"c": conv, "t": ticket},
        )
    seeded.conversation_ids.append(conv)
    seeded.workflow_ids.append(workflow_id)
    seeded.ticket_ids.append(ticket)
    seeded.texts += [body, reply]
    return conv


async def owner_of(session: AsyncSession, table: str, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    rows = await session.execute(text(f"SELECT DISTINCT customer_id FROM {table} WHERE id = ANY(:ids)"), {"ids": ids})
    return {r.customer_id for r in rows}


async def snapshot(session: AsyncSession, customer_ids: list[uuid.UUID]) -> dict[str, Any]:
    """Everything about these customers that a merge or an unmerge could change, comparable with ==."""
    ids = {"ids": customer_ids}

    async def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await session.execute(text(sql), ids)]

    return {
        "customers": await rows(
            "SELECT id, email, phone, name, company, merged_into, erased_at FROM customers WHERE id = ANY(:ids) ORDER BY id"
        ),
        "identifiers": await rows(
            "SELECT id, customer_id, identifier_type, identifier_value, channel, verified_at, verified_via, created_at "
            "FROM customer_identifiers WHERE customer_id = ANY(:ids) ORDER BY id"
        ),
        "conversations": await rows(
            "SELECT id, customer_id, status, workflow_id FROM conversations WHERE customer_id = ANY(:ids) ORDER BY id"
        ),
        "tickets": await rows("SELECT id, customer_id FROM tickets WHERE customer_id = ANY(:ids) ORDER BY id"),
        "merges": await rows(
            "SELECT id, unmerged_at FROM customer_merges WHERE source_customer_id = ANY(:ids) "
            "OR target_customer_id = ANY(:ids) ORDER BY id"
        ),
    }
