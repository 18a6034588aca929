"""Ownership of a conversation in the human-agent API, and the console's live stream.

`POST /api/v1/conversations/{id}/claim | release | assign | take-over | replies | hand-back | close`
need `escalations:write`; each is the conversation workflow's `change_ownership` update (see
`ownership_service`). `GET /api/v1/conversations/{id}/events` (`escalations:read`) is a
server-sent-events stream of the conversation's new messages and ownership changes, so a person who
owns a conversation sees the customer's messages as they arrive.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.errors import NotFound, ServiceUnavailable
from core.logging import get_logger
from core.vocabulary import OwnershipAction
from crm.repositories import conversations, messages
from gateway.agents.auth import HumanAgent, ReadingAgent, WritingAgent
from gateway.agents.ownership_schemas import AssignRequest, HandBackRequest, HumanReplyRequest, OwnershipResult
from gateway.agents.ownership_service import Actor, change_ownership
from gateway.deps import ResourcesDep
from workflows.contracts import OwnershipChange

log = get_logger(__name__)
router = APIRouter(tags=["human agents"])

# How often the live stream looks for new messages, how often it proves it is alive, and how long
# one stream lasts before the browser reconnects (with Last-Event-ID, so nothing is missed).
POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
STREAM_SECONDS = 600.0

ConversationId = Annotated[str, Path(max_length=64)]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {
        "model": OwnershipResult,
        "description": "Accepted; still being carried out (a reply sending)",
    },
    401: {"description": "No, malformed, unknown or revoked API key"},
    403: {"description": "The key lacks the required scope"},
    404: {"description": "No such conversation (or, to assign, no such colleague)"},
    409: {"description": "Refused now: held by someone else (named), closed, or the AI holds it (take it over)"},
    503: {"description": "Temporal is not reachable, or no worker took the action in time"},
}


async def _act(
    resources: ResourcesDep,
    response: Response,
    agent: HumanAgent,
    conversation_id: str,
    action: OwnershipAction,
    **fields: Any,
) -> OwnershipResult:
    try:
        temporal = await resources.temporal.get()
    except Exception as exc:
        raise ServiceUnavailable("Temporal is not reachable; retry") from exc
    result = await change_ownership(
        sessions=resources.sessions,
        temporal=temporal,
        conversation_id=conversation_id,
        change=OwnershipChange(action=action, agent=agent.name, **fields),
        actor=Actor(name=agent.name, api_key_id=agent.key_id),
    )
    if not result.done:
        response.status_code = 202
    return result


@router.post("/api/v1/conversations/{conversation_id}/claim", response_model=OwnershipResult, responses=_RESPONSES)
async def claim(
    agent: WritingAgent, resources: ResourcesDep, response: Response, conversation_id: ConversationId
) -> OwnershipResult:
    """Take a conversation that waits for a person: it is yours until you release, pass or end it."""
    return await _act(resources, response, agent, conversation_id, "claim")


@router.post("/api/v1/conversations/{conversation_id}/release", response_model=OwnershipResult, responses=_RESPONSES)
async def release(
    agent: WritingAgent, resources: ResourcesDep, response: Response, conversation_id: ConversationId
) -> OwnershipResult:
    """Put a conversation you hold back in the queue for anyone to claim."""
    return await _act(resources, response, agent, conversation_id, "release")


@router.post("/api/v1/conversations/{conversation_id}/assign", response_model=OwnershipResult, responses=_RESPONSES)
async def assign(
    body: AssignRequest,
    agent: WritingAgent,
    resources: ResourcesDep,
    response: Response,
    conversation_id: ConversationId,
) -> OwnershipResult:
    """Give a waiting or held conversation to a named colleague (audited: who gave it to whom)."""
    return await _act(resources, response, agent, conversation_id, "assign", to=body.to)


@router.post("/api/v1/conversations/{conversation_id}/take-over", response_model=OwnershipResult, responses=_RESPONSES)
async def take_over(
    agent: WritingAgent, resources: ResourcesDep, response: Response, conversation_id: ConversationId
) -> OwnershipResult:
    """Take a conversation from the AI (it stops answering; a reply it is writing is not sent), or
    claim a waiting one."""
    return await _act(resources, response, agent, conversation_id, "take_over")


@router.post("/api/v1/conversations/{conversation_id}/replies", response_model=OwnershipResult, responses=_RESPONSES)
async def reply(
    body: HumanReplyRequest,
    agent: WritingAgent,
    resources: ResourcesDep,
    response: Response,
    conversation_id: ConversationId,
) -> OwnershipResult:
    """Send the customer a reply, as often as needed while you own the conversation (replying to a
    waiting one claims it). The first reply meets the SLA."""
    return await _act(resources, response, agent, conversation_id, "reply", reply=body.reply)


@router.post("/api/v1/conversations/{conversation_id}/hand-back", response_model=OwnershipResult, responses=_RESPONSES)
async def hand_back(
    agent: WritingAgent,
    resources: ResourcesDep,
    response: Response,
    conversation_id: ConversationId,
    body: HandBackRequest | None = None,
) -> OwnershipResult:
    """Give the conversation back to the AI, with a note of what you did: the AI reads it before it answers again."""
    note = body.note if body is not None else None
    return await _act(resources, response, agent, conversation_id, "hand_back", note=note)


@router.post("/api/v1/conversations/{conversation_id}/close", response_model=OwnershipResult, responses=_RESPONSES)
async def close(
    agent: WritingAgent, resources: ResourcesDep, response: Response, conversation_id: ConversationId
) -> OwnershipResult:
    """Close a conversation you own (or one waiting for a person) without another reply."""
    return await _act(resources, response, agent, conversation_id, "close")


# ----------------------------------------------------------------------------- the live stream


def _event(kind: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n\n"


async def _stream(
    request: Request, sessions: async_sessionmaker[AsyncSession], conversation_id: uuid.UUID, cursor: int
) -> AsyncIterator[str]:
    """New messages (id: their arrival number) and ownership changes, until the client goes or time is up."""
    started = last_sent = time.monotonic()
    seen: tuple[object, ...] | None = None
    yield "retry: 2000\n\n"
    while time.monotonic() - started < STREAM_SECONDS and not await request.is_disconnected():
        try:
            async with sessions() as session:
                target = await conversations.ownership_target(session, conversation_id=conversation_id)
                arrived = await messages.arrived_after(session, conversation_id=conversation_id, after_seq=cursor)
        except Exception as exc:  # the database is down: end the stream, the browser reconnects
            log.warning("agents.stream_ended", conversation=str(conversation_id), error=type(exc).__name__)
            yield _event("unavailable", {"reason": "the database is not reachable; reconnecting"})
            return
        if target is None:
            return
        state = (target.status, target.assignee)
        if state != seen:
            seen = state
            yield _event("conversation", {"status": target.status, "assignee": target.assignee})
            last_sent = time.monotonic()
        for m in arrived:
            cursor = m.seq
            yield _event(
                "message",
                {
                    "id": m.id,
                    "direction": m.direction,
                    "role": m.role,
                    "channel": m.channel,
                    "content": m.content,
                    "delivery_status": m.delivery_status,
                    "created_at": m.created_at,
                },
                event_id=m.seq,
            )
            last_sent = time.monotonic()
        if time.monotonic() - last_sent >= KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(POLL_SECONDS)


@router.get(
    "/api/v1/conversations/{conversation_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-sent events: `message`, `conversation`"},
        401: {"description": "No, malformed, unknown or revoked API key"},
        403: {"description": "The key lacks the required scope"},
        404: {"description": "No such conversation"},
    },
)
async def conversation_events(
    request: Request,
    agent: ReadingAgent,
    resources: ResourcesDep,
    conversation_id: ConversationId,
    after: Annotated[
        int | None, Query(ge=0, description="Send messages that arrived after this event id (default: only new ones)")
    ] = None,
    last_event_id: Annotated[int | None, Header(ge=0, description="Set by a reconnecting EventSource")] = None,
) -> StreamingResponse:
    """The conversation's new messages and ownership changes as they happen (server-sent events)."""
    try:
        conv_id = uuid.UUID(conversation_id)
    except ValueError:
        raise NotFound(f"no conversation {conversation_id!r}") from None
    async with resources.sessions() as session:
        if await conversations.ownership_target(session, conversation_id=conv_id) is None:
            raise NotFound(f"no conversation {conversation_id}")
        cursor = last_event_id if last_event_id is not None else after
        if cursor is None:
            cursor = await conversations.max_message_seq(session, conversation_id=conv_id)
    return StreamingResponse(
        _stream(request, resources.sessions, conv_id, cursor),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
