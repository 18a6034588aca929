"""CRM activities: identity, conversations, messages, tickets, escalations, metrics.

Every write is idempotent (insert-on-conflict or a guarded update), because Temporal retries an
activity whose worker died after the commit but before reporting success.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import ActivityDeps
from core.logging import get_logger
from core.observability import ESCALATIONS
from crm import identity
from crm.db import transaction
from workflows.contracts import (
    BumpEscalationInput,
    CloseInput,
    ConversationConfig,
    CustomerRef,
    EnsureTicketInput,
    EscalateInput,
    EscalationState,
    InboundMessage,
    OpenConversationInput,
    RecordedMessage,
    RecordInboundInput,
    ResolveEscalationInput,
    TicketRef,
    ToolInput,
    ToolResult,
    TurnMetrics,
)

log = get_logger(__name__)
TICKET_CATEGORIES = {"how_to", "bug", "billing", "account", "feature_request", "other"}
PRIORITIES = {"low", "medium", "high", "urgent"}


class CRMActivities:
    """Activities that read and write the CRM; one transaction each."""

    def __init__(self, deps: ActivityDeps) -> None:
        self.deps = deps

    @activity.defn(name="load_conversation_config")
    async def load_conversation_config(self) -> ConversationConfig:
        """The conversation limits and timers from settings (recorded in history once per run)."""
        s = self.deps.settings
        return ConversationConfig(
            idle_timeout_seconds=s.conversation_idle_timeout_seconds,
            sla_business_hours=s.escalation_sla_business_hours,
            business_day_start_hour=s.business_day_start_hour,
            business_day_end_hour=s.business_day_end_hour,
            max_agent_steps=s.agent_max_steps,
            max_tokens_per_conversation=s.agent_max_tokens_per_conversation,
            max_turns_per_run=s.conversation_max_turns_per_run,
            negative_sentiment_threshold=s.negative_sentiment_threshold,
            search_attributes=s.temporal_search_attributes,
        )

    @activity.defn(name="resolve_customer")
    async def resolve_customer(self, message: InboundMessage) -> CustomerRef:
        """Cross-channel identity: the same email or phone is the same customer on every channel."""
        async with transaction(self.deps.sessions) as session:
            try:
                found = await identity.resolve_customer(
                    session,
                    channel=message.channel,
                    email=message.sender.email,
                    phone=message.sender.phone,
                    name=message.sender.name,
                )
            except identity.NoIdentity as exc:
                raise ApplicationError(str(exc), non_retryable=True) from exc
        return CustomerRef(customer_id=found.customer_id, email=found.email, phone=found.phone, name=found.name)

    @activity.defn(name="open_conversation")
    async def open_conversation(self, inp: OpenConversationInput) -> str:
        """The open conversation row for this workflow run (created once)."""
        async with transaction(self.deps.sessions) as session:
            existing = await session.execute(
                text(
                    "SELECT id, workflow_id FROM conversations WHERE conversation_key = :k AND channel = :ch "
                    "AND status <> 'closed'"
                ),
                {"k": inp.conversation_key, "ch": inp.channel},
            )
            row = existing.one_or_none()
            if row is not None:
                await session.execute(
                    text("UPDATE conversations SET workflow_run_id = :r WHERE id = :id"),
                    {"r": inp.run_id, "id": row.id},
                )
                return str(row.id)
            created = await session.execute(
                text(
                    "INSERT INTO conversations (customer_id, channel, conversation_key, workflow_id, workflow_run_id, "
                    "subject) VALUES (:c, :ch, :k, :w, :r, :s) RETURNING id"
                ),
                {
                    "c": inp.customer_id,
                    "ch": inp.channel,
                    "k": inp.conversation_key,
                    "w": inp.workflow_id,
                    "r": inp.run_id,
                    "s": (inp.subject or "")[:500] or None,
                },
            )
            return str(created.scalar_one())

    @activity.defn(name="record_inbound_message")
    async def record_inbound_message(self, inp: RecordInboundInput) -> RecordedMessage:
        """Store the customer's message; a redelivery (same channel + provider id) is a no-op."""
        message = inp.message
        async with transaction(self.deps.sessions) as session:
            inserted = await session.execute(
                text(
                    "INSERT INTO messages (conversation_id, channel, direction, role, content, external_message_id, "
                    "delivery_status, attachments, attributes, created_at) "
                    "VALUES (:conv, :ch, 'inbound', 'customer', :content, :ext, 'received', "
                    "CAST(:att AS jsonb), CAST(:attr AS jsonb), :at) "
                    "ON CONFLICT (channel, external_message_id) WHERE direction = 'inbound' DO NOTHING RETURNING id"
                ),
                {
                    "conv": inp.conversation_id,
                    "ch": message.channel,
                    "content": message.text,
                    "ext": message.external_message_id,
                    "att": _json([a.model_dump() for a in message.attachments]),
                    "attr": _json({"subject": message.subject, "sender_name": message.sender.name, **message.metadata}),
                    "at": message.received_at,
                },
            )
            new_id = inserted.scalar_one_or_none()
            if new_id is None:
                existing = await session.execute(
                    text(
                        "SELECT id FROM messages WHERE channel = :ch AND external_message_id = :ext "
                        "AND direction = 'inbound'"
                    ),
                    {"ch": message.channel, "ext": message.external_message_id},
                )
                return RecordedMessage(message_id=str(existing.scalar_one()), duplicate=True)
        return RecordedMessage(message_id=str(new_id), duplicate=False, preview=message.text[:120])

    @activity.defn(name="ensure_ticket")
    async def ensure_ticket(self, inp: EnsureTicketInput) -> TicketRef:
        """The conversation's ticket; created once (unique per conversation), never twice."""
        category = inp.category if inp.category in TICKET_CATEGORIES else "other"
        priority = inp.priority if inp.priority in PRIORITIES else "medium"
        async with transaction(self.deps.sessions) as session:
            created = await session.execute(
                text(
                    "INSERT INTO tickets (conversation_id, customer_id, subject, category, priority, source_channel) "
                    "VALUES (:conv, :cust, :subj, :cat, :prio, :ch) "
                    "ON CONFLICT (conversation_id) DO NOTHING RETURNING id, ticket_number"
                ),
                {
                    "conv": inp.conversation_id,
                    "cust": inp.customer_id,
                    "subj": (inp.subject or "")[:500] or None,
                    "cat": category,
                    "prio": priority,
                    "ch": inp.channel,
                },
            )
            row = created.one_or_none()
            if row is not None:
                log.info("crm.ticket_created", ticket=row.ticket_number, channel=inp.channel)
                return TicketRef(ticket_id=str(row.id), ticket_number=row.ticket_number, created=True)
            row = (
                await session.execute(
                    text("SELECT id, ticket_number FROM tickets WHERE conversation_id = :conv"),
                    {"conv": inp.conversation_id},
                )
            ).one()
            return TicketRef(ticket_id=str(row.id), ticket_number=row.ticket_number, created=False)

    @activity.defn(name="create_ticket")
    async def create_ticket_tool(self, inp: ToolInput) -> ToolResult:
        """Tool `create_ticket`: the model asks for a ticket; the conversation has exactly one."""
        args = await self.deps.tool_arguments(inp)
        async with transaction(self.deps.sessions) as session:
            await session.execute(
                text(
                    "UPDATE tickets SET category = CASE WHEN :cat IN ('how_to','bug','billing','account',"
                    "'feature_request','other') THEN :cat ELSE category END, "
                    "priority = CASE WHEN :prio IN ('low','medium','high','urgent') THEN :prio ELSE priority END "
                    "WHERE conversation_id = :conv"
                ),
                {
                    "cat": str(args.get("category", "")),
                    "prio": str(args.get("priority", "")),
                    "conv": inp.conversation_id,
                },
            )
            number = await session.scalar(
                text("SELECT ticket_number FROM tickets WHERE conversation_id = :conv"), {"conv": inp.conversation_id}
            )
        result = {"ticket_number": number, "note": "Each conversation has exactly one ticket."}
        await self.deps.store_tool_result(inp, "create_ticket", result)
        return ToolResult(call_id=inp.call_id, name="create_ticket", summary=f"ticket {number}")

    @activity.defn(name="get_customer_history")
    async def get_customer_history(self, inp: ToolInput) -> ToolResult:
        """Tool `get_customer_history`: the customer's recent conversations on every channel."""
        async with self.deps.sessions() as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT c.channel, c.status, c.started_at, t.ticket_number, m.direction, m.content "
                        "FROM conversations c LEFT JOIN tickets t ON t.conversation_id = c.id "
                        "JOIN LATERAL (SELECT direction, content, created_at FROM messages "
                        "  WHERE conversation_id = c.id ORDER BY created_at DESC LIMIT 4) m ON true "
                        "WHERE c.customer_id = :cust AND c.id <> :conv "
                        "ORDER BY c.started_at DESC, m.created_at DESC LIMIT 24"
                    ),
                    {"cust": inp.customer_id, "conv": inp.conversation_id},
                )
            ).all()
        if inp.channel == "web_form":
            # The form cannot verify the email typed into it: whoever typed it gets no one's past.
            rows = []
        history = [
            {
                "channel": r.channel,
                "status": r.status,
                "started_at": r.started_at.isoformat(),
                "ticket": r.ticket_number,
                "direction": r.direction,
                "text": r.content[:400],
            }
            for r in rows
        ]
        await self.deps.store_tool_result(inp, "get_customer_history", {"previous_messages": history})
        channels = sorted({h["channel"] for h in history})
        return ToolResult(
            call_id=inp.call_id,
            name="get_customer_history",
            summary=f"{len(history)} earlier messages" + (f" on {', '.join(channels)}" if channels else ""),
        )

    @activity.defn(name="record_escalation")
    async def record_escalation(self, inp: EscalateInput) -> EscalationState:
        """Open the escalation (at most one open per conversation) and mark ticket and conversation."""
        async with transaction(self.deps.sessions) as session:
            ticket_id = await session.scalar(
                text("SELECT id FROM tickets WHERE conversation_id = :conv"), {"conv": inp.conversation_id}
            )
            inserted = await session.scalar(
                text(
                    "INSERT INTO escalations (conversation_id, ticket_id, reason, priority, sla_due_at) "
                    "VALUES (:conv, :t, :r, :p, :due) ON CONFLICT (conversation_id) WHERE status = 'open' DO NOTHING "
                    "RETURNING id"
                ),
                {
                    "conv": inp.conversation_id,
                    "t": ticket_id,
                    "r": inp.reason,
                    "p": inp.priority,
                    "due": inp.sla_due_at,
                },
            )
            row = (
                await session.execute(
                    text(
                        "SELECT id, reason, priority, sla_due_at, notified_count FROM escalations "
                        "WHERE conversation_id = :conv AND status = 'open'"
                    ),
                    {"conv": inp.conversation_id},
                )
            ).one()
            await session.execute(
                text("UPDATE conversations SET status = 'escalated' WHERE id = :conv"), {"conv": inp.conversation_id}
            )
            await session.execute(
                text("UPDATE tickets SET status = 'escalated', priority = :p WHERE conversation_id = :conv"),
                {"conv": inp.conversation_id, "p": row.priority},
            )
            await _metric(session, "escalation", None, 1.0, inp.conversation_id, {"reason": inp.reason})
        if inserted is not None:  # a retried activity must not count the same hand-off twice
            ESCALATIONS.labels(inp.reason).inc()
        log.info("crm.escalated", ticket=inp.ticket_number, reason=inp.reason, priority=row.priority)
        return _escalation_state(row)

    @activity.defn(name="bump_escalation")
    async def bump_escalation(self, inp: BumpEscalationInput) -> EscalationState:
        """The SLA passed without a human answer: raise the priority and re-notify."""
        async with transaction(self.deps.sessions) as session:
            # Guarded by the due time, so a retried activity does not count the same breach twice.
            row = (
                await session.execute(
                    text(
                        "UPDATE escalations SET priority = :p, notified_count = notified_count + "
                        "CASE WHEN sla_due_at < :due THEN 1 ELSE 0 END, sla_due_at = greatest(sla_due_at, :due) "
                        "WHERE id = :id RETURNING id, reason, priority, sla_due_at, notified_count, conversation_id"
                    ),
                    {"p": inp.new_priority, "id": inp.escalation_id, "due": inp.new_sla_due_at},
                )
            ).one()
            await session.execute(
                text("UPDATE tickets SET priority = :p WHERE conversation_id = :conv"),
                {"p": row.priority, "conv": row.conversation_id},
            )
        log.warning(
            "escalation.sla_breached", escalation=inp.escalation_id, priority=row.priority, notified=row.notified_count
        )
        return _escalation_state(row)

    @activity.defn(name="resolve_escalation_record")
    async def resolve_escalation_record(self, inp: ResolveEscalationInput) -> str:
        """Record who resolved the escalation, when, and how."""
        async with transaction(self.deps.sessions) as session:
            await session.execute(
                text(
                    "UPDATE escalations SET status = 'resolved', resolved_by = :a, resolution_action = :act, "
                    "resolved_at = now() WHERE id = :id AND status = 'open'"
                ),
                {"a": inp.agent, "act": inp.action, "id": inp.escalation_id},
            )
            new_status = "active" if inp.action == "resume_ai" else "resolved"
            await session.execute(
                text("UPDATE conversations SET status = :s WHERE id = :conv AND status = 'escalated'"),
                {"s": new_status, "conv": inp.conversation_id},
            )
            await session.execute(
                text(
                    "UPDATE tickets SET status = 'in_progress' WHERE conversation_id = :conv AND status = 'escalated'"
                ),
                {"conv": inp.conversation_id},
            )
        log.info("escalation.resolved", escalation=inp.escalation_id, agent=inp.agent, action=inp.action)
        return inp.escalation_id

    @activity.defn(name="close_conversation")
    async def close_conversation(self, inp: CloseInput) -> str:
        """Close the conversation and resolve its ticket."""
        async with transaction(self.deps.sessions) as session:
            await session.execute(
                text("UPDATE conversations SET status = 'closed', ended_at = coalesce(ended_at, now()) WHERE id = :c"),
                {"c": inp.conversation_id},
            )
            await session.execute(
                text(
                    "UPDATE tickets SET status = 'resolved', resolved_at = coalesce(resolved_at, now()), "
                    "resolution_notes = coalesce(resolution_notes, :n) WHERE conversation_id = :c "
                    "AND status NOT IN ('resolved', 'closed')"
                ),
                {"c": inp.conversation_id, "n": f"closed: {inp.reason}"},
            )
        log.info("conversation.closed", conversation=inp.conversation_id, reason=inp.reason)
        return inp.conversation_id

    @activity.defn(name="record_turn_metrics")
    async def record_turn_metrics(self, inp: TurnMetrics) -> None:
        """Time-series points for /api/v1/metrics/channels and the alert thresholds."""
        # With a turn number the points are unique (migration 0006): a re-run of the turn (a retry
        # after a lost completion, a worker crash before the workflow task completed, a reset)
        # records nothing new.
        dims = {"turn": inp.turn} if inp.turn is not None else None
        async with transaction(self.deps.sessions) as session:
            await session.execute(
                text("UPDATE conversations SET sentiment_score = :s WHERE id = :c"),
                {"s": max(-1.0, min(1.0, inp.sentiment)), "c": inp.conversation_id},
            )
            await _metric(session, "response_latency_ms", inp.channel, inp.latency_ms, inp.conversation_id, dims)
            await _metric(session, "sentiment", inp.channel, inp.sentiment, inp.conversation_id, dims)
            if inp.prompt_tokens or inp.completion_tokens:
                await _metric(
                    session,
                    "llm_tokens",
                    inp.channel,
                    float(inp.prompt_tokens + inp.completion_tokens),
                    inp.conversation_id,
                    dims,
                )
        threshold = self.deps.settings.alert_latency_ms
        if inp.latency_ms > threshold:
            log.warning(
                "alert.latency_exceeded", channel=inp.channel, latency_ms=round(inp.latency_ms), threshold=threshold
            )


def _escalation_state(row: Any) -> EscalationState:
    return EscalationState(
        escalation_id=str(row.id),
        reason=row.reason,
        priority=row.priority,
        sla_due_at=row.sla_due_at,
        notified_count=row.notified_count,
    )


async def _metric(
    session: AsyncSession,
    metric_type: str,
    channel: str | None,
    value: float,
    conversation_id: str | None,
    dimensions: dict[str, Any] | None = None,
) -> None:
    if channel is None and conversation_id is not None:
        channel = await session.scalar(text("SELECT channel FROM conversations WHERE id = :c"), {"c": conversation_id})
    await session.execute(
        text(
            "INSERT INTO agent_metrics (metric_type, channel, value, conversation_id, dimensions) "
            "VALUES (:t, :ch, :v, :c, CAST(:d AS jsonb)) ON CONFLICT DO NOTHING"
        ),
        {"t": metric_type, "ch": channel, "v": value, "c": conversation_id, "d": _json(dimensions or {})},
    )


def _json(value: object) -> str:
    import json

    return json.dumps(value, default=str)
