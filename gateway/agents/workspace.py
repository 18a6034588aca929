"""The team's own writing in the human-agent API: internal notes on conversations, and saved replies.

Reading (notes, saved replies, rendering one for a conversation) needs `escalations:read`; adding
a note and creating, editing or deleting a saved reply need `escalations:write`, and each is
written to the `human_actions` audit trail.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from crm.db import transaction
from gateway.agents import workspace_service as service
from gateway.agents.auth import ReadingAgent, WritingAgent
from gateway.agents.workspace_schemas import (
    NoteList,
    NoteRequest,
    NoteView,
    RenderedReply,
    RenderRequest,
    SavedReplyCreate,
    SavedReplyList,
    SavedReplyUpdate,
    SavedReplyView,
)
from gateway.deps import ResourcesDep

router = APIRouter(tags=["human agents"])

_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "No, malformed, unknown or revoked API key"},
    403: {"description": "The key lacks the required scope"},
    422: {"description": "A body that does not validate (the message says which field and why)"},
}
_NO_CONVERSATION: dict[int | str, dict[str, Any]] = {404: {"description": "No such conversation"}}
_NO_REPLY: dict[int | str, dict[str, Any]] = {404: {"description": "No such saved reply"}}
_TITLE_TAKEN: dict[int | str, dict[str, Any]] = {409: {"description": "Another saved reply has this title"}}

ConversationId = Annotated[str, Path(max_length=64)]
SavedReplyId = Annotated[str, Path(max_length=64)]


@router.get(
    "/api/v1/conversations/{conversation_id}/notes",
    response_model=NoteList,
    responses={**_AUTH, **_NO_CONVERSATION},
)
async def conversation_notes(agent: ReadingAgent, resources: ResourcesDep, conversation_id: ConversationId) -> NoteList:
    """The conversation's internal notes, oldest first."""
    async with resources.sessions() as session:
        return await service.list_notes(session, conversation_id=conversation_id)


@router.post(
    "/api/v1/conversations/{conversation_id}/notes",
    response_model=NoteView,
    status_code=201,
    responses={**_AUTH, **_NO_CONVERSATION},
)
async def add_conversation_note(
    body: NoteRequest, agent: WritingAgent, resources: ResourcesDep, conversation_id: ConversationId
) -> NoteView:
    """Add an internal note: the team sees it beside the messages; the customer and the AI never do."""
    async with transaction(resources.sessions) as session:
        return await service.add_note(
            session, author=agent.name, api_key_id=agent.key_id, conversation_id=conversation_id, body=body.body
        )


@router.get("/api/v1/saved-replies", response_model=SavedReplyList, responses=_AUTH)
async def list_saved_replies(agent: ReadingAgent, resources: ResourcesDep) -> SavedReplyList:
    """Every saved reply, by title, with the placeholders a body may use."""
    async with resources.sessions() as session:
        return await service.list_saved(session)


@router.post(
    "/api/v1/saved-replies", response_model=SavedReplyView, status_code=201, responses={**_AUTH, **_TITLE_TAKEN}
)
async def create_saved_reply(body: SavedReplyCreate, agent: WritingAgent, resources: ResourcesDep) -> SavedReplyView:
    """Save a reply; its body may use {first_name}, {ticket} and {agent_name} (any other {name} is refused)."""
    async with transaction(resources.sessions) as session:
        return await service.create_saved(session, agent=agent, title=body.title, body=body.body)


@router.get("/api/v1/saved-replies/{saved_reply_id}", response_model=SavedReplyView, responses={**_AUTH, **_NO_REPLY})
async def get_saved_reply(agent: ReadingAgent, resources: ResourcesDep, saved_reply_id: SavedReplyId) -> SavedReplyView:
    """One saved reply."""
    async with resources.sessions() as session:
        return await service.get_saved(session, saved_reply_id=saved_reply_id)


@router.patch(
    "/api/v1/saved-replies/{saved_reply_id}",
    response_model=SavedReplyView,
    responses={**_AUTH, **_NO_REPLY, **_TITLE_TAKEN},
)
async def edit_saved_reply(
    body: SavedReplyUpdate, agent: WritingAgent, resources: ResourcesDep, saved_reply_id: SavedReplyId
) -> SavedReplyView:
    """Change a saved reply's title, body, or both."""
    async with transaction(resources.sessions) as session:
        return await service.update_saved(
            session, agent=agent, saved_reply_id=saved_reply_id, title=body.title, body=body.body
        )


@router.delete(
    "/api/v1/saved-replies/{saved_reply_id}", status_code=204, response_class=Response, responses={**_AUTH, **_NO_REPLY}
)
async def delete_saved_reply(agent: WritingAgent, resources: ResourcesDep, saved_reply_id: SavedReplyId) -> Response:
    """Delete a saved reply."""
    async with transaction(resources.sessions) as session:
        await service.delete_saved(session, agent=agent, saved_reply_id=saved_reply_id)
    return Response(status_code=204)


@router.post(
    "/api/v1/saved-replies/{saved_reply_id}/render",
    response_model=RenderedReply,
    responses={**_AUTH, 404: {"description": "No such saved reply, conversation or ticket"}},
)
async def render_saved_reply(
    body: RenderRequest, agent: ReadingAgent, resources: ResourcesDep, saved_reply_id: SavedReplyId
) -> RenderedReply:
    """The saved reply's text for one conversation, placeholders filled (the console puts it in the reply box)."""
    async with resources.sessions() as session:
        return await service.render_saved(
            session,
            agent=agent,
            saved_reply_id=saved_reply_id,
            conversation_id=body.conversation_id,
            ticket_id=body.ticket_id,
        )
