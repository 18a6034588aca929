"""The human-agent HTTP API: who am I, the escalation queue, a customer's history, resolving."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from core.errors import BadRequest, ServiceUnavailable
from core.vocabulary import Channel, EscalationReason, Priority
from crm.db import transaction
from crm.repositories.escalations import QueueFilters
from gateway.agents.auth import AnyAgent, ReadingAgent, WritingAgent
from gateway.agents.schemas import AgentView, ConversationHistory, EscalationQueue, ResolveRequest, ResolveResult
from gateway.agents.service import conversation_history, record_view, resolve_escalation
from gateway.agents.service import escalation_queue as queue_of
from gateway.deps import ResourcesDep

router = APIRouter(tags=["human agents"])
_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No, malformed, unknown or revoked API key"},
    403: {"description": "The key lacks the required scope"},
}


@router.get("/api/v1/agents/me", response_model=AgentView, responses=_AUTH_RESPONSES)
async def who_am_i(agent: AnyAgent) -> AgentView:
    """The person the API key belongs to (the console shows it and signs replies with it)."""
    return AgentView(name=agent.name, scopes=sorted(agent.scopes))


@router.get("/api/v1/escalations", response_model=EscalationQueue, responses=_AUTH_RESPONSES)
async def escalation_queue(
    agent: ReadingAgent,
    resources: ResourcesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    breached: Annotated[
        bool | None, Query(description="true: only those past their SLA due time; false: only those within it")
    ] = None,
    channel: Annotated[list[Channel] | None, Query(description="Repeat for several")] = None,
    reason: Annotated[list[EscalationReason] | None, Query(description="Repeat for several")] = None,
    priority: Annotated[list[Priority] | None, Query(description="Repeat for several")] = None,
    ticket: Annotated[
        str | None,
        Query(
            max_length=32,
            pattern=r"^[A-Za-z0-9-]*$",
            description="Part of a ticket number, e.g. 0042 or TKT-0042 (letters, digits and '-')",
        ),
    ] = None,
    mine: Annotated[bool, Query(description="Only the conversations you own")] = False,
    unassigned: Annotated[bool, Query(description="Only those nobody has claimed yet")] = False,
    assignee: Annotated[
        str | None, Query(min_length=1, max_length=200, description="Only those this person owns")
    ] = None,
) -> EscalationQueue:
    """Open escalations, most urgent first, then the SLA due soonest, then the oldest; counts per priority."""
    if sum((mine, unassigned, assignee is not None)) > 1:
        raise BadRequest("choose one of mine, unassigned and assignee")
    filters = QueueFilters(
        channels=channel or (),
        reasons=reason or (),
        priorities=priority or (),
        breached=breached,
        ticket=ticket or None,
        assignee=agent.name if mine else assignee,
        unassigned=unassigned,
    )
    async with resources.sessions() as session:
        return await queue_of(session, limit=limit, filters=filters)


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
        history = await conversation_history(session, conversation_id=conversation_id, settings=resources.settings)
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
