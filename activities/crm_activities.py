"""CRM activities: identity, conversations, messages, tickets, escalations, metrics.

Each activity is one transaction over the repositories in `crm.repositories`. Every write is
idempotent (insert-on-conflict or a guarded update, inside the repository), because Temporal
retries an activity whose worker died after the commit but before reporting success.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import ActivityDeps
from core.logging import get_logger
from core.observability import ESCALATIONS
from core.vocabulary import PRIORITIES, TICKET_CATEGORIES, Priority, TicketCategory
from crm import identity
from crm.db import transaction
from crm.repositories import conversations, escalations, messages, metrics, tickets
from crm.repositories.escalations import EscalationRecord
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
            inbound_classifier=s.openai_configured and s.inbound_classifier_enabled,
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
            existing = await conversations.find_open(
                session, conversation_key=inp.conversation_key, channel=inp.channel
            )
            if existing is not None:
                await conversations.set_workflow_run(session, conversation_id=existing, run_id=inp.run_id)
                return existing
            return await conversations.create_conversation(
                session,
                customer_id=inp.customer_id,
                channel=inp.channel,
                conversation_key=inp.conversation_key,
                workflow_id=inp.workflow_id,
                workflow_run_id=inp.run_id,
                subject=inp.subject,
            )

    @activity.defn(name="record_inbound_message")
    async def record_inbound_message(self, inp: RecordInboundInput) -> RecordedMessage:
        """Store the customer's message; a redelivery (same channel + provider id) is a no-op."""
        message = inp.message
        async with transaction(self.deps.sessions) as session:
            recorded = await messages.record_inbound(
                session,
                conversation_id=inp.conversation_id,
                channel=message.channel,
                content=message.text,
                external_message_id=message.external_message_id,
                attachments=[a.model_dump() for a in message.attachments],
                attributes={"subject": message.subject, "sender_name": message.sender.name, **message.metadata},
                received_at=message.received_at,
            )
        if recorded.duplicate:
            return RecordedMessage(message_id=recorded.message_id, duplicate=True)
        return RecordedMessage(message_id=recorded.message_id, duplicate=False, preview=message.text[:120])

    @activity.defn(name="ensure_ticket")
    async def ensure_ticket(self, inp: EnsureTicketInput) -> TicketRef:
        """The conversation's ticket; created once (unique per conversation), never twice."""
        # The category comes from outside (message metadata): an unknown one files the ticket as "other".
        category = _ticket_category(inp.category) or "other"
        priority = _priority(inp.priority) or "medium"
        async with transaction(self.deps.sessions) as session:
            ticket = await tickets.create_ticket(
                session,
                conversation_id=inp.conversation_id,
                customer_id=inp.customer_id,
                channel=inp.channel,
                subject=inp.subject,
                category=category,
                priority=priority,
            )
        if ticket.created:
            log.info("crm.ticket_created", ticket=ticket.ticket_number, channel=inp.channel)
        return TicketRef(ticket_id=ticket.ticket_id, ticket_number=ticket.ticket_number, created=ticket.created)

    @activity.defn(name="create_ticket")
    async def create_ticket_tool(self, inp: ToolInput) -> ToolResult:
        """Tool `create_ticket`: the model asks for a ticket; the conversation has exactly one."""
        args = await self.deps.tool_arguments(inp)
        async with transaction(self.deps.sessions) as session:
            # Words outside the vocabulary keep what the ticket has.
            await tickets.classify(
                session,
                conversation_id=inp.conversation_id,
                category=_ticket_category(args.get("category")),
                priority=_priority(args.get("priority")),
            )
            ticket = await tickets.find_for_conversation(session, conversation_id=inp.conversation_id)
        number = ticket.ticket_number if ticket is not None else None
        result = {"ticket_number": number, "note": "Each conversation has exactly one ticket."}
        await self.deps.store_tool_result(inp, "create_ticket", result)
        return ToolResult(call_id=inp.call_id, name="create_ticket", summary=f"ticket {number}")

    @activity.defn(name="get_customer_history")
    async def get_customer_history(self, inp: ToolInput) -> ToolResult:
        """Tool `get_customer_history`: the customer's recent conversations on every channel."""
        async with self.deps.sessions() as session:
            entries = await conversations.customer_history(
                session, customer_id=inp.customer_id, excluding_conversation_id=inp.conversation_id
            )
        if inp.channel == "web_form":
            # The form cannot verify the email typed into it: whoever typed it gets no one's past.
            entries = []
        history = [
            {
                "channel": e.channel,
                "status": e.status,
                "started_at": e.started_at.isoformat(),
                "ticket": e.ticket_number,
                "direction": e.direction,
                "text": e.content[:400],
            }
            for e in entries
        ]
        await self.deps.store_tool_result(inp, "get_customer_history", {"previous_messages": history})
        channels = sorted({e.channel for e in entries})
        return ToolResult(
            call_id=inp.call_id,
            name="get_customer_history",
            summary=f"{len(history)} earlier messages" + (f" on {', '.join(channels)}" if channels else ""),
        )

    @activity.defn(name="record_escalation")
    async def record_escalation(self, inp: EscalateInput) -> EscalationState:
        """Open the escalation (at most one open per conversation) and mark ticket and conversation."""
        async with transaction(self.deps.sessions) as session:
            ticket = await tickets.find_for_conversation(session, conversation_id=inp.conversation_id)
            opened = await escalations.open_escalation(
                session,
                conversation_id=inp.conversation_id,
                ticket_id=ticket.ticket_id if ticket is not None else None,
                reason=inp.reason,
                priority=inp.priority,
                sla_due_at=inp.sla_due_at,
            )
            # The open one: this call's, or the one a retried attempt opened before.
            escalation = await escalations.get_open(session, conversation_id=inp.conversation_id)
            await conversations.mark_escalated(session, conversation_id=inp.conversation_id)
            await tickets.mark_escalated(session, conversation_id=inp.conversation_id, priority=escalation.priority)
            await metrics.record_point(
                session,
                metric_type="escalation",
                value=1.0,
                conversation_id=inp.conversation_id,
                dimensions={"reason": inp.reason},
            )
        if opened:  # a retried activity must not count the same hand-off twice
            ESCALATIONS.labels(inp.reason).inc()
        log.info("crm.escalated", ticket=inp.ticket_number, reason=inp.reason, priority=escalation.priority)
        return _escalation_state(escalation)

    @activity.defn(name="bump_escalation")
    async def bump_escalation(self, inp: BumpEscalationInput) -> EscalationState:
        """The SLA passed without a human answer: raise the priority and re-notify."""
        async with transaction(self.deps.sessions) as session:
            escalation = await escalations.raise_priority(
                session, escalation_id=inp.escalation_id, priority=inp.new_priority, sla_due_at=inp.new_sla_due_at
            )
            await tickets.set_priority(
                session, conversation_id=escalation.conversation_id, priority=escalation.priority
            )
        log.warning(
            "escalation.sla_breached",
            escalation=inp.escalation_id,
            priority=escalation.priority,
            notified=escalation.notified_count,
        )
        return _escalation_state(escalation)

    @activity.defn(name="resolve_escalation_record")
    async def resolve_escalation_record(self, inp: ResolveEscalationInput) -> str:
        """Record who resolved the escalation, when, and how."""
        async with transaction(self.deps.sessions) as session:
            await escalations.resolve(
                session, escalation_id=inp.escalation_id, resolved_by=inp.agent, action=inp.action
            )
            await conversations.end_escalation(
                session,
                conversation_id=inp.conversation_id,
                status="active" if inp.action == "resume_ai" else "resolved",
            )
            await tickets.resume_after_escalation(session, conversation_id=inp.conversation_id)
        log.info("escalation.resolved", escalation=inp.escalation_id, agent=inp.agent, action=inp.action)
        return inp.escalation_id

    @activity.defn(name="close_conversation")
    async def close_conversation(self, inp: CloseInput) -> str:
        """Close the conversation and resolve its ticket."""
        async with transaction(self.deps.sessions) as session:
            await conversations.close(session, conversation_id=inp.conversation_id)
            await tickets.resolve_with_conversation(
                session, conversation_id=inp.conversation_id, notes=f"closed: {inp.reason}"
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
        points = [("response_latency_ms", inp.latency_ms), ("sentiment", inp.sentiment)]
        if inp.prompt_tokens or inp.completion_tokens:
            points.append(("llm_tokens", float(inp.prompt_tokens + inp.completion_tokens)))
        async with transaction(self.deps.sessions) as session:
            await conversations.set_sentiment(session, conversation_id=inp.conversation_id, score=inp.sentiment)
            for metric_type, value in points:
                await metrics.record_point(
                    session,
                    metric_type=metric_type,
                    value=value,
                    channel=inp.channel,
                    conversation_id=inp.conversation_id,
                    dimensions=dims,
                )
        threshold = self.deps.settings.alert_latency_ms
        if inp.latency_ms > threshold:
            log.warning(
                "alert.latency_exceeded", channel=inp.channel, latency_ms=round(inp.latency_ms), threshold=threshold
            )


def _ticket_category(value: object) -> TicketCategory | None:
    """The value when it is a ticket category of the vocabulary, else None."""
    return value if value in TICKET_CATEGORIES else None


def _priority(value: object) -> Priority | None:
    """The value when it is a priority of the vocabulary, else None."""
    return value if value in PRIORITIES else None


def _escalation_state(escalation: EscalationRecord) -> EscalationState:
    return EscalationState(
        escalation_id=escalation.escalation_id,
        reason=escalation.reason,
        priority=escalation.priority,
        sla_due_at=escalation.sla_due_at,
        notified_count=escalation.notified_count,
    )
