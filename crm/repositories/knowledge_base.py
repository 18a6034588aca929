"""Knowledge base: product-article chunks with their embeddings and full-text vectors.

`search_candidates` is one statement returning each retriever's top chunks with their ranks
(pgvector HNSW by cosine distance; full text either ranked by BM25 in the process, whose chunk ids
arrive as a parameter, or by PostgreSQL `ts_rank` for web-search syntax); `kb.search` fuses them.
`corpus_version` and `lexical_documents` feed the in-process BM25 index (kb/lexical.py).
The ingest functions read and write chunks keyed by (article_id, chunk_index).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, Text, any_, bindparam, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from crm.models import KnowledgeBaseChunk

_kb = cast(Table, KnowledgeBaseChunk.__table__)

# ----------------------------------------------------------------------------- search

_TSQUERY_WEB = "websearch_to_tsquery('english', :query)"
# Same parse (stemming, stop words, phrases for hyphenated words), then every AND becomes an OR.
_TSQUERY_ANY = f"replace({_TSQUERY_WEB}::text, ' & ', ' | ')::tsquery"

_FILTER = "(CAST(:category AS text) IS NULL OR kb.category = CAST(:category AS text))"

_VECTOR_CTE = f"""
vector_hits AS (
    SELECT id, distance, row_number() OVER (ORDER BY distance, article_id, chunk_index) AS rank
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

# Chunks the in-process BM25 index ranked, passed as two parallel arrays (ids and 1-based ranks).
_LEXICAL_CTE = f"""
text_hits AS (
    SELECT l.id, l.rank
    FROM unnest(CAST(:lexical_ids AS uuid[]), CAST(:lexical_ranks AS bigint[])) AS l(id, rank)
    JOIN knowledge_base AS kb ON kb.id = l.id
    WHERE {_FILTER}
)"""

_EMPTY_VECTOR_CTE = (
    "vector_hits AS (SELECT NULL::uuid AS id, NULL::float8 AS distance, NULL::bigint AS rank WHERE false)"
)
_EMPTY_TEXT_CTE = "text_hits AS (SELECT NULL::uuid AS id, NULL::bigint AS rank WHERE false)"

_CANDIDATES = """
SELECT kb.id, kb.article_id, kb.chunk_index, kb.title, kb.category, kb.content, kb.section, kb.heading_path,
       v.rank AS vector_rank, t.rank AS text_rank, v.distance AS vector_distance
FROM vector_hits AS v
FULL OUTER JOIN text_hits AS t ON t.id = v.id
JOIN knowledge_base AS kb ON kb.id = coalesce(v.id, t.id)
"""


@dataclass(frozen=True)
class ChunkCandidate:
    """A chunk one or both retrievers found; ranks are 1-based, None when not retrieved by that method."""

    chunk_id: uuid.UUID
    article_id: str
    title: str
    category: str
    content: str
    vector_rank: int | None
    text_rank: int | None
    chunk_index: int = 0
    section: str | None = None
    heading_path: tuple[str, ...] = ()
    vector_distance: float | None = None


def _vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


def _statement(*, vector: bool, full_text: bool, web_syntax: bool, lexical: bool = False) -> str:
    tsquery = _TSQUERY_WEB if web_syntax else _TSQUERY_ANY
    vector_cte = _VECTOR_CTE if vector else _EMPTY_VECTOR_CTE
    if lexical:
        text_cte = _LEXICAL_CTE
    else:
        text_cte = _TEXT_CTE.format(tsquery=tsquery) if full_text else _EMPTY_TEXT_CTE
    return f"WITH {vector_cte},\n{text_cte}\n{_CANDIDATES}"


async def search_candidates(
    session: AsyncSession,
    *,
    query: str,
    embedding: Sequence[float] | None,
    full_text: bool,
    web_syntax: bool,
    category: str | None,
    candidates: int,
    ef_search: int,
    exact: bool = False,
    text_rank_normalization: int = 0,
    lexical_ids: Sequence[uuid.UUID] | None = None,
) -> list[ChunkCandidate]:
    """Each retriever's top `candidates` chunks for the query, with their ranks, in one round trip.

    The vector retriever runs when `embedding` is given, full text when `full_text` is set:
    `web_syntax` keeps `websearch_to_tsquery`'s semantics (phrases, `-word`, `or`), otherwise the
    query's words are ORed. With `lexical_ids` (best first, already ranked by BM25 in the process)
    those chunks are the full-text side instead, and `full_text`/`web_syntax` are not used.
    `exact` turns HNSW off (a sequential scan: exact nearest neighbours).
    Sets transaction-local planner options: call it inside a transaction.
    """
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
    # One round trip; is_local=true scopes every setting to this transaction (like SET LOCAL).
    calls = ", ".join(f"set_config(:name_{i}, :value_{i}, true)" for i in range(len(settings)))
    values: dict[str, str] = {}
    for i, (name, value) in enumerate(settings.items()):
        values[f"name_{i}"], values[f"value_{i}"] = name, value
    await session.execute(text(f"SELECT {calls}"), values)
    params: dict[str, object] = {
        "query": query,
        "category": category,
        "candidates": candidates,
        "normalization": text_rank_normalization,
        "embedding": _vector_literal(embedding) if embedding is not None else None,
    }
    if lexical_ids is not None:
        params["lexical_ids"] = [str(i) for i in lexical_ids]
        params["lexical_ranks"] = list(range(1, len(lexical_ids) + 1))
    statement = _statement(
        vector=embedding is not None, full_text=full_text, web_syntax=web_syntax, lexical=lexical_ids is not None
    )
    rows = (await session.execute(text(statement), params)).mappings().all()
    return [
        ChunkCandidate(
            chunk_id=row["id"],
            article_id=row["article_id"],
            title=row["title"],
            category=row["category"],
            content=row["content"],
            vector_rank=row["vector_rank"],
            text_rank=row["text_rank"],
            chunk_index=row["chunk_index"],
            section=row["section"],
            heading_path=tuple(row["heading_path"] or ()),
            vector_distance=row["vector_distance"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class LexicalRow:
    """What the in-process BM25 index needs of one chunk."""

    chunk_id: uuid.UUID
    category: str
    title: str
    heading_path: tuple[str, ...]
    content: str
    article_id: str


async def corpus_version(session: AsyncSession) -> int:
    """The write counter of `knowledge_base` (bumped by a statement trigger; 0 without one)."""
    version = await session.scalar(text("SELECT version FROM knowledge_base_version"))
    return int(version) if version is not None else 0


async def lexical_documents(session: AsyncSession) -> list[LexicalRow]:
    """Every chunk's text and headings, in a stable order, for building the BM25 index."""
    rows = await session.execute(
        select(_kb.c.id, _kb.c.category, _kb.c.title, _kb.c.heading_path, _kb.c.content, _kb.c.article_id).order_by(
            _kb.c.article_id, _kb.c.chunk_index
        )
    )
    return [
        LexicalRow(chunk_id=i, category=c, title=t, heading_path=tuple(h or ()), content=body, article_id=a)
        for i, c, t, h, body, a in rows
    ]


async def section_chunks(
    session: AsyncSession, *, article_id: str, heading_path: Sequence[str]
) -> list[ChunkCandidate]:
    """Every chunk of one article under a heading path (the section and its subsections), in order."""
    depth = len(heading_path)
    rows = await session.execute(
        select(
            _kb.c.id,
            _kb.c.article_id,
            _kb.c.chunk_index,
            _kb.c.title,
            _kb.c.category,
            _kb.c.content,
            _kb.c.section,
            _kb.c.heading_path,
        )
        .where(_kb.c.article_id == article_id)
        .order_by(_kb.c.chunk_index)
    )
    found: list[ChunkCandidate] = []
    for row in rows.mappings():
        path = tuple(row["heading_path"] or ())
        if path[:depth] == tuple(heading_path):
            found.append(
                ChunkCandidate(
                    chunk_id=row["id"],
                    article_id=row["article_id"],
                    title=row["title"],
                    category=row["category"],
                    content=row["content"],
                    vector_rank=None,
                    text_rank=None,
                    chunk_index=row["chunk_index"],
                    section=row["section"],
                    heading_path=path,
                )
            )
    return found


# ----------------------------------------------------------------------------- ingest


@dataclass(frozen=True)
class ChunkRow:
    """One chunk as stored: its text, the hash it was embedded under, and the embedding."""

    article_id: str
    chunk_index: int
    title: str
    category: str
    content: str
    content_hash: str
    embedding: list[float]
    embedding_model: str
    section: str | None = None
    heading_path: tuple[str, ...] = ()


def _ids(values: list[str]) -> Any:
    # One array parameter instead of an IN list: no limit on the number of articles.
    return bindparam("ids", values, type_=ARRAY(Text))


async def embedding_dimension(session: AsyncSession) -> int | None:
    """The declared dimension of `knowledge_base.embedding`: None without the table, -1 for an unsized vector."""
    # pgvector keeps the dimension as the type modifier.
    typmod = await session.scalar(
        text(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass('knowledge_base') "
            "AND attname = 'embedding' AND NOT attisdropped"
        )
    )
    return int(typmod) if typmod is not None else None


async def chunk_hashes(session: AsyncSession, *, article_ids: list[str]) -> dict[tuple[str, int], str]:
    """The content hash of every stored chunk of these articles, by (article_id, chunk_index)."""
    rows = await session.execute(
        select(_kb.c.article_id, _kb.c.chunk_index, _kb.c.content_hash).where(
            _kb.c.article_id == any_(_ids(article_ids))
        )
    )
    return {(a, i): h for a, i, h in rows}


async def stored_article_ids(session: AsyncSession, *, prefix: str) -> set[str]:
    """The ids of the stored articles that start with `prefix` (every article for "")."""
    found = await session.scalars(select(_kb.c.article_id).where(func.starts_with(_kb.c.article_id, prefix)).distinct())
    return set(found)


async def upsert_chunks(session: AsyncSession, *, chunks: Sequence[ChunkRow]) -> None:
    """Insert these chunks, or overwrite the stored ones at the same (article_id, chunk_index)."""
    if not chunks:
        return
    stmt = insert(_kb).values(
        [
            {
                "article_id": c.article_id,
                "chunk_index": c.chunk_index,
                "title": c.title,
                "category": c.category,
                "content": c.content,
                "content_hash": c.content_hash,
                "embedding": c.embedding,
                "embedding_model": c.embedding_model,
                "section": c.section,
                "heading_path": list(c.heading_path),
            }
            for c in chunks
        ]
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[_kb.c.article_id, _kb.c.chunk_index],
            set_={
                name: stmt.excluded[name]
                for name in (
                    "title",
                    "category",
                    "content",
                    "content_hash",
                    "embedding",
                    "embedding_model",
                    "section",
                    "heading_path",
                )
            },
        )
    )


@dataclass(frozen=True)
class UnembeddedChunk:
    """A stored chunk without a vector (its column was resized by migration 0020)."""

    chunk_id: uuid.UUID
    content: str


async def chunks_without_embedding(session: AsyncSession, *, limit: int) -> list[UnembeddedChunk]:
    """Up to `limit` chunks whose vector is missing, oldest articles first."""
    rows = await session.execute(
        select(_kb.c.id, _kb.c.content)
        .where(_kb.c.embedding.is_(None))
        .order_by(_kb.c.article_id, _kb.c.chunk_index)
        .limit(limit)
    )
    return [UnembeddedChunk(chunk_id=r.id, content=r.content) for r in rows]


async def set_embeddings(
    session: AsyncSession, *, vectors: Sequence[tuple[uuid.UUID, list[float]]], model: str
) -> None:
    """Store each chunk's vector and the model that made it."""
    for chunk_id, vector in vectors:
        await session.execute(update(_kb).where(_kb.c.id == chunk_id).values(embedding=vector, embedding_model=model))


async def delete_chunks_from(session: AsyncSession, *, article_id: str, first_index: int) -> None:
    """Delete the article's chunks from `first_index` on (an article that got shorter)."""
    await session.execute(delete(_kb).where(_kb.c.article_id == article_id, _kb.c.chunk_index >= first_index))


async def delete_articles(session: AsyncSession, *, article_ids: list[str]) -> int:
    """Delete every chunk of these articles; returns how many chunks were deleted."""
    result = cast(
        CursorResult[Any], await session.execute(delete(_kb).where(_kb.c.article_id == any_(_ids(article_ids))))
    )
    return result.rowcount or 0
