"""The offline responder answers from the passage the hybrid search ranks first, or hands off."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.agent import compose_grounded_answer
from core.settings import Settings
from kb.embeddings import create_embedder
from kb.search import search


@pytest.mark.parametrize(
    ("question", "article_title_word"),
    [
        ("How do I archive a project?", "Project"),
        ("How do I connect Slack to a channel?", "Slack"),
        ("how to turn on two-factor authentication", "Two-Factor"),
    ],
)
async def test_answers_come_from_the_best_ranked_relevant_article(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    kb_ingested: None,
    question: str,
    article_title_word: str,
) -> None:
    hits = await search(question, sessions=sessions, embedder=create_embedder(settings), limit=5)
    answer = compose_grounded_answer(question, [h.model_dump() for h in hits])
    assert answer is not None
    # The search's ranking decides; the responder does not re-rank.
    assert answer.startswith(f"Here is what our documentation says ({hits[0].title}):"), answer[:200]
    assert article_title_word.lower() in hits[0].title.lower()


async def test_nothing_grounded_means_no_answer(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], kb_ingested: None
) -> None:
    question = "What is the airspeed velocity of an unladen swallow?"
    hits = await search(question, sessions=sessions, embedder=create_embedder(settings), limit=5)
    assert compose_grounded_answer(question, [h.model_dump() for h in hits]) is None
