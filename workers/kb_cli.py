"""`crm-fte kb`: load the knowledge base and try searches from a terminal (kb.ingest, kb.search)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from workers.terminal import make_console

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from core.settings import Settings
    from kb.embeddings import Embedder
    from kb.ingest import IngestReport
    from kb.search import SearchHit

T = TypeVar("T")

kb_app = typer.Typer(
    rich_markup_mode=None, help="The knowledge base: load product articles, try searches.", no_args_is_help=True
)
console = make_console()
err_console = make_console(stderr=True)

_HEADING_LINE = re.compile(r"^#{1,6}\s.*$", re.MULTILINE)


def _describe(exc: BaseException) -> str:
    """A one-line reason for an error raised while talking to PostgreSQL or the embedder."""
    from core.errors import CRMError

    if isinstance(exc, CRMError):
        return exc.message
    if isinstance(exc, OSError | TimeoutError) and not isinstance(exc, FileNotFoundError):
        return f"cannot reach PostgreSQL: {exc.strerror or exc}"
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    text = detail[0] if detail else type(exc).__name__
    if 'relation "knowledge_base" does not exist' in text:
        return "the knowledge_base table does not exist: run `crm-fte migrate` first"
    return f"{type(exc).__name__}: {text[:300]}"


def _run(settings: Settings, work: Callable[[async_sessionmaker[AsyncSession], Embedder], Awaitable[T]]) -> T:
    """Create the engine and embedder, run `work`, always dispose; errors become one line and exit 1."""
    from sqlalchemy.exc import SQLAlchemyError

    from core.errors import CRMError
    from crm.db import create_engine, create_sessionmaker
    from kb.embeddings import create_embedder
    from workers.cli import fail

    async def main() -> T:
        engine = create_engine(settings)
        try:
            embedder = create_embedder(settings)
            return await work(create_sessionmaker(engine), embedder)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except (CRMError, SQLAlchemyError, OSError, TimeoutError) as exc:
        raise fail(_describe(exc)) from None
    except Exception as exc:
        # asyncpg raises its own errors for a refused login or a missing database.
        if type(exc).__module__.startswith("asyncpg"):
            raise fail(_describe(exc)) from None
        raise


@kb_app.command("ingest")
def ingest_command(
    path: Annotated[
        Path | None, typer.Argument(help="A folder of Markdown articles or one file (default: the bundled docs).")
    ] = None,
    prune: Annotated[
        bool, typer.Option("--prune", help="Also delete articles that are no longer in the folder.")
    ] = False,
) -> None:
    """Chunk, embed and upsert the articles; unchanged chunks are not re-embedded."""
    from kb.ingest import default_docs_path, ingest_path
    from workers.cli import fail, target_settings

    settings = target_settings("kb", ("database",))
    target = (path or default_docs_path()).expanduser()
    if not target.exists():
        raise fail(f"no such file or directory: {target}")

    async def work(sessions: async_sessionmaker[AsyncSession], embedder: Embedder) -> IngestReport:
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as progress:
            task = progress.add_task("ingesting", total=None)

            def on_progress(article_id: str, done: int, total: int) -> None:
                progress.update(task, completed=done, total=total, description=article_id[:40])

            return await ingest_path(target, sessions=sessions, embedder=embedder, prune=prune, on_progress=on_progress)

    report = _run(settings, work)
    console.print(report.summary(), highlight=False)


def _preview(content: str, width: int = 100) -> str:
    body = " ".join(_HEADING_LINE.sub("", content).split())
    return body if len(body) <= width else body[: width - 1] + "…"


@kb_app.command("search")
def search_command(
    query: Annotated[str, typer.Argument(help="What a customer would ask.")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=50, help="How many results.")] = 5,
    category: Annotated[str | None, typer.Option(help="Only articles of this category.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the hits as JSON.")] = False,
) -> None:
    """Hybrid (vector + full-text) search, as the agent's knowledge-base tool runs it."""
    from kb.ingest import check_embedding_column
    from kb.search import search
    from workers.cli import fail, target_settings

    settings = target_settings("kb", ("database",))
    if not query.strip():
        raise fail("the query is empty")

    async def work(sessions: async_sessionmaker[AsyncSession], embedder: Embedder) -> list[SearchHit]:
        await check_embedding_column(sessions, embedder)
        return await search(query, sessions=sessions, embedder=embedder, limit=limit, category=category)

    hits = _run(settings, work)
    if as_json:
        # Plain JSON for pipes and scripts: no wrapping, no colours.
        typer.echo(json.dumps([hit.model_dump(mode="json") for hit in hits], indent=2, ensure_ascii=False))
        return
    if not hits:
        console.print("no results (is the knowledge base loaded? `crm-fte kb ingest`)")
        return
    table = Table(title=f"kb search: {query}", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("article")
    table.add_column("section")
    table.add_column("content", overflow="fold")
    for rank, hit in enumerate(hits, start=1):
        table.add_row(str(rank), f"{hit.score:.4f}", hit.article_id, hit.path_text, _preview(hit.content))
    console.print(table)
