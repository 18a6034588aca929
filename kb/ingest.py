"""Load Markdown articles into the `knowledge_base` table: chunk, embed what changed, upsert.

Each chunk row is keyed by (article_id, chunk_index) and carries a content hash over its text and
the embedding model, so a re-run embeds only chunks whose text (or model) changed, rewrites only
those rows, and removes the chunks an article no longer has. Articles that vanished from the
folder are deleted only with ``prune=True``, and only among ids under ``article_prefix``: one
table can hold several sources side by side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.errors import CRMError
from core.logging import get_logger
from crm.db import transaction
from crm.repositories import knowledge_base
from crm.repositories.knowledge_base import ChunkRow
from kb.chunking import Article, Chunk, chunk_article, plain_text, read_article
from kb.embeddings import Embedder, EmbeddingConfigError

log = get_logger(__name__)

ProgressCallback = Callable[[str, int, int], None]
"""Called after each article as ``(article_id, articles_done, articles_total)``."""

# Chunks without a vector embedded per transaction by :func:`embed_missing`.
MISSING_BATCH = 256


class IngestError(CRMError):
    """The articles to ingest cannot be read."""

    status_code = 400
    code = "kb_ingest"


class IngestReport(BaseModel):
    """What one ingest run did, in chunks unless named otherwise."""

    articles: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    articles_deleted: int = 0
    embedded: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.inserted or self.updated or self.deleted)

    def summary(self) -> str:
        """One line for a terminal or a log."""
        return (
            f"{self.articles} articles: {self.inserted} chunks inserted, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.deleted} deleted"
            + (f" ({self.articles_deleted} articles pruned)" if self.articles_deleted else "")
        )


def default_docs_path() -> Path:
    """The TechCorp articles bundled with the package."""
    return Path(__file__).parent / "docs"


def content_hash(chunk: Chunk, model_name: str) -> str:
    """sha256 over what the stored row and its embedding depend on."""
    digest = hashlib.sha256()
    for part in (model_name, chunk.title, chunk.category, chunk.content, *chunk.heading_path):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def embedding_text(chunk: Chunk) -> str:
    """What the embedder sees: the chunk without Markdown punctuation."""
    return plain_text(chunk.content)


async def check_embedding_column(sessions: async_sessionmaker[AsyncSession], embedder: Embedder) -> None:
    """Fail with a clear message when `knowledge_base.embedding` is missing or of another dimension."""
    async with sessions() as session:
        dimension = await knowledge_base.embedding_dimension(session)
    _check_dimension(dimension, embedder)


def _check_dimension(dimension: int | None, embedder: Embedder) -> None:
    if dimension is None:
        raise IngestError("the knowledge_base table does not exist: run `crm-fte migrate` first")
    # -1 for an unsized `vector` column: any dimension fits.
    if dimension > 0 and dimension != embedder.dim:
        raise EmbeddingConfigError(
            f"knowledge_base.embedding is vector({dimension}) but {embedder.model_name} gives {embedder.dim}-dim "
            f"vectors; use an embedding model of {dimension} dimensions (EMBEDDING_DIM={dimension}) or migrate a "
            f"database created with EMBEDDING_DIM={embedder.dim}"
        )


def discover_articles(path: Path, *, article_prefix: str = "") -> list[Article]:
    """Every `*.md` file under `path` (or `path` itself), id = prefix + relative path without `.md`."""
    if not path.exists():
        raise IngestError(f"no such file or directory: {path}")
    if path.is_file():
        files = [(path, path.stem)]
    else:
        files = [(p, p.relative_to(path).with_suffix("").as_posix()) for p in sorted(path.rglob("*.md"))]
    articles: list[Article] = []
    for file, relative_id in files:
        if not file.is_file():
            continue
        try:
            articles.append(read_article(file, article_id=article_prefix + relative_id))
        except (OSError, UnicodeDecodeError) as exc:
            raise IngestError(f"cannot read {file}: {exc}") from exc
    if not articles:
        # Never "sync" an empty folder: with prune it would wipe the knowledge base.
        raise IngestError(f"no Markdown articles (*.md) under {path}")
    return articles


async def ingest_path(
    path: Path,
    *,
    sessions: async_sessionmaker[AsyncSession],
    embedder: Embedder,
    prune: bool = False,
    article_prefix: str = "",
    on_progress: ProgressCallback | None = None,
) -> IngestReport:
    """Bring the knowledge base in line with the articles under `path` (idempotent)."""
    articles = discover_articles(path, article_prefix=article_prefix)
    return await ingest_articles(
        articles,
        sessions=sessions,
        embedder=embedder,
        prune=prune,
        article_prefix=article_prefix,
        on_progress=on_progress,
    )


async def ingest_articles(
    articles: list[Article],
    *,
    sessions: async_sessionmaker[AsyncSession],
    embedder: Embedder,
    prune: bool = False,
    article_prefix: str = "",
    on_progress: ProgressCallback | None = None,
) -> IngestReport:
    """Chunk, embed and upsert parsed articles; see :func:`ingest_path`."""
    report = IngestReport(articles=len(articles))
    model = embedder.model_name
    ids = [a.article_id for a in articles]
    if len(set(ids)) != len(ids):
        raise IngestError("two articles share an id")
    await check_embedding_column(sessions, embedder)

    async with sessions() as session:
        existing = await knowledge_base.chunk_hashes(session, article_ids=ids)
        stored_chunks: dict[str, int] = {}
        for article_id, _ in existing:
            stored_chunks[article_id] = stored_chunks.get(article_id, 0) + 1
        stored_ids: set[str] = set()
        if prune:
            stored_ids = await knowledge_base.stored_article_ids(session, prefix=article_prefix)

    for done, article in enumerate(articles, start=1):
        chunks = chunk_article(article)
        hashes = [content_hash(c, model) for c in chunks]
        changed = [
            (c, h) for c, h in zip(chunks, hashes, strict=True) if existing.get((c.article_id, c.chunk_index)) != h
        ]
        # Indexes are contiguous from 0, so every stored chunk past the new length is stale.
        stale = max(0, stored_chunks.get(article.article_id, 0) - len(chunks))
        vectors = await embedder.embed([embedding_text(c) for c, _ in changed]) if changed else []
        async with transaction(sessions) as session:
            if changed:
                await knowledge_base.upsert_chunks(
                    session,
                    chunks=[
                        ChunkRow(
                            article_id=c.article_id,
                            chunk_index=c.chunk_index,
                            title=c.title,
                            category=c.category,
                            content=c.content,
                            content_hash=h,
                            embedding=v,
                            embedding_model=model,
                            section=c.section,
                            heading_path=c.heading_path,
                        )
                        for (c, h), v in zip(changed, vectors, strict=True)
                    ],
                )
            if stale:
                await knowledge_base.delete_chunks_from(session, article_id=article.article_id, first_index=len(chunks))
        inserted = sum(1 for c, _ in changed if (c.article_id, c.chunk_index) not in existing)
        report.inserted += inserted
        report.updated += len(changed) - inserted
        report.unchanged += len(chunks) - len(changed)
        report.deleted += stale
        report.embedded += len(changed)
        if changed or stale:
            log.debug(
                "kb.article_ingested",
                article_id=article.article_id,
                chunks=len(chunks),
                written=len(changed),
                deleted=stale,
            )
        if on_progress is not None:
            on_progress(article.article_id, done, len(articles))

    report.embedded += await embed_missing(sessions, embedder)
    gone = sorted(stored_ids - set(ids))
    if gone:
        async with transaction(sessions) as session:
            report.deleted += await knowledge_base.delete_articles(session, article_ids=gone)
        report.articles_deleted = len(gone)
        log.info("kb.articles_pruned", articles=gone)

    log.info("kb.ingest_finished", **report.model_dump(), embedding_model=model)
    return report


async def embed_missing(
    sessions: async_sessionmaker[AsyncSession], embedder: Embedder, *, batch: int = MISSING_BATCH
) -> int:
    """Embed every stored chunk that has no vector, from its stored text; returns how many.

    Chunks lose their vectors when migration 0020 resizes the column for another embedding model;
    the articles an ingest reads are re-embedded by it anyway, this covers the rest (reviewed answers).
    """
    done = 0
    while True:
        async with sessions() as session:
            missing = await knowledge_base.chunks_without_embedding(session, limit=batch)
        if not missing:
            break
        vectors = await embedder.embed([plain_text(c.content) for c in missing])
        async with transaction(sessions) as session:
            await knowledge_base.set_embeddings(
                session,
                vectors=[(c.chunk_id, v) for c, v in zip(missing, vectors, strict=True)],
                model=embedder.model_name,
            )
        done += len(missing)
    if done:
        log.info("kb.embedded_missing", chunks=done, embedding_model=embedder.model_name)
    return done


async def ingest_article(session: AsyncSession, article: Article, *, embedder: Embedder) -> IngestReport:
    """Chunk, embed and upsert one article inside the caller's transaction (a reviewed entry, issue 17).

    The same chunking, hashing and embedding as :func:`ingest_articles`, so the entry is found by
    `kb.search` as soon as the caller commits; chunks the article no longer has are deleted.
    """
    _check_dimension(await knowledge_base.embedding_dimension(session), embedder)
    model = embedder.model_name
    existing = await knowledge_base.chunk_hashes(session, article_ids=[article.article_id])
    chunks = chunk_article(article)
    hashes = [content_hash(c, model) for c in chunks]
    changed = [(c, h) for c, h in zip(chunks, hashes, strict=True) if existing.get((c.article_id, c.chunk_index)) != h]
    vectors = await embedder.embed([embedding_text(c) for c, _ in changed]) if changed else []
    await knowledge_base.upsert_chunks(
        session,
        chunks=[
            ChunkRow(
                article_id=c.article_id,
                chunk_index=c.chunk_index,
                title=c.title,
                category=c.category,
                content=c.content,
                content_hash=h,
                embedding=v,
                embedding_model=model,
                section=c.section,
                heading_path=c.heading_path,
            )
            for (c, h), v in zip(changed, vectors, strict=True)
        ],
    )
    stale = max(0, len(existing) - len(chunks))
    if stale:
        await knowledge_base.delete_chunks_from(session, article_id=article.article_id, first_index=len(chunks))
    inserted = sum(1 for c, _ in changed if (c.article_id, c.chunk_index) not in existing)
    return IngestReport(
        articles=1,
        inserted=inserted,
        updated=len(changed) - inserted,
        unchanged=len(chunks) - len(changed),
        deleted=stale,
        embedded=len(changed),
    )
