"""Engine, sessions and migrations for the CRM database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from core.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_engine(settings: Settings, *, url: str | None = None, pre_ping: bool = True) -> AsyncEngine:
    """An asyncpg engine sized by the settings; the caller disposes it.

    `pre_ping` tests each pooled connection before use (one round trip per checkout), so a request
    never fails on a connection PostgreSQL dropped. Callers that retry anyway (Temporal
    activities) turn it off: the first query on a dead connection fails, SQLAlchemy invalidates
    the whole pool, and the retried attempt gets a fresh connection.
    """
    return create_async_engine(
        url or settings.database_dsn,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        # Fail fast when PostgreSQL is down instead of hanging a health check or a request.
        connect_args={"timeout": 5, "server_settings": {"application_name": "crm-fte"}},
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def create_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for reads only, on the same pool: every statement commits on its own (AUTOCOMMIT).

    A one-query read then costs one round trip instead of three (BEGIN, the query, ROLLBACK). Reads
    of several statements see no common snapshot: use `transaction()` where that matters.
    """
    return async_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on error (repositories never commit)."""
    async with sessions() as session, session.begin():
        yield session


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config that works from an installed package (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Apply migrations up to `revision` (blocking; runs its own event loop)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


async def upgrade_async(url: str | None = None, revision: str = "head") -> None:
    """Apply migrations from inside a running event loop (Alembic's env runs its own loop)."""
    await asyncio.to_thread(upgrade, url, revision)


async def ping(engine: AsyncEngine) -> None:
    """One round trip to PostgreSQL (health checks); raises if it does not answer."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def create_database_if_missing(*, host: str, port: int, user: str, database: str, wait_seconds: float) -> None:
    """Create `database` on a server that has just started (the embedded PostgreSQL's first run).

    Waits for the server to accept connections (up to `wait_seconds`) through the maintenance
    database `postgres`. The name is quoted as an identifier, so any name is safe to pass.
    """
    import asyncpg

    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            conn = await asyncpg.connect(host=host, port=port, user=user, database="postgres")
            break
        except (OSError, asyncpg.CannotConnectNowError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            quoted = '"' + database.replace('"', '""') + '"'
            await conn.execute(f"CREATE DATABASE {quoted}")
    finally:
        await conn.close()
