"""Knowledge-base search for people: what the AI's `search_knowledge_base` tool finds, for the team.

A person answering an escalation (in the console, a script, or their own assistant through
`crm-fte mcp`) looks up the same help-centre sections the AI would cite: the same hybrid search
(`kb.search`), each hit read as its whole section (`kb.sections`), with the help-centre link a
reply cites. A search reads only the public product articles, so it is not written to the
`human_actions` audit trail (opening a customer's history is).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from core.errors import ServiceUnavailable
from core.logging import get_logger
from core.markdown import heading_anchor
from core.settings import Settings
from gateway.agents.auth import ReadingAgent
from gateway.deps import ResourcesDep
from kb.embeddings import Embedder, EmbeddingConfigError, create_embedder
from kb.search import search
from kb.sections import section_texts

log = get_logger(__name__)
router = APIRouter(tags=["human agents"])

# As many characters as the AI's tool reads of a query; a longer one is a paste, not a question.
MAX_QUERY_CHARS = 500
MAX_RESULTS = 20

_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No, malformed, unknown or revoked API key"},
    403: {"description": "The key lacks the required scope"},
    422: {"description": "An empty or too long query, or a limit out of range (the message says which)"},
    503: {"description": "The database or the embedding model is not available; retry"},
}


class KbHit(BaseModel):
    """One help-centre section that matches the query."""

    article_id: str
    title: str
    section: str | None = Field(description="The section's headings, outermost first ('A > B'); None: the intro")
    url: str = Field(description="The help-centre page at the section's heading: what a reply cites")
    content: str = Field(description="The whole section, Markdown")
    score: float


class KbSearchResult(BaseModel):
    query: str
    hits: list[KbHit]


def _help_url(settings: Settings) -> str:
    """Where customers reach the help centre: the links must be the ones the AI's replies cite."""
    return settings.customer_base_url


def _embedder(request: Request, settings: Settings) -> Embedder:
    """The app's embedder, made on the first search (most gateways never serve one; the model loads lazily)."""
    embedder: Embedder | None = getattr(request.app.state, "kb_embedder", None)
    if embedder is None:
        try:
            embedder = create_embedder(settings)
        except EmbeddingConfigError as exc:
            raise ServiceUnavailable(f"knowledge-base search is not configured: {exc}") from exc
        request.app.state.kb_embedder = embedder
    return embedder


@router.get("/api/v1/kb/search", response_model=KbSearchResult, responses=_RESPONSES)
async def kb_search(
    agent: ReadingAgent,
    resources: ResourcesDep,
    request: Request,
    q: Annotated[
        str,
        Query(min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"\S", description="What to look up, in words"),
    ],
    limit: Annotated[int, Query(ge=1, le=MAX_RESULTS, description="At most this many sections")] = 5,
) -> KbSearchResult:
    """The help-centre sections that best answer `q`, as the AI's knowledge-base tool finds them (one per article)."""
    query = q.strip()
    hits = await search(
        query, sessions=resources.sessions, embedder=_embedder(request, resources.settings), limit=limit
    )
    async with resources.sessions() as session:
        sections = await section_texts(session, hits)
    base = _help_url(resources.settings)
    return KbSearchResult(
        query=query,
        hits=[
            KbHit(
                article_id=hit.article_id,
                title=hit.title,
                section=" > ".join(hit.heading_path) or None,
                url=f"{base}/help/{hit.slug}" + (f"#{heading_anchor(hit.section)}" if hit.section else ""),
                content=content,
                score=round(hit.score, 4),
            )
            for hit, content in zip(hits, sections, strict=True)
        ],
    )
