"""`GET /api/v1/vocabulary`: the project's words and what people read for them, for the pages' JavaScript.

The support form builds its category and priority choices from it, and every page labels
channels, categories, priorities, statuses and escalation reasons with it, so the UI shows exactly
the words `core/vocabulary.py` defines (the same ones the API validates and the database checks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from fastapi import APIRouter
from pydantic import BaseModel, Field

from core.vocabulary import (
    CHANNEL_LABELS,
    CHANNELS,
    DELIVERY_STATUS_LABELS,
    DELIVERY_STATUSES,
    ESCALATION_REASON_LABELS,
    ESCALATION_REASONS,
    PRIORITIES,
    PRIORITY_LABELS,
    TICKET_CATEGORIES,
    TICKET_CATEGORY_LABELS,
    TICKET_STATUS_LABELS,
    TICKET_STATUSES,
    WEB_FORM_DEFAULT_PRIORITY,
    WEB_FORM_PRIORITIES,
    WebFormPriority,
)

router = APIRouter(tags=["vocabulary"])
Word = TypeVar("Word", bound=str)


class Term(BaseModel):
    value: str = Field(description="The word the API and the database use")
    label: str = Field(description="What a person reads for it")


class WebFormChoices(BaseModel):
    priorities: list[WebFormPriority] = Field(description="The priorities a customer may choose (labels above)")
    default_priority: WebFormPriority


class Vocabulary(BaseModel):
    """Each list in the order a page offers it."""

    channels: list[Term]
    ticket_categories: list[Term]
    priorities: list[Term]
    ticket_statuses: list[Term] = Field(description="A ticket's status as its customer reads it")
    escalation_reasons: list[Term]
    delivery_statuses: list[Term] = Field(description="What happened to a message (the agent console shows it)")
    web_form: WebFormChoices = Field(description="The web support form offers every ticket category, and these")


def _terms(labels: Mapping[Word, str], order: tuple[Word, ...]) -> list[Term]:
    return [Term(value=word, label=labels[word]) for word in order]


# Built once: the vocabulary changes only with a release.
VOCABULARY = Vocabulary(
    channels=_terms(CHANNEL_LABELS, CHANNELS),
    ticket_categories=_terms(TICKET_CATEGORY_LABELS, TICKET_CATEGORIES),
    priorities=_terms(PRIORITY_LABELS, PRIORITIES),
    ticket_statuses=_terms(TICKET_STATUS_LABELS, TICKET_STATUSES),
    escalation_reasons=_terms(ESCALATION_REASON_LABELS, ESCALATION_REASONS),
    delivery_statuses=_terms(DELIVERY_STATUS_LABELS, DELIVERY_STATUSES),
    web_form=WebFormChoices(priorities=list(WEB_FORM_PRIORITIES), default_priority=WEB_FORM_DEFAULT_PRIORITY),
)


@router.get("/api/v1/vocabulary", response_model=Vocabulary)
async def vocabulary() -> Vocabulary:
    """Channels, ticket categories, priorities, ticket statuses and escalation reasons, each with its label."""
    return VOCABULARY
