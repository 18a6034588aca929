"""The CRM schema on a real PostgreSQL with pgvector: migrations, ticket numbers, dedupe, constraints."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from crm import db
from workers.embedded import EmbeddedPostgres

EXPECTED_TABLES = {
    "customers",
    "customer_identifiers",
    "conversations",
    "messages",
    "tickets",
    "knowledge_base",
    "channel_configs",
    "agent_metrics",
}


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
            return {r[0] for r in rows}
    finally:
        await engine.dispose()


async def test_migrations_apply_on_empty_database_and_round_trip(postgres: EmbeddedPostgres) -> None:
    name = f"roundtrip_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(postgres.url("postgres"), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = postgres.url(name)
    try:
        assert await _tables(url) == set()
        await db.upgrade_async(url)
        assert EXPECTED_TABLES <= await _tables(url)
        await asyncio.to_thread(db.downgrade, url, "base")
        assert await _tables(url) == {"alembic_version"}
        await db.upgrade_async(url)
        tables = await _tables(url)
        assert EXPECTED_TABLES <= tables
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            ext = await conn.scalar(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
            index = await conn.scalar(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_knowledge_base_embedding_hnsw'")
            )
            dim = await conn.scalar(
                text(
                    "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'knowledge_base'::regclass "
                    "AND attname = 'embedding'"
                )
            )
        await engine.dispose()
        assert ext is not None
        assert "hnsw" in index and "vector_cosine_ops" in index
        assert dim == 512  # the configured EMBEDDING_DIM default (USE multilingual v3)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def test_a_database_migrated_for_another_embedding_model_is_resized_and_re_embedded(
    postgres: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upgrading from WordLlama's 256 dimensions: migration 0020 resizes the column, clears the
    vectors, and the next ingest re-embeds even chunks no article file holds (a reviewed answer)."""
    from core.settings import reset_settings_cache
    from crm.db import create_sessionmaker
    from crm.repositories import knowledge_base
    from crm.repositories.knowledge_base import ChunkRow
    from kb.chunking import Article
    from kb.embeddings import USEEmbedder
    from kb.ingest import embed_missing, ingest_articles

    name = f"resize_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(postgres.url("postgres"), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = postgres.url(name)
    engine = create_async_engine(url)
    try:
        monkeypatch.setenv("EMBEDDING_DIM", "256")
        reset_settings_cache()
        await db.upgrade_async(url, "0019")
        sessions = create_sessionmaker(engine)
        async with sessions.begin() as session:
            await knowledge_base.upsert_chunks(
                session,
                chunks=[
                    ChunkRow(
                        article_id="learned-1",
                        chunk_index=0,
                        title="Reviewed answer",
                        category="learned",
                        content="# Reviewed answer\n\nExport a board as CSV from the board menu.",
                        content_hash="old",
                        embedding=[1.0] + [0.0] * 255,
                        embedding_model="wordllama/l2_supercat-256",
                        section=None,
                        heading_path=(),
                    )
                ],
            )
        monkeypatch.setenv("EMBEDDING_DIM", "512")
        reset_settings_cache()
        await db.upgrade_async(url)
        async with engine.connect() as conn:
            dim = await conn.scalar(
                text(
                    "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'knowledge_base'::regclass "
                    "AND attname = 'embedding'"
                )
            )
            kept = (await conn.execute(text("SELECT embedding IS NULL, content_hash FROM knowledge_base"))).one()
            index = await conn.scalar(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_knowledge_base_embedding_hnsw'")
            )
            storage = await conn.scalar(
                text(
                    "SELECT attstorage::text FROM pg_attribute WHERE attrelid = 'knowledge_base'::regclass "
                    "AND attname = 'embedding'"
                )
            )
        assert dim == 512 and "hnsw" in index
        assert storage == "p"  # inline: the planner costs a scan for the vectors it reads
        assert tuple(kept) == (True, "")  # the text stays, the vector and the hash are cleared

        embedder = USEEmbedder()
        article = Article(article_id="guide", title="Guide", category="general", body="## Boards\n\nMake a board.")
        report = await ingest_articles([article], sessions=sessions, embedder=embedder)
        assert report.embedded == 2  # the guide's chunk, and the reviewed answer from its stored text
        assert await embed_missing(sessions, embedder) == 0
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT article_id, embedding_model, vector_dims(embedding) FROM knowledge_base ORDER BY article_id"
                    )
                )
            ).all()
        assert [tuple(r) for r in rows] == [
            ("guide", embedder.model_name, 512),
            ("learned-1", embedder.model_name, 512),
        ]
    finally:
        reset_settings_cache()
        await engine.dispose()
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def _new_customer(session: AsyncSession) -> uuid.UUID:
    return (await session.execute(text("INSERT INTO customers (name) VALUES ('T') RETURNING id"))).scalar_one()


async def test_ticket_numbers_are_unique_under_50_concurrent_creations(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        customer = (await conn.execute(text("INSERT INTO customers (name) VALUES ('load') RETURNING id"))).scalar_one()

    async def create() -> str:
        async with engine.begin() as conn:
            return (
                await conn.execute(
                    text(
                        "INSERT INTO tickets (customer_id, source_channel) VALUES (:c, 'web_form') "
                        "RETURNING ticket_number"
                    ),
                    {"c": customer},
                )
            ).scalar_one()

    numbers = await asyncio.gather(*(create() for _ in range(50)))
    assert len(set(numbers)) == 50
    assert all(n.startswith("TKT-") and n[4:].isdigit() and len(n) >= 8 for n in numbers)


async def test_ticket_number_is_never_reused_after_rollback(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        customer = (await conn.execute(text("INSERT INTO customers (name) VALUES ('rb') RETURNING id"))).scalar_one()
    insert = text("INSERT INTO tickets (customer_id, source_channel) VALUES (:c, 'email') RETURNING ticket_number")
    async with engine.connect() as conn:
        trans = await conn.begin()
        rolled_back = (await conn.execute(insert, {"c": customer})).scalar_one()
        await trans.rollback()
    async with engine.begin() as conn:
        kept = (await conn.execute(insert, {"c": customer})).scalar_one()
    assert int(kept[4:]) > int(rolled_back[4:])


async def test_ticket_numbers_keep_growing_past_four_digits(session: AsyncSession) -> None:
    number = await session.scalar(
        text("SELECT 'TKT-' || lpad(n::text, greatest(4, length(n::text)), '0') FROM (SELECT 123456::bigint AS n) s")
    )
    assert number == "TKT-123456"
    assert await session.scalar(text("SELECT next_ticket_number()")) != await session.scalar(
        text("SELECT next_ticket_number()")
    )


async def test_dedupe_key_rejects_a_duplicate_inbound_message(session: AsyncSession) -> None:
    customer = await _new_customer(session)
    conversation = (
        await session.execute(
            text(
                "INSERT INTO conversations (customer_id, channel, conversation_key, workflow_id) "
                "VALUES (:c, 'whatsapp', :k, :w) RETURNING id"
            ),
            {"c": customer, "k": f"+1555{uuid.uuid4().int % 10**7:07d}", "w": "wf"},
        )
    ).scalar_one()
    insert = text(
        "INSERT INTO messages (conversation_id, channel, direction, role, content, external_message_id) "
        "VALUES (:conv, 'whatsapp', 'inbound', 'customer', 'hi', 'SM123') "
        "ON CONFLICT (channel, external_message_id) WHERE direction = 'inbound' DO NOTHING RETURNING id"
    )
    first = (await session.execute(insert, {"conv": conversation})).scalar_one_or_none()
    second = (await session.execute(insert, {"conv": conversation})).scalar_one_or_none()
    assert first is not None and second is None
    count = await session.scalar(text("SELECT count(*) FROM messages WHERE external_message_id = 'SM123'"))
    assert count == 1
    # Without ON CONFLICT the database itself refuses it.
    with pytest.raises(IntegrityError):
        async with session.begin_nested():
            await session.execute(
                text(
                    "INSERT INTO messages (conversation_id, channel, direction, role, content, external_message_id) "
                    "VALUES (:conv, 'whatsapp', 'inbound', 'customer', 'hi again', 'SM123')"
                ),
                {"conv": conversation},
            )
    # The same provider id on another channel is a different message.
    other = await session.execute(
        text(
            "INSERT INTO messages (conversation_id, channel, direction, role, content, external_message_id) "
            "VALUES (:conv, 'email', 'inbound', 'customer', 'hi', 'SM123') RETURNING id"
        ),
        {"conv": conversation},
    )
    assert other.scalar_one() is not None


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        ("INSERT INTO customers (plan) VALUES ('platinum')", "ck_customers_plan"),
        ("INSERT INTO customers (phone) VALUES ('555-1234')", "ck_customers_phone_e164"),
        ("INSERT INTO customers (email) VALUES ('Lisa@Example.com')", "ck_customers_email_lower"),
        (
            "INSERT INTO channel_configs (channel, tone, max_response_length) VALUES ('sms', 'formal', 10)",
            "ck_channel_configs_channel",
        ),
        ("INSERT INTO agent_metrics (metric_type, channel, value) VALUES ('x', 'fax', 1)", "ck_agent_metrics_channel"),
    ],
)
async def test_check_constraints_guard_enums(session: AsyncSession, statement: str, constraint: str) -> None:
    with pytest.raises(IntegrityError) as excinfo:
        async with session.begin_nested():
            await session.execute(text(statement))
    assert constraint in str(excinfo.value)


async def test_a_verified_identifier_has_one_owner_and_claims_may_repeat(session: AsyncSession) -> None:
    a, b, c = await _new_customer(session), await _new_customer(session), await _new_customer(session)
    value = f"x{uuid.uuid4().hex[:6]}@example.com"
    insert = (
        "INSERT INTO customer_identifiers (customer_id, identifier_type, identifier_value, verified_at, verified_via) "
        "VALUES (:c, 'email', :v, {at}, {via})"
    )
    claim, verified = insert.format(at="NULL", via="NULL"), insert.format(at="now()", via="'gmail'")
    await session.execute(text(verified), {"c": a, "v": value})
    await session.execute(text(claim), {"c": b, "v": value})  # someone else may claim it
    for statement, customer, constraint in (
        (verified, c, "uq_customer_identifiers_verified"),
        (claim, a, "uq_customer_identifiers_customer_id_type_value"),
    ):
        with pytest.raises(IntegrityError) as excinfo:
            async with session.begin_nested():
                await session.execute(text(statement), {"c": customer, "v": value})
        assert constraint in str(excinfo.value)
    with pytest.raises(IntegrityError, match="ck_customer_identifiers_verified_pair"):
        async with session.begin_nested():
            await session.execute(
                text(
                    "INSERT INTO customer_identifiers (customer_id, identifier_type, identifier_value, verified_at) "
                    "VALUES (:c, 'phone', '+14155550100', now())"
                ),
                {"c": a},
            )


async def test_updated_at_is_maintained_and_deletes_cascade(session: AsyncSession) -> None:
    customer = await _new_customer(session)
    before = await session.scalar(text("SELECT updated_at FROM customers WHERE id = :c"), {"c": customer})
    await asyncio.sleep(0.01)
    # now() is the transaction start time; a savepoint shares it, so compare against clock_timestamp.
    await session.execute(text("UPDATE customers SET name = 'Lisa' WHERE id = :c"), {"c": customer})
    after = await session.scalar(text("SELECT updated_at FROM customers WHERE id = :c"), {"c": customer})
    assert after >= before
    trigger = await session.scalar(
        text("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'trg_%_updated_at' AND NOT tgisinternal")
    )
    assert trigger == 8  # six seed tables + escalations + saved_replies
    await session.execute(
        text(
            "INSERT INTO customer_identifiers (customer_id, identifier_type, identifier_value) VALUES (:c, 'phone', :v)"
        ),
        {"c": customer, "v": f"+1555{uuid.uuid4().int % 10**7:07d}"},
    )
    await session.execute(text("DELETE FROM customers WHERE id = :c"), {"c": customer})
    left = await session.scalar(
        text("SELECT count(*) FROM customer_identifiers WHERE customer_id = :c"), {"c": customer}
    )
    assert left == 0


async def test_channel_configs_are_seeded(session: AsyncSession) -> None:
    rows = (await session.execute(text("SELECT channel, tone, max_response_length FROM channel_configs"))).all()
    assert {(r[0], r[1]) for r in rows} == {("email", "formal"), ("whatsapp", "concise"), ("web_form", "semi_formal")}
    assert dict((r[0], r[2]) for r in rows)["whatsapp"] == 1600
