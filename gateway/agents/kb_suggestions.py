"""Suggested knowledge-base entries in the human-agent API: review what people answered (issue 17).

When the AI found nothing (`no_answer`) and a person answered, the question and the answer wait
here as a suggestion (see kb/learning.py). Listing and reading need `escalations:read`; editing,
approving (the entry is embedded into the knowledge base, searchable at once) and rejecting need
`escalations:write`, and each is written to the `human_actions` audit trail in the same transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field, StringConstraints, model_validator

from core.errors import NotFound
from core.vocabulary import KbSuggestionStatus
from crm.db import transaction
from crm.repositories import kb_suggestions
from crm.repositories.kb_suggestions import SuggestionRecord
from gateway.agents.auth import ReadingAgent, WritingAgent
from gateway.agents.kb import _embedder
from gateway.deps import ResourcesDep
from kb import learning

router = APIRouter(tags=["human agents"])

_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "No, malformed, unknown or revoked API key"},
    403: {"description": "The key lacks the required scope"},
    422: {"description": "A body or query that does not validate (the message says which field and why)"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such suggestion"}}
_REVIEWED: dict[int | str, dict[str, Any]] = {409: {"description": "The suggestion was already approved or rejected"}}
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {503: {"description": "The embedding model is not available; retry"}}

SuggestionId = Annotated[str, Path(max_length=64)]
Question = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=learning.QUESTION_MAX_CHARS)
]
Answer = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=learning.ANSWER_MAX_CHARS)]


class SuggestionView(BaseModel):
    """A suggested knowledge-base entry: the customer's question and the person's answer."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    escalation_id: uuid.UUID
    question: str = Field(description="What the customer asked; an approved entry's title")
    answer: str = Field(description="What the person answered (Markdown); an approved entry's text")
    status: KbSuggestionStatus
    edited_by: str | None = Field(description="Who last edited it, if anyone")
    reviewed_by: str | None
    reviewed_at: datetime | None
    article_id: str | None = Field(description="The knowledge-base article it became (`learned-<id>`) once approved")
    created_at: datetime
    updated_at: datetime


class SuggestionList(BaseModel):
    suggestions: list[SuggestionView] = Field(description="Oldest first")


class SuggestionEdit(BaseModel):
    question: Question | None = Field(default=None, description=f"1 to {learning.QUESTION_MAX_CHARS} characters")
    answer: Answer | None = Field(default=None, description=f"1 to {learning.ANSWER_MAX_CHARS} characters")

    @model_validator(mode="after")
    def _something_to_change(self) -> SuggestionEdit:
        if self.question is None and self.answer is None:
            raise ValueError("give a new question, a new answer, or both")
        return self


def _view(record: SuggestionRecord) -> SuggestionView:
    return SuggestionView.model_validate(record, from_attributes=True)


def _id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no suggestion {value!r}") from None


@router.get("/api/v1/kb-suggestions", response_model=SuggestionList, responses=_AUTH)
async def list_kb_suggestions(
    agent: ReadingAgent,
    resources: ResourcesDep,
    status: Annotated[KbSuggestionStatus | None, Query(description="Only suggestions in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many")] = 200,
) -> SuggestionList:
    """Suggested knowledge-base entries, oldest first; gaps answered since the last look are collected first."""
    async with transaction(resources.sessions) as session:
        # A one-step resolve records its reply after the escalation's resolution: collect it now.
        await learning.collect_suggestions(session)
        records = await kb_suggestions.list_suggestions(session, status=status, limit=limit)
    return SuggestionList(suggestions=[_view(r) for r in records])


@router.get("/api/v1/kb-suggestions/{suggestion_id}", response_model=SuggestionView, responses={**_AUTH, **_NOT_FOUND})
async def get_kb_suggestion(
    agent: ReadingAgent, resources: ResourcesDep, suggestion_id: SuggestionId
) -> SuggestionView:
    """One suggestion."""
    async with resources.sessions() as session:
        record = await kb_suggestions.get_suggestion(session, suggestion_id=_id(suggestion_id))
    if record is None:
        raise NotFound(f"no suggestion {suggestion_id}")
    return _view(record)


@router.patch(
    "/api/v1/kb-suggestions/{suggestion_id}",
    response_model=SuggestionView,
    responses={**_AUTH, **_NOT_FOUND, **_REVIEWED},
)
async def edit_kb_suggestion(
    body: SuggestionEdit, agent: WritingAgent, resources: ResourcesDep, suggestion_id: SuggestionId
) -> SuggestionView:
    """Change a pending suggestion's question, answer, or both (take out anything about one customer)."""
    async with transaction(resources.sessions) as session:
        record = await learning.edit_suggestion(
            session,
            suggestion_id=_id(suggestion_id),
            question=body.question,
            answer=body.answer,
            agent_name=agent.name,
            api_key_id=agent.key_id,
        )
    return _view(record)


@router.post(
    "/api/v1/kb-suggestions/{suggestion_id}/approve",
    response_model=SuggestionView,
    responses={**_AUTH, **_NOT_FOUND, **_REVIEWED, **_UNAVAILABLE},
)
async def approve_kb_suggestion(
    agent: WritingAgent, resources: ResourcesDep, request: Request, suggestion_id: SuggestionId
) -> SuggestionView:
    """Approve: the entry is embedded into the knowledge base, and the AI and KB search find it at once."""
    embedder = _embedder(request, resources.settings)
    async with transaction(resources.sessions) as session:
        record = await learning.approve_suggestion(
            session, suggestion_id=_id(suggestion_id), embedder=embedder, agent_name=agent.name, api_key_id=agent.key_id
        )
    return _view(record)


@router.post(
    "/api/v1/kb-suggestions/{suggestion_id}/reject",
    response_model=SuggestionView,
    responses={**_AUTH, **_NOT_FOUND, **_REVIEWED},
)
async def reject_kb_suggestion(
    agent: WritingAgent, resources: ResourcesDep, suggestion_id: SuggestionId
) -> SuggestionView:
    """Reject: the suggestion never reaches the knowledge base."""
    async with transaction(resources.sessions) as session:
        record = await learning.reject_suggestion(
            session, suggestion_id=_id(suggestion_id), agent_name=agent.name, api_key_id=agent.key_id
        )
    return _view(record)
