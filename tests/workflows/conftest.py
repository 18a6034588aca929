"""A real Temporal worker (the production registry) on the session's dev server, and helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities.deps import ActivityDeps
from core.settings import Settings
from core.temporal import connect_temporal
from tests.workflows.helpers import make_worker
from workers.temporal_setup import ensure_search_attributes

T = TypeVar("T")


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
