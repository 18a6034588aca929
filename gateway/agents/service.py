"""What human agents do: read the escalation queue, open a customer's history, resolve an escalation.

The HTTP API and the `crm-fte agents` / `crm-fte escalations` commands call these same functions,
so a resolution from the terminal and one from the console are one operation: it is sent to the
conversation's workflow as the `resolve_escalation_update` update (whose validator refuses a
conversation that is not waiting for a human) and written to the `human_actions` audit table,
accepted or refused.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.client import WorkflowUpdateStage as UpdateStage
from temporalio.service import RPCError, RPCStatusCode

from core import whatsapp_window as window
from core.errors import BadRequest, Conflict, NotFound, ServiceUnavailable
from core.logging import get_logger
from core.settings import Settings, get_settings
from core.vocabulary import DELIVERY_PROGRESS, DeliveryStatus, ResolutionAction
from crm.db import transaction
from crm.repositories import agent_steps, api_keys, conversations, customers, escalations, messages, notes, tickets
from gateway.agents.auth import HumanAgent
from gateway.agents.schemas import (
    ConversationHistory,
    CustomerIdentity,
    EscalationQueue,
    HistoryConversation,
    HistoryCustomer,
    HistoryEscalation,
    HistoryMessage,
    HistoryNote,
    HistoryTicket,
    HumanActionView,
    KnowledgeArticle,
    QueueCounts,
    QueueCustomer,
    QueueItem,
    ResolveResult,
    WhatsAppWindow,
)
from workflows.contracts import RESOLVE_ESCALATION_UPDATE, ResolutionOutcome, ResolveEscalation

log = get_logger(__name__)

RESOLVE_WAIT_SECONDS = 30.0
# A console that re-opens the same conversation is one "viewed" row per quarter hour, not one per click.
VIEW_AUDIT_WINDOW = timedelta(minutes=15)
TICKET_NUMBER = re.compile(r"^TKT-\d{4,12}$")
MAX_HISTORY_CONVERSATIONS = 50
MAX_MESSAGES_PER_CONVERSATION = 500


# ----------------------------------------------------------------------------- the queue


def preview(content: str | None, limit: int = 160) -> str | None:
    """`content` on one line, cut to `limit` characters with an ellipsis."""
    if content is None:
        return None
    flat = " ".join(content.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


async def open_escalations(
    session: AsyncSession, *, limit: int = 100, filters: escalations.QueueFilters | None = None
) -> list[QueueItem]:
    """Open escalations the filters match, most urgent first, then SLA due soonest, then oldest."""
    return [
        QueueItem(
            ticket_id=e.ticket_number,
            escalation_id=e.escalation_id,
            conversation_id=e.conversation_id,
            workflow_id=e.workflow_id,
            reason=e.reason,
            priority=e.priority,
            sla_due_at=e.sla_due_at,
            overdue=e.overdue,
            notified_count=e.notified_count,
            channel=e.channel,
            subject=e.subject,
            customer=QueueCustomer(
                id=e.customer_id, name=e.customer_name, email=e.customer_email, phone=e.customer_phone
            ),
            created_at=e.created_at,
            last_customer_message=preview(e.last_customer_message),
            last_customer_message_at=e.last_customer_message_at,
            assignee=e.assignee,
            responded_at=e.responded_at,
        )
        for e in await escalations.open_queue(session, limit=limit, filters=filters)
    ]


async def escalation_queue(
    session: AsyncSession, *, limit: int = 100, filters: escalations.QueueFilters | None = None
) -> EscalationQueue:
    """The queue as the API serves it: the escalations and the counts per priority and breached."""
    items = await open_escalations(session, limit=limit, filters=filters)
    counts = await escalations.queue_counts(session, filters=filters)
    return EscalationQueue(
        escalations=items,
        count=len(items),
        counts=QueueCounts(total=counts.total, breached=counts.breached, by_priority=counts.by_priority),
    )


# ----------------------------------------------------------------------------- cross-channel history


def _uuid_or_404(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no {what} {value!r}") from None


async def whatsapp_window(
    session: AsyncSession, *, conversation_id: uuid.UUID, customer_id: uuid.UUID, settings: Settings, now: datetime
) -> WhatsAppWindow:
    """The 24-hour window of a WhatsApp conversation's number, decided as the send activity decides."""
    last = await messages.whatsapp_last_inbound_at(session, conversation_id=conversation_id)
    email = await customers.verified_email(session, customer_id=customer_id)
    via = window.late_reply_via(settings, last_inbound_at=last, verified_email=email, now=now)
    return WhatsAppWindow(
        open=window.is_open(last, now=now),
        last_customer_message_at=last,
        closes_at=window.closes_at(last),
        late_reply_via=via,
        email_to=email if via == "email" else None,
    )


async def conversation_history(
    session: AsyncSession, *, conversation_id: str, settings: Settings | None = None
) -> ConversationHistory:
    """Everything about the customer of one conversation, on every channel, with the KB articles used.

    `settings` (the gateway's) say how a late WhatsApp reply would go; read at call time when not given.
    """
    conv_id = _uuid_or_404(conversation_id, "conversation")
    customer_id = await conversations.customer_of(session, conversation_id=conv_id)
    if customer_id is None:
        raise NotFound(f"no conversation {conversation_id}")
    profile = await customers.profile(session, customer_id=customer_id)
    if profile is None:  # deleted since: customers are never deleted while they have conversations
        raise NotFound(f"no conversation {conversation_id}")
    identifiers = await customers.identifiers_of(session, customer_id=customer_id)
    # The requested conversation always, then the most recent others.
    summaries = await conversations.conversations_of_customer(
        session, customer_id=customer_id, always=conv_id, limit=MAX_HISTORY_CONVERSATIONS
    )
    ids = [c.id for c in summaries]
    ticket_of = {
        t.conversation_id: HistoryTicket(
            ticket_id=t.ticket_number,
            status=t.status,
            category=t.category,
            priority=t.priority,
            subject=t.subject,
            created_at=t.created_at,
            resolved_at=t.resolved_at,
        )
        for t in await tickets.tickets_of(session, conversation_ids=ids)
    }
    escalations_of: dict[uuid.UUID, list[HistoryEscalation]] = {i: [] for i in ids}
    for e in await escalations.escalations_of(session, conversation_ids=ids):
        escalations_of[e.conversation_id].append(HistoryEscalation.model_validate(e, from_attributes=True))
    messages_of: dict[uuid.UUID, list[HistoryMessage]] = {i: [] for i in ids}
    for m in await messages.latest_of_conversations(
        session, conversation_ids=ids, per_conversation=MAX_MESSAGES_PER_CONVERSATION
    ):
        messages_of[m.conversation_id].append(HistoryMessage.model_validate(m, from_attributes=True))
    notes_of: dict[uuid.UUID, list[HistoryNote]] = {i: [] for i in ids}
    for n in await notes.notes_of(session, conversation_ids=ids):
        notes_of[n.conversation_id].append(HistoryNote.model_validate(n, from_attributes=True))
    articles = await knowledge_articles(session, conversation_ids=ids)
    actions = await api_keys.human_actions_on(session, conversation_ids=ids)
    requested = next((c for c in summaries if c.id == conv_id), None)
    late_window = None
    if requested is not None and requested.channel == "whatsapp":
        late_window = await whatsapp_window(
            session,
            conversation_id=conv_id,
            customer_id=customer_id,
            settings=settings or get_settings(),
            now=datetime.now(UTC),
        )
    return ConversationHistory(
        conversation_id=conv_id,
        customer=HistoryCustomer(
            id=profile.id,
            name=profile.name,
            email=profile.email,
            phone=profile.phone,
            company=profile.company,
            plan=profile.plan,
            identifiers=[CustomerIdentity.model_validate(i, from_attributes=True) for i in identifiers],
        ),
        conversations=[
            HistoryConversation(
                id=c.id,
                channel=c.channel,
                status=c.status,
                subject=c.subject,
                started_at=c.started_at,
                ended_at=c.ended_at,
                workflow_id=c.workflow_id,
                sentiment_score=c.sentiment_score,
                ticket=ticket_of.get(c.id),
                escalations=escalations_of[c.id],
                messages=messages_of[c.id],
                kb_articles=articles.get(c.id, []),
                notes=notes_of[c.id],
            )
            for c in summaries
        ],
        human_actions=[HumanActionView.model_validate(a, from_attributes=True) for a in actions],
        whatsapp_window=late_window,
    )


async def knowledge_articles(
    session: AsyncSession, *, conversation_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[KnowledgeArticle]]:
    """Per conversation, each article the AI's knowledge-base searches returned (first sighting kept)."""
    found: dict[uuid.UUID, dict[str, KnowledgeArticle]] = {}
    for hit in await agent_steps.knowledge_hits(session, conversation_ids=conversation_ids):
        if not hit.article_id:
            continue
        seen = found.setdefault(hit.conversation_id, {})
        if hit.article_id not in seen:
            seen[hit.article_id] = KnowledgeArticle(
                article_id=hit.article_id,
                title=hit.title or hit.article_id,
                query=hit.query,
                turn=hit.turn,
                score=hit.score,
            )
    return {conv: list(by_id.values()) for conv, by_id in found.items()}


async def record_view(session: AsyncSession, *, agent: HumanAgent, conversation_id: uuid.UUID) -> None:
    """Audit that `agent` opened a customer's history (once per agent and conversation per window)."""
    await api_keys.record_conversation_view(
        session,
        api_key_id=agent.key_id,
        agent_name=agent.name,
        conversation_id=conversation_id,
        window=VIEW_AUDIT_WINDOW,
    )


# ----------------------------------------------------------------------------- resolving


def normalise_ticket_number(value: str) -> str:
    """`TKT-0001` from ` tkt-0001 `; NotFound for anything that cannot be a ticket number."""
    number = value.strip().upper()
    if not TICKET_NUMBER.match(number):
        raise NotFound(f"no ticket {value.strip()!r}")
    return number


async def resolve_escalation(
    *,
    sessions: async_sessionmaker[AsyncSession],
    temporal: Client,
    ticket_number: str,
    reply: str,
    action: ResolutionAction,
    agent_name: str,
    api_key_id: uuid.UUID | None = None,
    via: Literal["api", "cli"] = "api",
    wait_seconds: float = RESOLVE_WAIT_SECONDS,
) -> ResolveResult:
    """Hand the conversation back with a human reply (the workflow update), and audit the attempt.

    NotFound for an unknown ticket; Conflict when nothing waits for a human (already resolved, or
    never escalated), whether the CRM or the workflow's validator says so.
    """
    number = normalise_ticket_number(ticket_number)
    reply = reply.strip()
    if not reply:
        raise BadRequest("the reply must not be empty")
    async with sessions() as session:
        target = await tickets.resolution_target(session, ticket_number=number)
    if target is None:
        raise NotFound(f"no ticket {number}")
    conversation_id = target.conversation_id

    async def audit(outcome: str, **extra: Any) -> None:
        async with transaction(sessions) as session:
            await api_keys.record_human_action(
                session,
                agent_name=agent_name,
                api_key_id=api_key_id,
                action="escalation.resolve",
                ticket_number=number,
                conversation_id=conversation_id,
                detail={"action": action, "reply": reply, "via": via, "outcome": outcome, **extra},
            )

    if target.open_escalation_id is None:
        await audit("refused", reason="no open escalation")
        raise Conflict(f"{number} has no open escalation (already resolved, or never escalated)")
    handle = temporal.get_workflow_handle(target.workflow_id)

    async def refused(exc: WorkflowUpdateFailedError) -> Conflict:
        # The validator's rejection (nothing waits for a human any more, e.g. a concurrent
        # resolution won) arrives as a failed update, from start_update or from result().
        reason = str(exc.cause or exc)[:300]
        await audit("refused", reason=reason)
        return Conflict(f"{number} is not waiting for a human", detail={"reason": reason})

    try:
        update = await handle.start_update(
            RESOLVE_ESCALATION_UPDATE,
            ResolveEscalation(agent=agent_name, reply=reply, action=action),
            wait_for_stage=UpdateStage.ACCEPTED,
            result_type=ResolutionOutcome,
            rpc_timeout=timedelta(seconds=wait_seconds),
        )
    except WorkflowUpdateFailedError as exc:
        raise await refused(exc) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
        raise ServiceUnavailable(
            f"no worker accepted the resolution of {number} within {wait_seconds:g}s; check the queue before retrying"
        ) from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            await audit("refused", reason="workflow not running")
            raise Conflict(f"the conversation of {number} is no longer running") from None
        raise ServiceUnavailable("Temporal did not answer; retry") from exc

    outcome: ResolutionOutcome | None = None
    try:
        outcome = await asyncio.wait_for(update.result(), wait_seconds)
    except TimeoutError:
        log.warning("agents.resolution_still_sending", ticket=number, agent=agent_name)
    except WorkflowUpdateFailedError as exc:
        raise await refused(exc) from None
    await audit(
        "accepted" if outcome is None else "completed",
        conversation_status=outcome.status if outcome else None,
        reply_message_ids=outcome.reply_message_ids if outcome else [],
    )
    delivery = await reply_delivery_status(sessions, outcome.reply_message_ids) if outcome else None
    log.info("agents.escalation_resolved", ticket=number, agent=agent_name, action=action, via=via, delivery=delivery)
    return ResolveResult(
        ticket_id=number,
        action=action,
        resolved_by=agent_name,
        reply_sent=outcome is not None,
        conversation_status=outcome.status if outcome else None,
        reply_message_ids=outcome.reply_message_ids if outcome else [],
        delivery_status=delivery,
    )


# A reply in several parts is as far as its least-advanced part; a part that failed, or could not
# be sent at all, decides what the agent is told.
_DELIVERY_SEVERITY: tuple[DeliveryStatus, ...] = ("failed", "undelivered", "not_configured")


def combined_delivery_status(statuses: list[DeliveryStatus]) -> DeliveryStatus | None:
    """One status for a reply's parts: a failure or not_configured wins, else the least progress."""
    for status in _DELIVERY_SEVERITY:
        if status in statuses:
            return status
    if not statuses:
        return None
    return min(statuses, key=lambda s: DELIVERY_PROGRESS.get(s, 0))


async def reply_delivery_status(
    sessions: async_sessionmaker[AsyncSession], message_ids: list[str]
) -> DeliveryStatus | None:
    """The delivery status of a reply (its outbound messages, by id), as recorded so far."""
    statuses: list[DeliveryStatus] = []
    async with sessions() as session:
        for message_id in message_ids:
            record = await messages.get_outbound(session, message_id=message_id)
            if record is not None:
                statuses.append(record.delivery_status)  # type: ignore[arg-type]  # a CHECKed column
    return combined_delivery_status(statuses)
