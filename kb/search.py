"""Hybrid knowledge-base search: pgvector (HNSW, cosine) + BM25 full text, fused by RRF, then reranked.

One SQL statement (``crm.repositories.knowledge_base.search_candidates``) returns each
retriever's top candidates with their ranks; this module decides what to ask for and ranks the
answer. Reciprocal rank fusion (``weight / (k + rank)``, summed over the retrievers that found an
item) needs no calibration between a cosine distance and a ``ts_rank``. Fusion happens at the
level the caller gets results at: with ``per_article`` set (the default, one chunk per article)
each retriever's ranking is first reduced to a ranking of articles (by their best chunk), the
article rankings are fused, and each article is represented by its best chunks; otherwise chunks
are fused directly. Either way the top results cover several articles instead of five pieces of one.

Full text for a plain question is BM25 (kb/lexical.py): every stemmed word counts by its rarity,
so the one word only one article contains is not drowned by common ones. A query written with
search syntax (``"quoted phrase"``, ``-word``, ``or``) keeps PostgreSQL's web-search semantics,
ranked with ``ts_rank`` (title weighs A, headings B, body D).

For a plain question the two sides are fused by their scores (``fuse_scores``: cosine similarity
scaled over the candidates, BM25 by its maximum, mixed 40/60), so one side's clear first place
counts; rank fusion (RRF) remains for web-search syntax, whose ``ts_rank`` values mean little
across queries. Both were measured on the tuning questions (figures at the constants below).

Chunks are article sections (kb/chunking.py); a hit carries its heading path and section, so the
caller can name or fetch the whole section. After fusion the top articles are reranked by a rule
measured on the tuning questions: a bonus for the query's word pairs found next to each other in
the section (a phrase match). A bonus for query words in the section's headings was measured too
and lowered recall (generic headings such as "FAQ" or "Overview" match everything), so it is not used.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from itertools import pairwise
from typing import Literal

from pydantic import BaseModel, computed_field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.logging import get_logger
from crm.db import transaction
from crm.repositories import knowledge_base
from kb.embeddings import Embedder
from kb.lexical import CACHE, TOKENIZE, LexicalDocument, LexicalIndex

log = get_logger(__name__)

SearchMode = Literal["hybrid", "vector", "text"]

# A small k lets one retriever's first place count (a word only one article has, a paraphrase only
# the vector side understands); k=60 favoured chunks both found at mediocre ranks. Measured on
# bench/data/retrieval/tuning.jsonl: recall@5 0.914 at k=60, 0.923 at k=3..5.
RRF_K = 5
CANDIDATES = 40
# HNSW candidate list per scan (pgvector's default is 40). bench/kb_search.py on 20k near-duplicate
# section chunks: recall@5 against exact kNN 0.873 at 100, 0.932 at 200, 0.977 at 400; 400 is the
# smallest measured value above the 0.95 target.
EF_SEARCH = 400
VECTOR_WEIGHT = 1.0
TEXT_WEIGHT = 1.0
# ts_rank normalisation 0 (none): chunks are of similar length by construction.
TEXT_RANK_NORMALIZATION = 0

_UNRANKED = 1 << 30

_SEARCH_SYNTAX = re.compile(r"\"|(?:^|\s)-\w|\bor\b", re.IGNORECASE)


# Share of the cosine side in score fusion (the rest is BM25). Tuning set, WordLlama, with the
# phrase bonus: recall@5 0.923/0.923/0.923/0.906 and recall@1 0.704/0.691/0.670/0.635 for
# 0.3/0.4/0.5/0.6; rank fusion (RRF, k=5) gave 0.923 and 0.652. Re-checked with the multilingual USE
# (the default since session 6, `--tune vector_share=...`): recall@5 0.948/0.953/0.948/0.957/0.948 and
# MRR 0.834/0.840/0.830/0.817/0.785 for 0.3..0.7; 0.4 kept (best MRR, within a question of the best recall).
VECTOR_SHARE = 0.4
# Rerank bonus at full phrase overlap, added to the fused score (0..1). On the tuning set at
# VECTOR_SHARE 0.4 it lifts recall@5 0.914 -> 0.923 and recall@1 0.682 -> 0.691 (0.05 and 0.1 equal).
PHRASE_BONUS = 0.05
# How many fused articles the reranker reorders.
RERANK_DEPTH = 10


class SearchHit(BaseModel):
    """One knowledge-base chunk (an article section) found for a query; ranks are 1-based, None when not retrieved."""

    chunk_id: uuid.UUID
    article_id: str
    title: str
    category: str
    content: str
    score: float
    vector_rank: int | None = None
    text_rank: int | None = None
    # The raw evidence behind the ranks: cosine similarity to the query, BM25 score.
    vector_similarity: float | None = None
    text_score: float | None = None
    chunk_index: int = 0
    # The chunk's own heading (None for an article's introduction) and the headings above it,
    # outermost first, without the article title.
    section: str | None = None
    heading_path: tuple[str, ...] = ()

    # Computed fields, so JSON dumps (the CLI's --json, tool results) carry them too; mypy does not
    # model a decorator over a property.
    @classmethod
    def of(cls, chunk: knowledge_base.ChunkCandidate, *, score: float, text_score: float | None = None) -> SearchHit:
        """A stored chunk as a hit with this score (and the ranks and evidence the chunk carries)."""
        return cls(
            chunk_id=chunk.chunk_id,
            article_id=chunk.article_id,
            title=chunk.title,
            category=chunk.category,
            content=chunk.content,
            score=score,
            vector_rank=chunk.vector_rank,
            text_rank=chunk.text_rank,
            chunk_index=chunk.chunk_index,
            section=chunk.section,
            heading_path=chunk.heading_path,
            vector_similarity=1.0 - chunk.vector_distance if chunk.vector_distance is not None else None,
            text_score=text_score,
        )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def slug(self) -> str:
        """The article's URL slug (its id; the help centre serves it at /help/<slug>)."""
        return self.article_id

    @computed_field  # type: ignore[prop-decorator]
    @property
    def path_text(self) -> str:
        """`Article title > Section > Subsection`, for citing the hit."""
        return " > ".join((self.title, *self.heading_path))


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


def _normalised(values: dict[str, float], *, floor: float | None) -> dict[str, float]:
    """Scale to 0..1: by the maximum (floor None: BM25, 0 means no match) or min-max from `floor`."""
    if not values:
        return {}
    top = max(values.values())
    if floor is None:
        return {k: v / top if top > 0 else 0.0 for k, v in values.items()}
    span = top - floor
    return {k: (v - floor) / span if span > 0 else 1.0 for k, v in values.items()}


def fuse_scores(
    candidates: list[SearchHit], *, limit: int, per_article: int | None = 1, vector_share: float = VECTOR_SHARE
) -> list[SearchHit]:
    """Order candidates by a convex combination of normalised cosine similarity and BM25 score.

    Each side is scaled over the candidates (cosine min-max, BM25 by its maximum); an item one
    side did not return gets that side's zero. With `per_article` the sides are first reduced to
    articles (the best chunk's value) and each article keeps its best-scoring chunks.
    """

    def combined(keyed: dict[str, list[SearchHit]]) -> dict[str, float]:
        similarity = {k: max(h.vector_similarity for h in hs if h.vector_similarity is not None)
                      for k, hs in keyed.items() if any(h.vector_similarity is not None for h in hs)}  # fmt: skip
        bm25 = {k: max(h.text_score for h in hs if h.text_score is not None)
                for k, hs in keyed.items() if any(h.text_score is not None for h in hs)}  # fmt: skip
        sim_n = _normalised(similarity, floor=floor)
        bm_n = _normalised(bm25, floor=None)
        return {k: vector_share * sim_n.get(k, 0.0) + (1 - vector_share) * bm_n.get(k, 0.0) for k in keyed}

    # The cosine scale starts at the least similar candidate chunk (the vector side's 40th), for
    # chunks and articles alike: the articles' own minimum would stretch a narrow spread.
    floor = min((h.vector_similarity for h in candidates if h.vector_similarity is not None), default=None)
    by_chunk = combined({str(h.chunk_id): [h] for h in candidates})
    ordered = sorted(candidates, key=lambda h: (-by_chunk[str(h.chunk_id)], h.article_id, h.chunk_index))
    if per_article is None:
        return [h.model_copy(update={"score": by_chunk[str(h.chunk_id)]}) for h in ordered[:limit]]
    chunks_of: dict[str, list[SearchHit]] = {}
    for hit in ordered:
        chunks_of.setdefault(hit.article_id, []).append(hit)
    by_article = combined(chunks_of)
    hits: list[SearchHit] = []
    for article_id in sorted(chunks_of, key=lambda a: (-by_article[a], a)):
        for hit in chunks_of[article_id][:per_article]:
            hits.append(hit.model_copy(update={"score": by_article[article_id]}))
            if len(hits) == limit:
                return hits
    return hits


async def lexical_index(session: AsyncSession) -> LexicalIndex:
    """The process's BM25 index, rebuilt (in a thread) when the table changed since it was built."""
    version = await knowledge_base.corpus_version(session)
    index = CACHE.current(version)
    if index is None:
        rows = await knowledge_base.lexical_documents(session)
        documents = [
            LexicalDocument(
                chunk_id=r.chunk_id,
                category=r.category,
                title=r.title,
                heading_path=r.heading_path,
                content=r.content,
                article_id=r.article_id,
            )
            for r in rows
        ]
        index = await asyncio.to_thread(CACHE.build, documents, version=version)
        log.info("kb.lexical_index_ready", chunks=len(index), version=version)
    return index


async def stored_articles(session: AsyncSession) -> frozenset[str]:
    """The ids of the articles the knowledge base holds: the lexical index's, current to the table's
    corpus version (one small query when the index is current)."""
    return (await lexical_index(session)).article_ids


def _pairs(tokens: list[str]) -> set[tuple[str, str]]:
    return set(pairwise(tokens))


def rerank(
    hits: list[SearchHit],
    query: str,
    *,
    phrase_bonus: float = PHRASE_BONUS,
    depth: int = RERANK_DEPTH,
) -> list[SearchHit]:
    """Reorder the first `depth` hits by fused score plus the phrase bonus (share of query word pairs in the hit)."""
    query_pairs = _pairs(TOKENIZE(query))
    if not query_pairs or phrase_bonus == 0:
        return hits
    rescored: list[tuple[float, int, SearchHit]] = []
    for position, hit in enumerate(hits[:depth]):
        bonus = phrase_bonus * len(query_pairs & _pairs(TOKENIZE(hit.content))) / len(query_pairs)
        rescored.append((hit.score + bonus, position, hit))
    rescored.sort(key=lambda item: (-item[0], item[1]))
    return [h.model_copy(update={"score": score}) for score, _, h in rescored] + hits[depth:]


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
    phrase_bonus: float = PHRASE_BONUS,
    vector_share: float = VECTOR_SHARE,
) -> list[SearchHit]:
    """The `limit` best sections for `query` (hybrid by default), at most `per_article` per article.

    `score` is the fused score of the hit's article (of the chunk itself when `per_article` is
    None; 0..1 for plain questions, RRF for web-search syntax) plus the phrase bonus;
    `vector_rank`/`text_rank` are the chunk's own ranks among each method's candidates.
    """
    query = query.strip()
    if not query or limit < 1:
        return []
    candidates = max(candidates, limit)
    embedding = None
    if mode != "text":
        [embedding] = await embedder.embed([query])
    full_text = mode in ("hybrid", "text")
    web_syntax = uses_search_syntax(query)
    async with transaction(sessions) as session:
        lexical_ids: list[uuid.UUID] | None = None
        bm25: dict[uuid.UUID, float] = {}
        if full_text and not web_syntax:
            index = await lexical_index(session)
            bm25 = dict(index.search(query, limit=candidates, category=category))
            lexical_ids = list(bm25)
        found = await knowledge_base.search_candidates(
            session,
            query=query,
            embedding=embedding,
            full_text=full_text,
            web_syntax=web_syntax,
            category=category,
            candidates=candidates,
            ef_search=ef_search,
            exact=exact,
            text_rank_normalization=TEXT_RANK_NORMALIZATION,
            lexical_ids=lexical_ids,
        )
    candidates_found = [SearchHit.of(c, score=0.0, text_score=bm25.get(c.chunk_id)) for c in found]
    if lexical_ids is not None or mode == "vector":
        # Scores on both sides: fuse the scores themselves (a clear first place on one side counts).
        fused = fuse_scores(
            candidates_found, limit=max(limit, RERANK_DEPTH), per_article=per_article, vector_share=vector_share
        )
    else:
        # Web-search syntax: ts_rank values are not comparable across queries; fuse ranks.
        fused = fuse(
            candidates_found,
            limit=max(limit, RERANK_DEPTH),
            per_article=per_article,
            vector_weight=vector_weight,
            text_weight=text_weight,
        )
    result = rerank(fused, query, phrase_bonus=phrase_bonus)[:limit]
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
