"""Human agents: API keys, the escalation queue, cross-channel history and resolving escalations.

The HTTP API below and the `crm-fte agents` / `crm-fte escalations` commands call the same
service functions, so a resolution from the terminal and one from the console are one operation:
it is sent to the conversation's workflow as the `resolve_escalation_update` update (whose
validator refuses a conversation that is not waiting for a human) and written to the
`human_actions` audit table, accepted or refused.

API keys look like ``crmfte_<prefix>_<secret>``: the prefix finds the row, only the SHA-256 of the
secret is stored, and the comparison is constant-time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.client import WorkflowUpdateStage as UpdateStage
from temporalio.service import RPCError, RPCStatusCode

from core.errors import BadRequest, Conflict, Forbidden, NotFound, ServiceUnavailable, Unauthorized
from core.logging import get_logger
from crm.db import transaction
from gateway.deps import ResourcesDep
from workflows.contracts import (
    MAX_TEXT_CHARS,
    RESOLVE_ESCALATION_UPDATE,
    ResolutionOutcome,
    ResolveEscalation,
)

log = get_logger(__name__)

KEY_SCHEME = "crmfte"
SCOPE_READ = "escalations:read"
SCOPE_WRITE = "escalations:write"
SCOPES: tuple[str, ...] = (SCOPE_READ, SCOPE_WRITE)
RESOLVE_WAIT_SECONDS = 30.0
# last_used_at is a hint for operators, not an audit: one write a minute per key is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# A console that re-opens the same conversation is one "viewed" row per quarter hour, not one per click.
VIEW_AUDIT_WINDOW = timedelta(minutes=15)
TICKET_NUMBER = re.compile(r"^TKT-\d{4,12}$")
_KEY_SHAPE = re.compile(rf"^{KEY_SCHEME}_(?P<prefix>[0-9a-f]{{12}})_(?P<secret>[A-Za-z0-9_-]{{16,128}})$")
# Compared against when no key has the given prefix, so both paths cost one hash and one compare.
_NO_SUCH_KEY = "0" * 64
_NAME_MAX = 100


# ----------------------------------------------------------------------------- API keys


class InvalidCredentials(Unauthorized):
    """401 with the challenge a bearer-token client expects."""

    headers = {"WWW-Authenticate": f'Bearer realm="{KEY_SCHEME}"'}


@dataclass(frozen=True)
class HumanAgent:
    """The person behind an API key; `name` signs their replies and their audit rows."""

    key_id: uuid.UUID
    name: str
    scopes: frozenset[str]


class ApiKeyInfo(BaseModel):
    id: uuid.UUID
    name: str
    key_prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key() -> tuple[str, str, str]:
    """A fresh key as (prefix, secret, full key); the full key is shown once and never stored."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return prefix, secret, f"{KEY_SCHEME}_{prefix}_{secret}"


def check_scopes(scopes: list[str] | tuple[str, ...]) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise BadRequest(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    return sorted(set(scopes))


async def create_api_key(
    session: AsyncSession, *, name: str, scopes: list[str] | tuple[str, ...] = SCOPES
) -> tuple[ApiKeyInfo, str]:
    """Store a new key for `name` (hash only) and return it with the full key, to show once."""
    name = " ".join(name.split())
    if not 1 <= len(name) <= _NAME_MAX:
        raise BadRequest(f"the name must be 1 to {_NAME_MAX} characters")
    granted = check_scopes(scopes)
    if await session.scalar(text("SELECT 1 FROM api_keys WHERE name = :n AND revoked_at IS NULL"), {"n": name}):
        raise Conflict(f"{name!r} already has an active API key; revoke it first")
    prefix, secret, key = new_api_key()
    row = (
        await session.execute(
            text(
                "INSERT INTO api_keys (name, key_prefix, key_hash, scopes) VALUES (:n, :p, :h, :s) "
                "RETURNING id, name, key_prefix, scopes, created_at, revoked_at, last_used_at"
            ),
            {"n": name, "p": prefix, "h": hash_secret(secret), "s": granted},
        )
    ).one()
    info = ApiKeyInfo(**row._mapping)
    await record_human_action(
        session, agent_name=name, api_key_id=info.id, action="api_key.created", detail={"scopes": granted}
    )
    log.info("agents.key_created", agent=name, key_prefix=prefix, scopes=granted)
    return info, key


async def list_api_keys(session: AsyncSession) -> list[ApiKeyInfo]:
    """Every key, active ones first, with when it was last used."""
    rows = await session.execute(
        text(
            "SELECT id, name, key_prefix, scopes, created_at, revoked_at, last_used_at FROM api_keys "
            "ORDER BY revoked_at IS NOT NULL, name, created_at"
        )
    )
    return [ApiKeyInfo(**r._mapping) for r in rows]


async def revoke_api_key(session: AsyncSession, *, name: str) -> ApiKeyInfo:
    """Revoke the active key of `name`; it stops working on the next request."""
    row = (
        await session.execute(
            text(
                "UPDATE api_keys SET revoked_at = now() WHERE name = :n AND revoked_at IS NULL "
                "RETURNING id, name, key_prefix, scopes, created_at, revoked_at, last_used_at"
            ),
            {"n": " ".join(name.split())},
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"no active API key named {name!r}")
    info = ApiKeyInfo(**row._mapping)
    await record_human_action(session, agent_name=info.name, api_key_id=info.id, action="api_key.revoked")
    log.info("agents.key_revoked", agent=info.name, key_prefix=info.key_prefix)
    return info


async def authenticate(session: AsyncSession, key: str) -> HumanAgent:
    """The agent a full key belongs to; InvalidCredentials for a malformed, unknown or revoked key."""
    shape = _KEY_SHAPE.match(key.strip())
    prefix, secret = (shape["prefix"], shape["secret"]) if shape else ("", key)
    row = None
    if shape:
        row = (
            await session.execute(
                text("SELECT id, name, key_hash, scopes, revoked_at, last_used_at FROM api_keys WHERE key_prefix = :p"),
                {"p": prefix},
            )
        ).one_or_none()
    matches = hmac.compare_digest(hash_secret(secret), row.key_hash if row is not None else _NO_SUCH_KEY)
    if row is None or not matches:
        raise InvalidCredentials("invalid API key")
    if row.revoked_at is not None:
        raise InvalidCredentials("this API key was revoked")
    await session.execute(
        text(
            "UPDATE api_keys SET last_used_at = now() WHERE id = :id "
            "AND (last_used_at IS NULL OR last_used_at < now() - CAST(:gap AS interval))"
        ),
        {"id": row.id, "gap": LAST_USED_RESOLUTION},
    )
    return HumanAgent(key_id=row.id, name=row.name, scopes=frozenset(row.scopes))


async def record_human_action(
    session: AsyncSession,
    *,
    agent_name: str,
    action: str,
    api_key_id: uuid.UUID | None = None,
    ticket_number: str | None = None,
    conversation_id: uuid.UUID | str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one row to the audit trail: who, when (the row's time), what."""
    await session.execute(
        text(
            "INSERT INTO human_actions (api_key_id, agent_name, action, ticket_number, conversation_id, detail) "
            "VALUES (:k, :a, :act, :t, :c, CAST(:d AS jsonb))"
        ),
        {
            "k": api_key_id,
            "a": agent_name,
            "act": action,
            "t": ticket_number,
            "c": conversation_id,
            "d": json.dumps(detail or {}, default=str),
        },
    )


# ----------------------------------------------------------------------------- FastAPI dependencies


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidCredentials("the Authorization header must be 'Bearer <API key>'")
    return token.strip()


async def _agent_from_request(request: Request, resources: ResourcesDep) -> HumanAgent | None:
    token = _bearer(request)
    if token is None:
        return None
    async with transaction(resources.sessions) as session:
        return await authenticate(session, token)


async def current_agent(request: Request, resources: ResourcesDep) -> HumanAgent:
    """Any valid, unrevoked key (401 otherwise, with a WWW-Authenticate challenge)."""
    agent = await _agent_from_request(request, resources)
    if agent is None:
        raise InvalidCredentials("an API key is required: send 'Authorization: Bearer <API key>'")
    return agent


def require_scope(scope: str) -> Any:
    """A dependency that admits a valid key holding `scope` (403 when the key lacks it)."""

    async def dependency(agent: Annotated[HumanAgent, Depends(current_agent)]) -> HumanAgent:
        if scope not in agent.scopes:
            raise Forbidden(f"this API key lacks the {scope} scope", detail={"required_scope": scope})
        return agent

    return dependency


async def optional_agent(request: Request, resources: ResourcesDep) -> HumanAgent | None:
    """For endpoints customers also use: None without a key; a key must be valid and may read escalations."""
    agent = await _agent_from_request(request, resources)
    if agent is not None and SCOPE_READ not in agent.scopes:
        raise Forbidden(f"this API key lacks the {SCOPE_READ} scope", detail={"required_scope": SCOPE_READ})
    return agent


AnyAgent = Annotated[HumanAgent, Depends(current_agent)]
ReadingAgent = Annotated[HumanAgent, Depends(require_scope(SCOPE_READ))]
WritingAgent = Annotated[HumanAgent, Depends(require_scope(SCOPE_WRITE))]
OptionalAgent = Annotated[HumanAgent | None, Depends(optional_agent)]


# ----------------------------------------------------------------------------- the queue


class QueueCustomer(BaseModel):
    id: uuid.UUID
    name: str | None
    email: str | None
    phone: str | None


class QueueItem(BaseModel):
    ticket_id: str | None
    escalation_id: uuid.UUID
    conversation_id: uuid.UUID
    workflow_id: str
    reason: str
    priority: str
    sla_due_at: datetime
    overdue: bool
    notified_count: int
    channel: str
    subject: str | None
    customer: QueueCustomer
    created_at: datetime
    last_customer_message: str | None = Field(description="The latest customer message, shortened")
    last_customer_message_at: datetime | None


class EscalationQueue(BaseModel):
    escalations: list[QueueItem]
    count: int


def preview(content: str | None, limit: int = 160) -> str | None:
    if content is None:
        return None
    flat = " ".join(content.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


async def open_escalations(session: AsyncSession, *, limit: int = 100) -> list[QueueItem]:
    """Open escalations, oldest first, with what an agent needs to pick one."""
    rows = await session.execute(
        text(
            "SELECT e.id AS escalation_id, e.reason, e.priority, e.sla_due_at, e.sla_due_at < now() AS overdue, "
            "e.notified_count, e.created_at, t.ticket_number, coalesce(t.subject, c.subject) AS subject, "
            "c.id AS conversation_id, c.channel, c.workflow_id, cu.id AS customer_id, cu.name, cu.email, cu.phone, "
            "lm.content AS last_content, lm.created_at AS last_at "
            "FROM escalations e JOIN conversations c ON c.id = e.conversation_id "
            "JOIN customers cu ON cu.id = c.customer_id "
            "LEFT JOIN tickets t ON t.conversation_id = c.id "
            "LEFT JOIN LATERAL (SELECT content, created_at FROM messages m WHERE m.conversation_id = c.id "
            "  AND m.direction = 'inbound' ORDER BY m.created_at DESC LIMIT 1) lm ON true "
            "WHERE e.status = 'open' ORDER BY e.created_at, e.id LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [
        QueueItem(
            ticket_id=r.ticket_number,
            escalation_id=r.escalation_id,
            conversation_id=r.conversation_id,
            workflow_id=r.workflow_id,
            reason=r.reason,
            priority=r.priority,
            sla_due_at=r.sla_due_at,
            overdue=r.overdue,
            notified_count=r.notified_count,
            channel=r.channel,
            subject=r.subject,
            customer=QueueCustomer(id=r.customer_id, name=r.name, email=r.email, phone=r.phone),
            created_at=r.created_at,
            last_customer_message=preview(r.last_content),
            last_customer_message_at=r.last_at,
        )
        for r in rows
    ]


# ----------------------------------------------------------------------------- cross-channel history


class HistoryMessage(BaseModel):
    id: uuid.UUID
    direction: Literal["inbound", "outbound"]
    role: str
    channel: str
    content: str
    delivery_status: str
    created_at: datetime


class HistoryTicket(BaseModel):
    ticket_id: str
    status: str
    category: str
    priority: str
    subject: str | None
    created_at: datetime
    resolved_at: datetime | None


class HistoryEscalation(BaseModel):
    id: uuid.UUID
    reason: str
    priority: str
    status: str
    sla_due_at: datetime
    created_at: datetime
    resolved_by: str | None
    resolution_action: str | None
    resolved_at: datetime | None


class KnowledgeArticle(BaseModel):
    """An article the AI retrieved while answering (search_knowledge_base results)."""

    article_id: str
    title: str
    query: str | None
    turn: int
    score: float | None


class HistoryConversation(BaseModel):
    id: uuid.UUID
    channel: str
    status: str
    subject: str | None
    started_at: datetime
    ended_at: datetime | None
    workflow_id: str
    sentiment_score: float | None
    ticket: HistoryTicket | None
    escalations: list[HistoryEscalation]
    messages: list[HistoryMessage]
    kb_articles: list[KnowledgeArticle]


class CustomerIdentity(BaseModel):
    type: str
    value: str
    channel: str | None


class HistoryCustomer(BaseModel):
    id: uuid.UUID
    name: str | None
    email: str | None
    phone: str | None
    company: str | None
    plan: str | None
    identifiers: list[CustomerIdentity]


class HumanActionView(BaseModel):
    agent_name: str
    action: str
    ticket_number: str | None
    conversation_id: uuid.UUID | None
    detail: dict[str, Any]
    created_at: datetime


class ConversationHistory(BaseModel):
    conversation_id: uuid.UUID
    customer: HistoryCustomer
    conversations: list[HistoryConversation] = Field(description="All the customer's conversations, oldest first")
    human_actions: list[HumanActionView] = Field(description="What people did on these conversations, latest last")


MAX_HISTORY_CONVERSATIONS = 50
_TICKET_FIELDS = ("status", "category", "priority", "subject", "created_at", "resolved_at")
MAX_MESSAGES_PER_CONVERSATION = 500


def _uuid_or_404(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no {what} {value!r}") from None


async def conversation_history(session: AsyncSession, *, conversation_id: str) -> ConversationHistory:
    """Everything about the customer of one conversation, on every channel, with the KB articles used."""
    conv_id = _uuid_or_404(conversation_id, "conversation")
    customer_id = await session.scalar(text("SELECT customer_id FROM conversations WHERE id = :c"), {"c": conv_id})
    if customer_id is None:
        raise NotFound(f"no conversation {conversation_id}")
    customer = (
        await session.execute(
            text("SELECT id, name, email, phone, company, plan FROM customers WHERE id = :c"), {"c": customer_id}
        )
    ).one()
    identifiers = await session.execute(
        text(
            "SELECT identifier_type AS type, identifier_value AS value, channel FROM customer_identifiers "
            "WHERE customer_id = :c ORDER BY created_at"
        ),
        {"c": customer_id},
    )
    # The requested conversation always, then the most recent others.
    conversations = (
        await session.execute(
            text(
                "SELECT * FROM (SELECT id, channel, status, subject, started_at, ended_at, workflow_id, "
                "sentiment_score FROM conversations WHERE customer_id = :cu "
                "ORDER BY id = :c DESC, started_at DESC LIMIT :n) s ORDER BY started_at, id"
            ),
            {"cu": customer_id, "c": conv_id, "n": MAX_HISTORY_CONVERSATIONS},
        )
    ).all()
    ids = [c.id for c in conversations]
    tickets = {
        r.conversation_id: HistoryTicket(ticket_id=r.ticket_number, **{k: getattr(r, k) for k in _TICKET_FIELDS})
        for r in await session.execute(
            text(
                "SELECT conversation_id, ticket_number, status, category, priority, subject, created_at, resolved_at "
                "FROM tickets WHERE conversation_id = ANY(:ids)"
            ),
            {"ids": ids},
        )
    }
    escalations: dict[uuid.UUID, list[HistoryEscalation]] = {i: [] for i in ids}
    for r in await session.execute(
        text(
            "SELECT conversation_id, id, reason, priority, status, sla_due_at, created_at, resolved_by, "
            "resolution_action, resolved_at FROM escalations WHERE conversation_id = ANY(:ids) ORDER BY created_at"
        ),
        {"ids": ids},
    ):
        escalations[r.conversation_id].append(
            HistoryEscalation(**{k: v for k, v in r._mapping.items() if k != "conversation_id"})
        )
    messages: dict[uuid.UUID, list[HistoryMessage]] = {i: [] for i in ids}
    for r in await session.execute(
        text(
            "SELECT * FROM (SELECT conversation_id, id, direction, role, channel, content, delivery_status, "
            "created_at, row_number() OVER (PARTITION BY conversation_id ORDER BY created_at DESC, id DESC) AS rn "
            "FROM messages WHERE conversation_id = ANY(:ids)) m WHERE rn <= :n ORDER BY created_at, id"
        ),
        {"ids": ids, "n": MAX_MESSAGES_PER_CONVERSATION},
    ):
        messages[r.conversation_id].append(
            HistoryMessage(**{k: v for k, v in r._mapping.items() if k not in ("conversation_id", "rn")})
        )
    articles = await knowledge_articles(session, conversation_ids=ids)
    actions = await session.execute(
        text(
            "SELECT agent_name, action, ticket_number, conversation_id, detail, created_at FROM human_actions "
            "WHERE conversation_id = ANY(:ids) AND action <> 'conversation.viewed' ORDER BY created_at, id"
        ),
        {"ids": ids},
    )
    return ConversationHistory(
        conversation_id=conv_id,
        customer=HistoryCustomer(
            **customer._mapping, identifiers=[CustomerIdentity(**i._mapping) for i in identifiers]
        ),
        conversations=[
            HistoryConversation(
                **c._mapping,
                ticket=tickets.get(c.id),
                escalations=escalations[c.id],
                messages=messages[c.id],
                kb_articles=articles.get(c.id, []),
            )
            for c in conversations
        ],
        human_actions=[HumanActionView(**a._mapping) for a in actions],
    )


async def knowledge_articles(
    session: AsyncSession, *, conversation_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[KnowledgeArticle]]:
    """Per conversation, each article the AI's knowledge-base searches returned (first sighting kept)."""
    rows = await session.execute(
        text(
            "SELECT s.conversation_id, s.turn, s.payload->'result'->>'query' AS query, h->>'article_id' AS article_id, "
            "h->>'title' AS title, h->>'score' AS score FROM agent_steps s "
            "CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(s.payload->'result'->'hits') = 'array' "
            "  THEN s.payload->'result'->'hits' ELSE '[]'::jsonb END) AS h "
            "WHERE s.conversation_id = ANY(:ids) AND s.role = 'tool' "
            "AND s.payload->>'name' = 'search_knowledge_base' ORDER BY s.created_at, s.turn, s.step"
        ),
        {"ids": conversation_ids},
    )
    found: dict[uuid.UUID, dict[str, KnowledgeArticle]] = {}
    for r in rows:
        if not r.article_id:
            continue
        seen = found.setdefault(r.conversation_id, {})
        if r.article_id not in seen:
            seen[r.article_id] = KnowledgeArticle(
                article_id=r.article_id,
                title=r.title or r.article_id,
                query=r.query,
                turn=r.turn,
                score=_float(r.score),
            )
    return {conv: list(by_id.values()) for conv, by_id in found.items()}


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def record_view(session: AsyncSession, *, agent: HumanAgent, conversation_id: uuid.UUID) -> None:
    """Audit that `agent` opened a customer's history (once per agent and conversation per window)."""
    await session.execute(
        text(
            "INSERT INTO human_actions (api_key_id, agent_name, action, conversation_id, ticket_number) "
            "SELECT CAST(:k AS uuid), CAST(:a AS text), 'conversation.viewed', CAST(:c AS uuid), "
            "(SELECT ticket_number FROM tickets WHERE conversation_id = CAST(:c AS uuid)) "
            "WHERE NOT EXISTS (SELECT 1 FROM human_actions WHERE api_key_id = CAST(:k AS uuid) "
            "AND conversation_id = CAST(:c AS uuid) AND action = 'conversation.viewed' "
            "AND created_at > now() - CAST(:window AS interval))"
        ),
        {"k": agent.key_id, "a": agent.name, "c": conversation_id, "window": VIEW_AUDIT_WINDOW},
    )


# ----------------------------------------------------------------------------- resolving


class ResolveRequest(BaseModel):
    reply: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_CHARS)]
    action: Literal["resume_ai", "close"]


class ResolveResult(BaseModel):
    ticket_id: str
    action: Literal["resume_ai", "close"]
    resolved_by: str
    reply_sent: bool = Field(description="False when the workflow accepted the resolution but is still sending")
    conversation_status: str | None
    reply_message_ids: list[str]


def normalise_ticket_number(value: str) -> str:
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
    action: Literal["resume_ai", "close"],
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
        row = (
            await session.execute(
                text(
                    "SELECT t.ticket_number, c.id AS conversation_id, c.workflow_id, e.id AS escalation_id "
                    "FROM tickets t JOIN conversations c ON c.id = t.conversation_id "
                    "LEFT JOIN escalations e ON e.conversation_id = c.id AND e.status = 'open' "
                    "WHERE t.ticket_number = :n"
                ),
                {"n": number},
            )
        ).one_or_none()
    if row is None:
        raise NotFound(f"no ticket {number}")
    conversation_id: uuid.UUID = row.conversation_id

    async def audit(outcome: str, **extra: Any) -> None:
        async with transaction(sessions) as session:
            await record_human_action(
                session,
                agent_name=agent_name,
                api_key_id=api_key_id,
                action="escalation.resolve",
                ticket_number=number,
                conversation_id=conversation_id,
                detail={"action": action, "reply": reply, "via": via, "outcome": outcome, **extra},
            )

    if row.escalation_id is None:
        await audit("refused", reason="no open escalation")
        raise Conflict(f"{number} has no open escalation (already resolved, or never escalated)")
    handle = temporal.get_workflow_handle(row.workflow_id)

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
    log.info("agents.escalation_resolved", ticket=number, agent=agent_name, action=action, via=via)
    return ResolveResult(
        ticket_id=number,
        action=action,
        resolved_by=agent_name,
        reply_sent=outcome is not None,
        conversation_status=outcome.status if outcome else None,
        reply_message_ids=outcome.reply_message_ids if outcome else [],
    )


# ----------------------------------------------------------------------------- HTTP API

router = APIRouter(tags=["human agents"])
_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No, malformed, unknown or revoked API key"},
    403: {"description": "The key lacks the required scope"},
}


class AgentView(BaseModel):
    name: str
    scopes: list[str]


@router.get("/api/v1/agents/me", response_model=AgentView, responses=_AUTH_RESPONSES)
async def who_am_i(agent: AnyAgent) -> AgentView:
    """The person the API key belongs to (the console shows it and signs replies with it)."""
    return AgentView(name=agent.name, scopes=sorted(agent.scopes))


@router.get("/api/v1/escalations", response_model=EscalationQueue, responses=_AUTH_RESPONSES)
async def escalation_queue(
    agent: ReadingAgent,
    resources: ResourcesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> EscalationQueue:
    """Open escalations, oldest first: reason, priority, SLA due time, channel, customer, last message."""
    async with resources.sessions() as session:
        items = await open_escalations(session, limit=limit)
    return EscalationQueue(escalations=items, count=len(items))


@router.get(
    "/api/v1/conversations/{conversation_id}",
    response_model=ConversationHistory,
    responses={**_AUTH_RESPONSES, 404: {"description": "No such conversation"}},
)
async def conversation_view(
    agent: ReadingAgent,
    resources: ResourcesDep,
    conversation_id: Annotated[str, Path(max_length=64)],
) -> ConversationHistory:
    """The customer's full history on every channel: messages, tickets, escalations, KB articles used."""
    async with transaction(resources.sessions) as session:
        history = await conversation_history(session, conversation_id=conversation_id)
        await record_view(session, agent=agent, conversation_id=history.conversation_id)
    return history


@router.post(
    "/api/v1/escalations/{ticket_id}/resolve",
    response_model=ResolveResult,
    responses={
        **_AUTH_RESPONSES,
        202: {"model": ResolveResult, "description": "Accepted by the workflow; the reply is still being sent"},
        404: {"description": "No such ticket"},
        409: {"description": "Nothing waits for a human on this ticket (already resolved?)"},
    },
)
async def resolve(
    body: ResolveRequest,
    agent: WritingAgent,
    resources: ResourcesDep,
    response: Response,
    ticket_id: Annotated[str, Path(max_length=32, description="e.g. TKT-0001")],
) -> ResolveResult:
    """Send the human's reply and hand the conversation back to the AI (`resume_ai`) or close it."""
    try:
        temporal = await resources.temporal.get()
    except Exception as exc:
        raise ServiceUnavailable("Temporal is not reachable; retry") from exc
    result = await resolve_escalation(
        sessions=resources.sessions,
        temporal=temporal,
        ticket_number=ticket_id,
        reply=body.reply,
        action=body.action,
        agent_name=agent.name,
        api_key_id=agent.key_id,
        via="api",
    )
    if not result.reply_sent:
        response.status_code = 202
    return result
