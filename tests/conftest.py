"""Session-wide real services: the same embedded PostgreSQL, Temporal and Kafka that `crm-fte up` runs.

Each service runs once per test session in a temporary directory on free ports; tests isolate
themselves by unique ids (workflow ids, phone numbers, emails) or by rolled-back transactions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from temporalio.client import Client
from temporalio.worker import Worker

from activities.deps import ActivityDeps
from core.logging import configure_logging
from core.settings import Settings
from core.temporal import connect_temporal
from crm import db
from tests.workflows.helpers import make_worker
from workers.embedded import EmbeddedKafka, EmbeddedPostgres, EmbeddedTemporal, free_port
from workers.temporal_setup import ensure_search_attributes


@pytest.fixture(scope="session")
def stack_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="crm-fte-tests-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(stack_dir: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(stack_dir, free_port(), stack_dir / "logs", database="crm_fte_test")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def temporal_server(stack_dir: Path) -> Iterator[EmbeddedTemporal]:
    server = EmbeddedTemporal(stack_dir, free_port(), free_port(), stack_dir / "logs", headless=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kafka(stack_dir: Path) -> Iterator[EmbeddedKafka]:
    broker = EmbeddedKafka(free_port(), stack_dir / "logs")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def database_url(postgres: EmbeddedPostgres) -> str:
    url = postgres.url()
    db.upgrade(url)
    return url


@pytest.fixture(scope="session")
def settings(database_url: str, temporal_server: EmbeddedTemporal, kafka: EmbeddedKafka) -> Settings:
    """Settings pointing at the session's real services (no .env, no ambient environment)."""
    configure_logging(level="WARNING", log_format="console")
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        temporal_address=temporal_server.address,
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        kafka_enable_idempotence=False,
        kafka_topic_inbound=f"test.inbound.{uuid.uuid4().hex[:8]}",
        kafka_topic_dead_letter=f"test.dlq.{uuid.uuid4().hex[:8]}",
        kafka_topic_partitions=3,
        temporal_task_queue=f"test-{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(database_url, pool_size=20, max_overflow=40)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db.create_sessionmaker(engine)


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session inside a transaction that is rolled back after the test."""
    async with engine.connect() as conn:
        trans = await conn.begin()
        sess = AsyncSession(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
        try:
            yield sess
        finally:
            await sess.close()
            await trans.rollback()


def unique_suffix() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(autouse=True, scope="session")
def _no_ambient_config() -> Iterator[None]:
    # A developer's exported DATABASE_URL etc. must not leak into subprocess-based tests.
    saved = {
        k: os.environ.pop(k)
        for k in list(os.environ)
        if k in {"DATABASE_URL", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "KAFKA_BOOTSTRAP_SERVERS"}
    }
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
async def kb_ingested(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
    from kb.embeddings import create_embedder
    from kb.ingest import default_docs_path, ingest_path

    await ingest_path(default_docs_path(), sessions=sessions, embedder=create_embedder(settings))


@pytest.fixture(scope="session")
async def client(settings: Settings) -> Client:
    client = await connect_temporal(settings)
    await ensure_search_attributes(client)
    return client


@pytest.fixture(scope="session")
async def deps(settings: Settings) -> AsyncIterator[ActivityDeps]:
    deps = ActivityDeps.create(settings)
    yield deps
    await deps.close()


@pytest.fixture
async def worker(client: Client, settings: Settings, deps: ActivityDeps, kb_ingested: None) -> AsyncIterator[Worker]:
    """A worker with full replay on every task (max_cached_workflows=0): catches non-determinism."""
    w = make_worker(client, settings, deps, max_cached_workflows=0)
    async with w:
        yield w
