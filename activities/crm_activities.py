"""CRM activities: identity, conversations, messages, tickets, escalations, metrics.

Each activity is one transaction over the repositories in `crm.repositories`. Every write is
idempotent (insert-on-conflict or a guarded update, inside the repository), because Temporal
retries an activity whose worker died after the commit but before reporting success.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import ActivityDeps
from activities.guardrails.activities import screen_inbound
from core.logging import get_logger
from core.observability import (
    CONVERSATION_OUTCOMES,
    CONVERSATIONS_STARTED,
    CSAT_RATINGS,
    ESCALATIONS,
    REPLY_LATENCY,
    SLA_BREACHES,
)
from core.vocabulary import (
    CHANNELS,
    ESCALATION_REASONS,
    PRIORITIES,
    TICKET_CATEGORIES,
    Priority,
    TicketCategory,
)
from core.vocabulary import CONVERSATION_OUTCOMES as CONVERSATION_OUTCOMES_WORDS
from crm import identity
from crm.db import transaction
from crm.repositories import conversations, escalations, messages, metrics, notes, ratings, tickets
from crm.repositories.escalations import EscalationRecord
from kb import learning
from workflows.contracts import (
    AssignInput,
    BumpEscalationInput,
    CloseInput,
    ConversationConfig,
    CustomerRef,
    EnsureTicketInput,
    EscalateInput,
    EscalationState,
    InboundMessage,
    IntakeInput,
    IntakeResult,
    OpenConversationInput,
    RecordedMessage,
    RecordInboundInput,
    RecordRatingInput,
    ResolveEscalationInput,
    TicketRef,
    ToolInput,
    ToolResult,
    TurnMetrics,
)

log = get_logger(__name__)

# Every series at zero from the worker's start: Prometheus' increase() and rate() see a counter's
# first increment only against an earlier sample, and the chart's alerts read these counters.
for _series, _labels in (
    (CONVERSATIONS_STARTED, CHANNELS),
    (ESCALATIONS, ESCALATION_REASONS),
    (SLA_BREACHES, PRIORITIES),
):
    for _label in _labels:
        _series.labels(_label)
for _channel in CHANNELS:
    for _outcome in CONVERSATION_OUTCOMES_WORDS:
        CONVERSATION_OUTCOMES.labels(_channel, _outcome)


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
            holidays=[d.isoformat() for d in s.holiday_dates],
            csat_enabled=s.csat_enabled,
            csat_window_seconds=s.csat_window_hours * 3600,
            csat_low_score=s.csat_low_score,
            max_agent_steps=s.agent_max_steps,
            max_tokens_per_conversation=s.agent_max_tokens_per_conversation,
            max_turns_per_run=s.conversation_max_turns_per_run,
            negative_sentiment_threshold=s.negative_sentiment_threshold,
            search_attributes=s.temporal_search_attributes,
            inbound_classifier=s.openai_configured and s.inbound_classifier_enabled,
            notify_team=bool(s.notify_email_to or s.notify_slack_webhook_url or s.notify_webhook_url),
            notify_due_soon_minutes=s.notify_sla_due_soon_minutes,
        )

    @activity.defn(name="record_inbound_turn")
    async def record_inbound_turn(self, inp: IntakeInput) -> IntakeResult:
        """A turn's intake in one transaction: senders, conversation, messages, ticket, and (unless a
        person owns the conversation) the inbound guardrails' decision on what was recorded.

        The same steps as resolve_customer → open_conversation → record_inbound_message (per
        message) → ensure_ticket, which histories before the `one-intake-step` patch run one
        activity each. Every step is idempotent, so a retried attempt returns what the first one
        recorded.
        """
        rules = identity.IdentityRules.from_settings(self.deps.settings)
        customer_id, conversation_id = inp.customer_id, inp.conversation_id
        found: list[CustomerRef] = []
        recorded: list[RecordedMessage] = []
        ticket: TicketRef | None = None
        async with transaction(self.deps.sessions) as session:
            for message in inp.messages:
                who = await _resolve(session, message, rules)
                found.append(who)
                if customer_id is None:
                    customer_id = who.customer_id
                if conversation_id is None:
                    conversation_id = await _open(
                        session,
                        OpenConversationInput(
                            workflow_id=inp.workflow_id,
                            run_id=inp.run_id,
                            channel=inp.channel,
                            conversation_key=inp.conversation_key,
                            customer_id=customer_id,
                            subject=message.subject,
                        ),
                    )
                recorded.append(await _record_inbound(session, conversation_id, message))
            if inp.needs_ticket and conversation_id is not None and customer_id is not None:
                first = inp.messages[0]
                ticket = await _ensure_ticket(
                    session,
                    EnsureTicketInput(
                        conversation_id=conversation_id,
                        customer_id=customer_id,
                        channel=inp.channel,
                        subject=first.subject or first.text[:120],
                        category=str(first.metadata.get("category", "other")),
                        priority=_priority(first.metadata.get("priority")) or "medium",
                    ),
                )
            guard = None
            if inp.screen:
                guard = await screen_inbound(
                    session,
                    self.deps.settings,
                    message_ids=[r.message_id for r in recorded],
                    texts=[m.text for m in inp.messages],
                    channel=inp.channel,
                )
        if conversation_id is None:  # cannot happen: messages has at least one item
            raise ApplicationError("intake without messages", non_retryable=True)
        if inp.conversation_id is None and not recorded[0].duplicate:
            # The workflow's first intake, committed now; a retried attempt finds its messages
            # recorded (duplicates) and counts nothing. The web form creates its conversation row
            # in the gateway, so a created row would miss it: the first recorded message does not.
            CONVERSATIONS_STARTED.labels(inp.channel).inc()
        if ticket is not None and ticket.created:
            log.info("crm.ticket_created", ticket=ticket.ticket_number, channel=inp.channel)
        return IntakeResult(
            customers=found, conversation_id=conversation_id, recorded=recorded, ticket=ticket, guard=guard
        )

    # The four steps below are what histories before the `one-intake-step` patch call one by one.
    @activity.defn(name="resolve_customer")
    async def resolve_customer(self, message: InboundMessage) -> CustomerRef:
        """Cross-channel identity: the customer whose verified email or phone the channel proves (else a new one)."""
        async with transaction(self.deps.sessions) as session:
            return await _resolve(session, message, identity.IdentityRules.from_settings(self.deps.settings))

    @activity.defn(name="open_conversation")
    async def open_conversation(self, inp: OpenConversationInput) -> str:
        """The open conversation row for this workflow run (created once)."""
        async with transaction(self.deps.sessions) as session:
            return await _open(session, inp)

    @activity.defn(name="record_inbound_message")
    async def record_inbound_message(self, inp: RecordInboundInput) -> RecordedMessage:
        """Store the customer's message; a redelivery (same channel + provider id) is a no-op."""
        async with transaction(self.deps.sessions) as session:
            return await _record_inbound(session, inp.conversation_id, inp.message)

    @activity.defn(name="ensure_ticket")
    async def ensure_ticket(self, inp: EnsureTicketInput) -> TicketRef:
        """The conversation's ticket; created once (unique per conversation), never twice."""
        async with transaction(self.deps.sessions) as session:
            ticket = await _ensure_ticket(session, inp)
        if ticket.created:
            log.info("crm.ticket_created", ticket=ticket.ticket_number, channel=inp.channel)
        return ticket

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
        async with self.deps.reads() as session:
            entries = await conversations.customer_history(
                session, customer_id=inp.customer_id, excluding_conversation_id=inp.conversation_id
            )
        if inp.channel == "web_form":
            # The form proves nothing it is given: whoever typed an address gets no one's past (each
            # submission is its own customer anyway, until a confirmation link or a human joins them).
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
            escalation, breached = await escalations.raise_priority_after_breach(
                session, escalation_id=inp.escalation_id, priority=inp.new_priority, sla_due_at=inp.new_sla_due_at
            )
            await tickets.set_priority(
                session, conversation_id=escalation.conversation_id, priority=escalation.priority
            )
        if breached:  # a retried activity must not count the same missed deadline twice
            SLA_BREACHES.labels(escalation.priority).inc()
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
            resolved_now = await escalations.resolve(
                session, escalation_id=inp.escalation_id, resolved_by=inp.agent, action=inp.action
            )
            if resolved_now and inp.note:  # once, with the resolution: a retried attempt adds no second note
                await notes.add_note(
                    session,
                    conversation_id=uuid.UUID(inp.conversation_id),
                    author=inp.agent,
                    body=inp.note,
                    api_key_id=None,
                    kind="hand_back",
                )
            if resolved_now:
                # Issue 17: a `no_answer` gap a person already answered (the ownership flow replies
                # before handing back) becomes a suggested KB entry in this transaction; the SQL
                # checks the reason, and a one-step resolve's reply, recorded after this activity,
                # is picked up when the review queue is listed (see kb/learning.py).
                await learning.collect_suggestions(session, escalation_id=inp.escalation_id)
            await conversations.end_escalation(
                session,
                conversation_id=inp.conversation_id,
                status="active" if inp.action == "resume_ai" else "resolved",
            )
            await tickets.resume_after_escalation(session, conversation_id=inp.conversation_id)
        log.info("escalation.resolved", escalation=inp.escalation_id, agent=inp.agent, action=inp.action)
        return inp.escalation_id

    @activity.defn(name="assign_escalation")
    async def assign_escalation(self, inp: AssignInput) -> None:
        """Mirror who owns the open escalation (and a person's first reply) for the queue's filters."""
        async with transaction(self.deps.sessions) as session:
            await escalations.assign(
                session, escalation_id=inp.escalation_id, assignee=inp.assignee, responded=inp.responded
            )
        log.info("escalation.assigned", escalation=inp.escalation_id, assignee=inp.assignee, responded=inp.responded)

    @activity.defn(name="record_rating")
    async def record_rating(self, inp: RecordRatingInput) -> bool:
        """Store the customer's rating once; a low one is also a note beside the messages (the comment
        attached for the person who follows up). True when this call stored it."""
        r = inp.rating
        async with transaction(self.deps.sessions) as session:
            stored = await ratings.record(
                session,
                conversation_id=inp.conversation_id,
                channel=inp.channel,
                score=r.score,
                comment=r.comment,
                via=r.via,
            )
            if stored and inp.low:
                await notes.add_note(
                    session,
                    conversation_id=uuid.UUID(inp.conversation_id),
                    author="Customer rating",
                    body=f"Rated {r.score}/5" + (f": {r.comment}" if r.comment else " (no comment)"),
                    api_key_id=None,
                )
        if stored:
            CSAT_RATINGS.labels(inp.channel, str(r.score)).inc()
        log.info("conversation.rated", conversation=inp.conversation_id, score=r.score, via=r.via, stored=stored)
        return stored

    @activity.defn(name="close_conversation")
    async def close_conversation(self, inp: CloseInput) -> str:
        """Close the conversation and resolve its ticket."""
        async with transaction(self.deps.sessions) as session:
            decided = await conversations.close(session, conversation_id=inp.conversation_id, outcome=inp.outcome)
            await tickets.resolve_with_conversation(
                session, conversation_id=inp.conversation_id, notes=f"closed: {inp.reason}"
            )
        if decided is not None and inp.outcome is not None:  # a retried attempt counts nothing twice
            CONVERSATION_OUTCOMES.labels(decided, inp.outcome).inc()
        log.info("conversation.closed", conversation=inp.conversation_id, reason=inp.reason, outcome=inp.outcome)
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
            recorded = await metrics.record_points(
                session, points=points, channel=inp.channel, conversation_id=inp.conversation_id, dimensions=dims
            )
        if recorded or inp.turn is None:  # a re-run turn was observed the first time
            REPLY_LATENCY.labels(inp.channel).observe(inp.latency_ms / 1000)
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


# ------------------------------------------------------------------------------ intake steps
async def _resolve(session: AsyncSession, message: InboundMessage, rules: identity.IdentityRules) -> CustomerRef:
    """The customer who wrote this message.

    WhatsApp proves the number (Twilio signs the webhook); email proves the From address only when
    Gmail authenticated its domain. A message that proves nothing (the web form, an email that
    failed DKIM/DMARC) belongs to its open conversation's customer (for the web form, the one the
    gateway recorded with the ticket), else to a new customer holding what it carries as claims:
    a typed or forged address must never find anyone else.
    """
    proven = message.channel == "whatsapp" or (
        message.channel == "email" and message.metadata.get("sender_authenticated") == "true"
    )
    if not proven:
        owner = await conversations.open_customer(
            session, conversation_key=message.conversation_key, channel=message.channel
        )
        if owner is not None:
            return CustomerRef(customer_id=owner.customer_id, email=owner.email, phone=owner.phone, name=owner.name)
    try:
        found = await identity.resolve_customer(
            session,
            channel=message.channel,
            email=message.sender.email,
            phone=message.sender.phone,
            name=message.sender.name,
            rules=rules,
            sender_proven=proven,
        )
    except identity.NoIdentity as exc:
        raise ApplicationError(str(exc), non_retryable=True) from exc
    return CustomerRef(customer_id=found.customer_id, email=found.email, phone=found.phone, name=found.name)


async def _open(session: AsyncSession, inp: OpenConversationInput) -> str:
    existing = await conversations.find_open(session, conversation_key=inp.conversation_key, channel=inp.channel)
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


async def _record_inbound(session: AsyncSession, conversation_id: str, message: InboundMessage) -> RecordedMessage:
    recorded = await messages.record_inbound(
        session,
        conversation_id=conversation_id,
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


async def _ensure_ticket(session: AsyncSession, inp: EnsureTicketInput) -> TicketRef:
    # The category comes from outside (message metadata): an unknown one files the ticket as "other".
    ticket = await tickets.create_ticket(
        session,
        conversation_id=inp.conversation_id,
        customer_id=inp.customer_id,
        channel=inp.channel,
        subject=inp.subject,
        category=_ticket_category(inp.category) or "other",
        priority=_priority(inp.priority) or "medium",
    )
    return TicketRef(ticket_id=ticket.ticket_id, ticket_number=ticket.ticket_number, created=ticket.created)
