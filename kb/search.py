"""Hybrid knowledge-base search: pgvector (HNSW, cosine) + PostgreSQL full text, fused by RRF.

One SQL statement (``crm.repositories.knowledge_base.search_candidates``) returns each
retriever's top candidates with their ranks; this module decides what to ask for and ranks the
answer. Reciprocal rank fusion (``weight / (k + rank)``, summed over the retrievers that found an
item) needs no calibration between a cosine distance and a ``ts_rank``. Fusion happens at the
level the caller gets results at: with ``per_article`` set (the default, one chunk per article)
each retriever's ranking is first reduced to a ranking of articles (by their best chunk), the
article rankings are fused, and each article is represented by its best chunks; otherwise chunks
are fused directly. Either way the top results cover several articles instead of five pieces of one.

Full-text matching turns a plain question into an OR of its stemmed words (``websearch_to_tsquery``
alone ANDs them, and a customer's sentence almost never has every word in one chunk); a query
written with search syntax (``"quoted phrase"``, ``-word``, ``or``) keeps web-search semantics.
Matches are ranked with ``ts_rank`` (title words weigh more, label A): on the labelled questions it
beats ``ts_rank_cd``, whose cover density means little for an OR of words, and costs half as much.
"""

from __future__ import annotations

import re
import uuid
from typing import Literal

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.logging import get_logger
from crm.db import transaction
from crm.repositories import knowledge_base
from kb.embeddings import Embedder

log = get_logger(__name__)

SearchMode = Literal["hybrid", "vector", "text"]

RRF_K = 60
CANDIDATES = 40
# HNSW candidate list per scan (pgvector's default is 40). bench/kb_search.py on 20k near-duplicate
# chunks: recall@5 against exact kNN ~0.83-0.87 at 100, ~0.89-0.92 at 200, for well under a millisecond.
EF_SEARCH = 200
VECTOR_WEIGHT = 1.0
TEXT_WEIGHT = 1.0
# ts_rank normalisation 0 (none): chunks are of similar length by construction.
TEXT_RANK_NORMALIZATION = 0

_UNRANKED = 1 << 30

_SEARCH_SYNTAX = re.compile(r"\"|(?:^|\s)-\w|\bor\b", re.IGNORECASE)


class SearchHit(BaseModel):
    """One knowledge-base chunk found for a query; ranks are 1-based, None when not retrieved."""

    chunk_id: uuid.UUID
    article_id: str
    title: str
    category: str
    content: str
    score: float
    vector_rank: int | None = None
    text_rank: int | None = None


def uses_search_syntax(query: str) -> bool:
    """True when the query is written with web-search operators rather than as a plain question."""
    return _SEARCH_SYNTAX.search(query) is not None


def rrf_score(vector_rank: int | None, text_rank: int | None, *, vector_weight: float, text_weight: float) -> float:
    """Reciprocal rank fusion of two 1-based ranks (None: not retrieved by that method)."""
    score = 0.0
    if vector_rank is not None:
        score += vector_weight / (RRF_K + vector_rank)
    if text_rank is not None:
        score += text_weight / (RRF_K + text_rank)
    return score


def _tie_break(vector_rank: int | None, text_rank: int | None) -> tuple[int, int]:
    # Equal fused scores: the item one method ranked higher first, then the vector rank.
    v = vector_rank if vector_rank is not None else _UNRANKED
    t = text_rank if text_rank is not None else _UNRANKED
    return min(v, t), v


def _article_ranks(hits: list[SearchHit], attribute: str) -> dict[str, int]:
    """One method's ranking of articles, each article placed where its best chunk was."""
    ranked = sorted((h for h in hits if getattr(h, attribute) is not None), key=lambda h: getattr(h, attribute))
    ranks: dict[str, int] = {}
    for hit in ranked:
        ranks.setdefault(hit.article_id, len(ranks) + 1)
    return ranks


def fuse(
    candidates: list[SearchHit],
    *,
    limit: int,
    per_article: int | None = 1,
    vector_weight: float = VECTOR_WEIGHT,
    text_weight: float = TEXT_WEIGHT,
) -> list[SearchHit]:
    """Order candidates by RRF: per article (at most `per_article` chunks each), or per chunk if None."""
    weights = {"vector_weight": vector_weight, "text_weight": text_weight}
    scored = [
        (rrf_score(h.vector_rank, h.text_rank, **weights), _tie_break(h.vector_rank, h.text_rank), h)
        for h in candidates
    ]
    scored.sort(key=lambda item: (-item[0], item[1], item[2].article_id, str(item[2].chunk_id)))
    if per_article is None:
        return [h.model_copy(update={"score": score}) for score, _, h in scored[:limit]]

    vector_ranks = _article_ranks(candidates, "vector_rank")
    text_ranks = _article_ranks(candidates, "text_rank")
    chunks_of: dict[str, list[SearchHit]] = {}
    for _, _, hit in scored:
        chunks_of.setdefault(hit.article_id, []).append(hit)
    article_order = [
        (
            rrf_score(vector_ranks.get(a), text_ranks.get(a), **weights),
            _tie_break(vector_ranks.get(a), text_ranks.get(a)),
            a,
        )
        for a in chunks_of
    ]
    article_order.sort(key=lambda item: (-item[0], item[1], item[2]))
    hits: list[SearchHit] = []
    for score, _, article_id in article_order:
        for hit in chunks_of[article_id][:per_article]:
            hits.append(hit.model_copy(update={"score": score}))
            if len(hits) == limit:
                return hits
    return hits


async def search(
    query: str,
    *,
    sessions: async_sessionmaker[AsyncSession],
    embedder: Embedder,
    limit: int = 5,
    category: str | None = None,
    mode: SearchMode = "hybrid",
    per_article: int | None = 1,
    candidates: int = CANDIDATES,
    exact: bool = False,
    ef_search: int = EF_SEARCH,
    vector_weight: float = VECTOR_WEIGHT,
    text_weight: float = TEXT_WEIGHT,
) -> list[SearchHit]:
    """The `limit` best chunks for `query` (hybrid by default), at most `per_article` per article.

    `score` is the fused RRF score of the hit's article (of the chunk itself when `per_article`
    is None); `vector_rank`/`text_rank` are the chunk's own ranks among each method's candidates.
    """
    query = query.strip()
    if not query or limit < 1:
        return []
    candidates = max(candidates, limit)
    embedding = None
    if mode != "text":
        [embedding] = await embedder.embed([query])
    async with transaction(sessions) as session:
        found = await knowledge_base.search_candidates(
            session,
            query=query,
            embedding=embedding,
            full_text=mode in ("hybrid", "text"),
            web_syntax=uses_search_syntax(query),
            category=category,
            candidates=candidates,
            ef_search=ef_search,
            exact=exact,
            text_rank_normalization=TEXT_RANK_NORMALIZATION,
        )
    candidates_found = [
        SearchHit(
            chunk_id=c.chunk_id,
            article_id=c.article_id,
            title=c.title,
            category=c.category,
            content=c.content,
            score=0.0,
            vector_rank=c.vector_rank,
            text_rank=c.text_rank,
        )
        for c in found
    ]
    result = fuse(
        candidates_found,
        limit=limit,
        per_article=per_article,
        vector_weight=vector_weight,
        text_weight=text_weight,
    )
    log.debug("kb.searched", mode=mode, exact=exact, candidates=len(candidates_found), hits=len(result))
    return result


async def exact_search(
    query: str,
    *,
    sessions: async_sessionmaker[AsyncSession],
    embedder: Embedder,
    limit: int = 5,
    category: str | None = None,
    mode: SearchMode = "hybrid",
    per_article: int | None = 1,
) -> list[SearchHit]:
    """:func:`search` with exact nearest neighbours (sequential scan): the reference for HNSW recall."""
    return await search(
        query,
        sessions=sessions,
        embedder=embedder,
        limit=limit,
        category=category,
        mode=mode,
        per_article=per_article,
        exact=True,
    )
