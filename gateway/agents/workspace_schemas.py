"""The request and response models of internal notes and saved replies."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints, field_validator, model_validator

from core.vocabulary import NoteKind

NOTE_MAX_CHARS = 5000
SAVED_REPLY_TITLE_MAX_CHARS = 120
SAVED_REPLY_BODY_MAX_CHARS = 5000
# What a saved reply may say in braces, filled when it is inserted into a reply (render).
PLACEHOLDERS: tuple[str, ...] = ("first_name", "ticket", "agent_name")
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def unknown_placeholders(body: str) -> list[str]:
    """The `{names}` in `body` that are not placeholders we fill, in order of appearance."""
    return list(dict.fromkeys(name for name in PLACEHOLDER.findall(body) if name not in PLACEHOLDERS))


def _known_placeholders_only(body: str | None) -> str | None:
    if body is None:
        return None
    unknown = unknown_placeholders(body)
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
            f"known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
        )
    return body


NoteBody = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=NOTE_MAX_CHARS)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=SAVED_REPLY_TITLE_MAX_CHARS)]
ReplyBody = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=SAVED_REPLY_BODY_MAX_CHARS)
]


# ----------------------------------------------------------------------------- notes


class NoteRequest(BaseModel):
    body: NoteBody = Field(description="The note, 1 to 5,000 characters; never sent to the customer")


class NoteView(BaseModel):
    id: uuid.UUID
    conversation_id: uuid.UUID
    author: str
    body: str
    kind: NoteKind = Field(
        default="note", description="`hand_back`: written when handing back to the AI, which reads it"
    )
    created_at: datetime


class NoteList(BaseModel):
    conversation_id: uuid.UUID
    notes: list[NoteView] = Field(description="Oldest first")


# ----------------------------------------------------------------------------- saved replies


class SavedReplyCreate(BaseModel):
    title: Title = Field(description="Unique, whatever its case")
    body: ReplyBody = Field(description="May use the placeholders {first_name}, {ticket} and {agent_name}")

    _placeholders = field_validator("body")(_known_placeholders_only)


class SavedReplyUpdate(BaseModel):
    title: Title | None = None
    body: ReplyBody | None = None

    _placeholders = field_validator("body")(_known_placeholders_only)

    @model_validator(mode="after")
    def _something_to_change(self) -> SavedReplyUpdate:
        if self.title is None and self.body is None:
            raise ValueError("give a new title, a new body, or both")
        return self


class SavedReplyView(BaseModel):
    id: uuid.UUID
    title: str
    body: str
    created_by: str
    updated_by: str
    created_at: datetime
    updated_at: datetime


class SavedReplyList(BaseModel):
    saved_replies: list[SavedReplyView] = Field(description="By title")
    placeholders: list[str] = Field(description="The placeholders a body may use, without braces")


class RenderRequest(BaseModel):
    """The conversation the reply is for, by id or by its ticket number (one of the two)."""

    conversation_id: uuid.UUID | None = None
    ticket_id: Annotated[str, StringConstraints(strip_whitespace=True, max_length=32)] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> RenderRequest:
        if (self.conversation_id is None) == (self.ticket_id is None):
            raise ValueError("give either conversation_id or ticket_id")
        return self


class RenderedReply(BaseModel):
    id: uuid.UUID
    title: str
    text: str = Field(description="The body with its placeholders filled")
    unfilled: list[str] = Field(
        description="Placeholders with nothing on record to fill them (left as {name} in the text for you to edit)"
    )
