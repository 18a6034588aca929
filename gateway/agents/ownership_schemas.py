"""Request and response bodies of the ownership endpoints (claim, release, assign, take over, reply,
hand back, close) and the live stream's events."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from core.vocabulary import ConversationStatus, DeliveryStatus, Ownership, OwnershipAction
from workflows.contracts import MAX_NOTE_CHARS, MAX_TEXT_CHARS

ReplyText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_CHARS)]
NoteText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NOTE_CHARS)]
AgentName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class AssignRequest(BaseModel):
    to: AgentName = Field(description="The colleague's name (the name on their API key)")


class HumanReplyRequest(BaseModel):
    reply: ReplyText = Field(description="What the customer reads; sent on the conversation's channel")


class HandBackRequest(BaseModel):
    note: NoteText | None = Field(
        default=None, description="What you did, for the AI (it reads it before answering again) and the team"
    )


class OwnershipResult(BaseModel):
    conversation_id: uuid.UUID
    ticket_id: str | None
    action: OwnershipAction
    done: bool = Field(description="False when the workflow accepted the action but is still carrying it out")
    status: ConversationStatus | None
    ownership: Ownership | None = Field(description="ai, waiting (for a person), human (assignee) or closed")
    assignee: str | None
    reply_message_ids: list[str] = Field(default_factory=list)
    delivery_status: DeliveryStatus | None = Field(
        default=None, description="For a reply: what happened to it, over all its parts (see the resolve endpoint)"
    )
