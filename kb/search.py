"""Hybrid knowledge-base search: pgvector (HNSW, cosine) + PostgreSQL full text, fused by RRF.

One SQL statement returns each retriever's top candidates with their ranks; reciprocal rank
fusion (``weight / (k + rank)``, summed over the retrievers that found an item) needs no
calibration between a cosine distance and a ``ts_rank``. Fusion happens at the level the
caller gets results at: with ``per_article`` set (the default, one chunk per article) each
retriever's ranking is first reduced to a ranking of articles (by their best chunk), the article
rankings are fused, and each article is represented by its best chunks; otherwise chunks are
fused directly. Either way the top results cover several articles instead of five pieces of one.

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
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.logging import get_logger
from crm.db import transaction
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

_TSQUERY_WEB = "websearch_to_tsquery('english', :query)"
# Same parse (stemming, stop words, phrases for hyphenated words), then every AND becomes an OR.
_TSQUERY_ANY = f"replace({_TSQUERY_WEB}::text, ' & ', ' | ')::tsquery"

_FILTER = "(CAST(:category AS text) IS NULL OR kb.category = CAST(:category AS text))"

_VECTOR_CTE = f"""
vector_hits AS (
    SELECT id, row_number() OVER (ORDER BY distance, article_id, chunk_index) AS rank
    FROM (
        SELECT kb.id, kb.article_id, kb.chunk_index,
               kb.embedding <=> CAST(CAST(:embedding AS text) AS vector) AS distance
        FROM knowledge_base AS kb
        WHERE kb.embedding IS NOT NULL AND {_FILTER}
        ORDER BY kb.embedding <=> CAST(CAST(:embedding AS text) AS vector)
        LIMIT :candidates
    ) AS nearest
)"""

_TEXT_CTE = f"""
text_hits AS (
    SELECT id, row_number() OVER (ORDER BY score DESC, article_id, chunk_index) AS rank
    FROM (
        SELECT kb.id, kb.article_id, kb.chunk_index,
               ts_rank(kb.search_vector, q.tsq, CAST(:normalization AS integer)) AS score
        FROM knowledge_base AS kb, (SELECT {{tsquery}} AS tsq) AS q
        WHERE kb.search_vector @@ q.tsq AND {_FILTER}
        ORDER BY score DESC, kb.article_id, kb.chunk_index
        LIMIT :candidates
    ) AS matched
)"""

_EMPTY_VECTOR_CTE = "vector_hits AS (SELECT NULL::uuid AS id, NULL::bigint AS rank WHERE false)"
_EMPTY_TEXT_CTE = "text_hits AS (SELECT NULL::uuid AS id, NULL::bigint AS rank WHERE false)"

_CANDIDATES = """
SELECT kb.id, kb.article_id, kb.title, kb.category, kb.content,
       v.rank AS vector_rank, t.rank AS text_rank
FROM vector_hits AS v
FULL OUTER JOIN text_hits AS t ON t.id = v.id
JOIN knowledge_base AS kb ON kb.id = coalesce(v.id, t.id)
"""


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


def _vector_literal(vector: list[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


def _statement(mode: SearchMode, query: str) -> str:
    tsquery = _TSQUERY_WEB if uses_search_syntax(query) else _TSQUERY_ANY
    vector_cte = _VECTOR_CTE if mode in ("hybrid", "vector") else _EMPTY_VECTOR_CTE
    text_cte = _TEXT_CTE.format(tsquery=tsquery) if mode in ("hybrid", "text") else _EMPTY_TEXT_CTE
    return f"WITH {vector_cte},\n{text_cte}\n{_CANDIDATES}"


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
    params: dict[str, object] = {
        "query": query,
        "category": category,
        "candidates": candidates,
        "normalization": TEXT_RANK_NORMALIZATION,
        "embedding": None,
    }
    if mode != "text":
        [vector] = await embedder.embed([query])
        params["embedding"] = _vector_literal(vector)
    settings = {
        # The query vector and tsquery arrive as parameters; a cached generic plan would re-parse
        # them for every row it scans, a custom plan folds them into constants once.
        "plan_cache_mode": "force_custom_plan",
        # ef_search bounds the candidate list an HNSW scan keeps; it must cover `candidates`.
        "hnsw.ef_search": str(max(ef_search, candidates)),
        # With a category filter, keep scanning the graph until enough rows pass the filter.
        "hnsw.iterative_scan": "relaxed_order",
    }
    if exact:
        # Exact nearest neighbours for recall measurements: no HNSW, a sequential scan and sort.
        settings["enable_indexscan"] = "off"
    async with transaction(sessions) as session:
        # One round trip; is_local=true scopes every setting to this transaction (like SET LOCAL).
        calls = ", ".join(f"set_config(:name_{i}, :value_{i}, true)" for i in range(len(settings)))
        values: dict[str, str] = {}
        for i, (name, value) in enumerate(settings.items()):
            values[f"name_{i}"], values[f"value_{i}"] = name, value
        await session.execute(text(f"SELECT {calls}"), values)
        rows = (await session.execute(text(_statement(mode, query)), params)).mappings().all()
    candidates_found = [
        SearchHit(
            chunk_id=row["id"],
            article_id=row["article_id"],
            title=row["title"],
            category=row["category"],
            content=row["content"],
            score=0.0,
            vector_rank=row["vector_rank"],
            text_rank=row["text_rank"],
        )
        for row in rows
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
