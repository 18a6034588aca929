"""Internal notes and saved replies: what the human team writes for itself.

Notes are stored apart from messages (`crm.repositories.notes`), so no path that sends, shows the
customer, or builds the model's transcript can reach them. Saved replies carry placeholders that
`render_saved_reply` fills for one conversation. Every note and every change to a saved reply is
written to the `human_actions` audit trail, in the same transaction as the change.
"""

from __future__ import annotations

import re
import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import BadRequest, Conflict, NotFound
from core.logging import get_logger
from crm.repositories import api_keys, conversations, customers, notes, saved_replies, tickets
from gateway.agents.auth import HumanAgent
from gateway.agents.service import normalise_ticket_number
from gateway.agents.workspace_schemas import (
    PLACEHOLDER,
    PLACEHOLDERS,
    NoteList,
    NoteView,
    RenderedReply,
    SavedReplyList,
    SavedReplyView,
)

log = get_logger(__name__)


def _uuid_or_404(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no {what} {value!r}") from None


async def _existing_conversation(session: AsyncSession, conversation_id: str) -> uuid.UUID:
    conv_id = _uuid_or_404(conversation_id, "conversation")
    if await conversations.customer_of(session, conversation_id=conv_id) is None:
        raise NotFound(f"no conversation {conversation_id}")
    return conv_id


# ----------------------------------------------------------------------------- notes


async def add_note(
    session: AsyncSession,
    *,
    author: str,
    api_key_id: uuid.UUID | None,
    conversation_id: str,
    body: str,
    via: str = "api",
) -> NoteView:
    """Store `author`'s internal note on the conversation and audit it (NotFound for no such conversation).
    `api_key_id` is None from the CLI (an operator on the machine, named by --agent)."""
    conv_id = await _existing_conversation(session, conversation_id)
    note = await notes.add_note(session, conversation_id=conv_id, author=author, body=body, api_key_id=api_key_id)
    ticket = await tickets.find_for_conversation(session, conversation_id=str(conv_id))
    # The audit names the note; its text stays in the notes table (an erasure then has one place to clean).
    await api_keys.record_human_action(
        session,
        agent_name=author,
        api_key_id=api_key_id,
        action="note.added",
        ticket_number=ticket.ticket_number if ticket else None,
        conversation_id=conv_id,
        detail={"note_id": str(note.id), "chars": len(body), "via": via},
    )
    log.info("agents.note_added", conversation_id=str(conv_id), agent=author, note_id=str(note.id), via=via)
    return NoteView.model_validate(note, from_attributes=True)


async def list_notes(session: AsyncSession, *, conversation_id: str) -> NoteList:
    """The conversation's internal notes, oldest first (NotFound for no such conversation)."""
    conv_id = await _existing_conversation(session, conversation_id)
    found = await notes.notes_of(session, conversation_ids=[conv_id])
    return NoteList(conversation_id=conv_id, notes=[NoteView.model_validate(n, from_attributes=True) for n in found])


# ----------------------------------------------------------------------------- saved replies


def _view(record: saved_replies.SavedReplyRecord) -> SavedReplyView:
    return SavedReplyView.model_validate(record, from_attributes=True)


async def list_saved(session: AsyncSession) -> SavedReplyList:
    """Every saved reply, by title, and the placeholders a body may use."""
    found = await saved_replies.list_saved_replies(session)
    return SavedReplyList(saved_replies=[_view(r) for r in found], placeholders=list(PLACEHOLDERS))


async def get_saved(session: AsyncSession, *, saved_reply_id: str) -> SavedReplyView:
    """One saved reply (NotFound for no such id)."""
    record = await saved_replies.get_saved_reply(session, saved_reply_id=_uuid_or_404(saved_reply_id, "saved reply"))
    if record is None:
        raise NotFound(f"no saved reply {saved_reply_id}")
    return _view(record)


async def _audit(session: AsyncSession, agent: HumanAgent, action: str, record: saved_replies.SavedReplyRecord) -> None:
    await api_keys.record_human_action(
        session,
        agent_name=agent.name,
        api_key_id=agent.key_id,
        action=action,
        detail={"saved_reply_id": str(record.id), "title": record.title, "body": record.body},
    )


def _title_conflict(title: str) -> Conflict:
    return Conflict(f"a saved reply titled {title!r} already exists", detail={"title": title})


async def create_saved(session: AsyncSession, *, agent: HumanAgent, title: str, body: str) -> SavedReplyView:
    """Store a saved reply (Conflict when the title is taken, whatever its case) and audit it."""
    record = await saved_replies.insert_saved_reply(session, title=title, body=body, author=agent.name)
    if record is None:
        raise _title_conflict(title)
    await _audit(session, agent, "saved_reply.created", record)
    log.info("agents.saved_reply_created", saved_reply_id=str(record.id), agent=agent.name)
    return _view(record)


async def update_saved(
    session: AsyncSession, *, agent: HumanAgent, saved_reply_id: str, title: str | None, body: str | None
) -> SavedReplyView:
    """Change a saved reply's title and/or body (NotFound, or Conflict for a taken title) and audit it."""
    reply_id = _uuid_or_404(saved_reply_id, "saved reply")
    if title is not None and await saved_replies.title_taken(session, title=title, except_id=reply_id):
        raise _title_conflict(title)
    try:
        record = await saved_replies.update_saved_reply(
            session, saved_reply_id=reply_id, title=title, body=body, author=agent.name
        )
    except IntegrityError:  # the same title saved by someone else a moment ago
        raise _title_conflict(title or "") from None
    if record is None:
        raise NotFound(f"no saved reply {saved_reply_id}")
    await _audit(session, agent, "saved_reply.updated", record)
    log.info("agents.saved_reply_updated", saved_reply_id=str(record.id), agent=agent.name)
    return _view(record)


async def delete_saved(session: AsyncSession, *, agent: HumanAgent, saved_reply_id: str) -> None:
    """Delete a saved reply (NotFound for no such id) and audit what it was."""
    record = await saved_replies.delete_saved_reply(session, saved_reply_id=_uuid_or_404(saved_reply_id, "saved reply"))
    if record is None:
        raise NotFound(f"no saved reply {saved_reply_id}")
    await _audit(session, agent, "saved_reply.deleted", record)
    log.info("agents.saved_reply_deleted", saved_reply_id=str(record.id), agent=agent.name)


def fill_placeholders(body: str, values: dict[str, str | None]) -> tuple[str, list[str]]:
    """`body` with each known placeholder replaced by its value; those without one stay and are listed."""
    unfilled: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name, whole = match.group(1), match.group(0)
        if name not in values:
            return whole
        value = values[name]
        if not value:
            if name not in unfilled:
                unfilled.append(name)
            return whole
        return value

    return PLACEHOLDER.sub(replace, body), unfilled


async def render_saved(
    session: AsyncSession,
    *,
    agent: HumanAgent,
    saved_reply_id: str,
    conversation_id: uuid.UUID | None,
    ticket_id: str | None,
) -> RenderedReply:
    """The saved reply's text for one conversation: {first_name}, {ticket} and {agent_name} filled."""
    reply = await get_saved(session, saved_reply_id=saved_reply_id)
    if ticket_id is not None:
        target = await tickets.resolution_target(session, ticket_number=normalise_ticket_number(ticket_id))
        if target is None:
            raise NotFound(f"no ticket {ticket_id.strip().upper()}")
        conv_id = target.conversation_id
    elif conversation_id is not None:
        conv_id = await _existing_conversation(session, str(conversation_id))
    else:
        raise BadRequest("give either conversation_id or ticket_id")
    customer_id = await conversations.customer_of(session, conversation_id=conv_id)
    profile = await customers.profile(session, customer_id=customer_id) if customer_id else None
    ticket = await tickets.find_for_conversation(session, conversation_id=str(conv_id))
    name = (profile.name or "").split() if profile else []
    text, unfilled = fill_placeholders(
        reply.body,
        {
            "first_name": name[0] if name else None,
            "ticket": ticket.ticket_number if ticket else None,
            "agent_name": agent.name,
        },
    )
    return RenderedReply(id=reply.id, title=reply.title, text=text, unfilled=unfilled)
