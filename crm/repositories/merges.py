"""Customer merges: the rows that move from one customer to another, the record of each merge, and undoing it.

Every table keyed by `customer_id` is moved here (`TABLES_KEYED_BY_CUSTOMER` lists them; a test
compares it with the schema): conversations, tickets, identifiers and identity confirmations.
Everything else (messages, escalations, agent steps, metric points, human actions) hangs off a
conversation and follows it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# The tables with a customer_id column, and customer_merges itself (the record, never moved).
TABLES_KEYED_BY_CUSTOMER: tuple[str, ...] = (
    "conversations",
    "tickets",
    "customer_identifiers",
    "identity_confirmations",
)
PROFILE_FIELDS: tuple[str, ...] = ("email", "phone", "name", "company")


@dataclass(frozen=True)
class CustomerState:
    """A customer row as a merge sees it."""

    id: uuid.UUID
    email: str | None
    phone: str | None
    name: str | None
    company: str | None
    merged_into: uuid.UUID | None
    erased_at: datetime | None


@dataclass(frozen=True)
class IdentifierRow:
    """One identifier of a customer, verified (a channel proved it) or a claim."""

    id: uuid.UUID
    customer_id: uuid.UUID
    type: str
    value: str
    channel: str | None
    verified: bool
    verified_via: str | None
    created_at: datetime


@dataclass(frozen=True)
class ConversationRow:
    """A conversation that moves with its customer; `open` ones have a workflow to tell."""

    id: uuid.UUID
    workflow_id: str
    status: str
    channel: str

    @property
    def open(self) -> bool:
        return self.status != "closed"


@dataclass(frozen=True)
class StoredMerge:
    """One row of customer_merges."""

    id: uuid.UUID
    source_customer_id: uuid.UUID
    target_customer_id: uuid.UUID
    actor: str
    reason: str
    moved: dict[str, Any]
    merged_at: datetime
    unmerged_at: datetime | None
    unmerged_by: str | None


_CUSTOMER_COLUMNS = "id, email, phone, name, company, merged_into, erased_at"
_MERGE_COLUMNS = "id, source_customer_id, target_customer_id, actor, reason, moved, merged_at, unmerged_at, unmerged_by"


def _merge(row: Any) -> StoredMerge:
    moved = row.moved if isinstance(row.moved, dict) else json.loads(row.moved)
    return StoredMerge(**{**row._mapping, "moved": moved})


async def customer_state(session: AsyncSession, *, customer_id: uuid.UUID) -> CustomerState | None:
    """The customer row (merged away and erased ones too); None for no such customer."""
    row = (
        await session.execute(text(f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE id = :c"), {"c": customer_id})
    ).one_or_none()
    return CustomerState(**row._mapping) if row is not None else None


async def lock_customers(session: AsyncSession, *, customer_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CustomerState]:
    """Lock these customer rows until the transaction ends (in id order, so two merges cannot deadlock).

    FOR UPDATE also holds back rows being inserted that reference them (a new conversation waits).
    """
    rows = await session.execute(
        text(f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"),
        {"ids": list(customer_ids)},
    )
    return {r.id: CustomerState(**r._mapping) for r in rows}


async def identifiers(session: AsyncSession, *, customer_id: uuid.UUID) -> list[IdentifierRow]:
    """The customer's identifiers, oldest first."""
    rows = await session.execute(
        text(
            "SELECT id, customer_id, identifier_type AS type, identifier_value AS value, channel, "
            "verified_at IS NOT NULL AS verified, verified_via, created_at FROM customer_identifiers "
            "WHERE customer_id = :c ORDER BY created_at, id"
        ),
        {"c": customer_id},
    )
    return [IdentifierRow(**r._mapping) for r in rows]


async def conversations(session: AsyncSession, *, customer_id: uuid.UUID) -> list[ConversationRow]:
    """The customer's conversations, oldest first."""
    rows = await session.execute(
        text(
            "SELECT id, workflow_id, status, channel FROM conversations WHERE customer_id = :c ORDER BY started_at, id"
        ),
        {"c": customer_id},
    )
    return [ConversationRow(**r._mapping) for r in rows]


async def conversations_by_id(session: AsyncSession, *, conversation_ids: Sequence[uuid.UUID]) -> list[ConversationRow]:
    """These conversations (any customer's), oldest first."""
    rows = await session.execute(
        text("SELECT id, workflow_id, status, channel FROM conversations WHERE id = ANY(:ids) ORDER BY started_at, id"),
        {"ids": list(conversation_ids)},
    )
    return [ConversationRow(**r._mapping) for r in rows]


async def ids_keyed_by_customer(session: AsyncSession, *, table: str, customer_id: uuid.UUID) -> list[uuid.UUID]:
    """The ids of `table`'s rows that belong to the customer (`table` from TABLES_KEYED_BY_CUSTOMER)."""
    if table not in TABLES_KEYED_BY_CUSTOMER:
        raise ValueError(f"{table} is not keyed by customer")
    rows = await session.execute(text(f"SELECT id FROM {table} WHERE customer_id = :c ORDER BY id"), {"c": customer_id})
    return [r.id for r in rows]


async def metric_point_ids(session: AsyncSession, *, conversation_ids: Sequence[uuid.UUID]) -> list[int]:
    """The metric points recorded for these conversations (they follow their conversation)."""
    rows = await session.execute(
        text("SELECT id FROM agent_metrics WHERE conversation_id = ANY(:ids) ORDER BY id"),
        {"ids": list(conversation_ids)},
    )
    return [r.id for r in rows]


async def reassign(
    session: AsyncSession, *, table: str, ids: Sequence[uuid.UUID], from_customer: uuid.UUID, to_customer: uuid.UUID
) -> list[uuid.UUID]:
    """Move these rows of `table` from one customer to the other; returns the ids that moved.

    Only rows still on `from_customer` move (an unmerge leaves alone what changed hands since).
    """
    if table not in TABLES_KEYED_BY_CUSTOMER:
        raise ValueError(f"{table} is not keyed by customer")
    if not ids:
        return []
    rows = await session.execute(
        text(f"UPDATE {table} SET customer_id = :to WHERE id = ANY(:ids) AND customer_id = :from RETURNING id"),
        {"to": to_customer, "from": from_customer, "ids": list(ids)},
    )
    return sorted(r.id for r in rows)


async def delete_identifiers(session: AsyncSession, *, identifier_ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    """Delete these identifier rows and return each as it was (JSON), so it can be put back exactly."""
    if not identifier_ids:
        return []
    rows = await session.execute(
        text("DELETE FROM customer_identifiers i WHERE id = ANY(:ids) RETURNING to_jsonb(i) AS row"),
        {"ids": list(identifier_ids)},
    )
    return [r.row if isinstance(r.row, dict) else json.loads(r.row) for r in rows]


async def restore_identifiers(session: AsyncSession, *, rows: Sequence[dict[str, Any]]) -> int:
    """Insert identifier rows returned by `delete_identifiers` again; a row whose place is taken is skipped."""
    restored = 0
    for row in rows:
        result = await session.execute(
            text(
                "INSERT INTO customer_identifiers SELECT * FROM "
                "jsonb_populate_record(NULL::customer_identifiers, CAST(:row AS jsonb)) ON CONFLICT DO NOTHING"
            ),
            {"row": json.dumps(row)},
        )
        restored += result.rowcount  # type: ignore[attr-defined]  # CursorResult
    return restored


async def set_profile(session: AsyncSession, *, customer_id: uuid.UUID, values: dict[str, str | None]) -> None:
    """Set some of the customer's profile fields (email, phone, name, company)."""
    unknown = set(values) - set(PROFILE_FIELDS)
    if unknown:
        raise ValueError(f"not profile fields: {sorted(unknown)}")
    if not values:
        return
    assignments = ", ".join(f"{field} = :{field}" for field in values)
    await session.execute(text(f"UPDATE customers SET {assignments} WHERE id = :c"), {**values, "c": customer_id})


async def set_merged_into(session: AsyncSession, *, customer_id: uuid.UUID, target_id: uuid.UUID | None) -> None:
    """Point a merged-away customer at its target (None: it stands on its own again)."""
    await session.execute(
        text("UPDATE customers SET merged_into = :t WHERE id = :c"), {"t": target_id, "c": customer_id}
    )


async def insert_merge(
    session: AsyncSession,
    *,
    source_customer_id: uuid.UUID,
    target_customer_id: uuid.UUID,
    actor: str,
    reason: str,
    moved: dict[str, Any],
) -> StoredMerge:
    """Record a merge and exactly what it moved."""
    row = (
        await session.execute(
            text(
                "INSERT INTO customer_merges (source_customer_id, target_customer_id, actor, reason, moved) "
                f"VALUES (:s, :t, :a, :r, CAST(:m AS jsonb)) RETURNING {_MERGE_COLUMNS}"
            ),
            {
                "s": source_customer_id,
                "t": target_customer_id,
                "a": actor,
                "r": reason,
                "m": json.dumps(moved, default=str),
            },
        )
    ).one()
    return _merge(row)


async def get_merge(session: AsyncSession, *, merge_id: uuid.UUID, lock: bool = False) -> StoredMerge | None:
    """One merge record (locked until the transaction ends with `lock`)."""
    row = (
        await session.execute(
            text(f"SELECT {_MERGE_COLUMNS} FROM customer_merges WHERE id = :m" + (" FOR UPDATE" if lock else "")),
            {"m": merge_id},
        )
    ).one_or_none()
    return _merge(row) if row is not None else None


async def mark_unmerged(session: AsyncSession, *, merge_id: uuid.UUID, actor: str) -> StoredMerge:
    """Record that the merge was undone, by whom and when."""
    row = (
        await session.execute(
            text(
                "UPDATE customer_merges SET unmerged_at = now(), unmerged_by = :a WHERE id = :m "
                f"RETURNING {_MERGE_COLUMNS}"
            ),
            {"a": actor, "m": merge_id},
        )
    ).one()
    return _merge(row)


async def merges_of(session: AsyncSession, *, customer_id: uuid.UUID, limit: int = 100) -> list[StoredMerge]:
    """Merges this customer took part in (either side), latest first."""
    rows = await session.execute(
        text(
            f"SELECT {_MERGE_COLUMNS} FROM customer_merges WHERE source_customer_id = :c OR target_customer_id = :c "
            "ORDER BY merged_at DESC, id LIMIT :n"
        ),
        {"c": customer_id, "n": limit},
    )
    return [_merge(r) for r in rows]


async def database_now(session: AsyncSession) -> datetime:
    """The database's clock (merge times are the database's, so windows are measured on it)."""
    now: datetime = (await session.execute(text("SELECT now()"))).scalar_one()
    return now
