"""One customer's personal data, everywhere the CRM keeps it: read for a GDPR export, redacted for an erasure.

"The customer" is a record and the merged-away records whose `merged_into` chain leads to it (the
same person, kept as tombstones so an unmerge could restore them). Rows are read as JSON
(`to_jsonb`), so an export lists every column, including ones added after this module was written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# What an erased message's content becomes (the column is NOT NULL; an empty body would look like a bug).
ERASED_MARKER = "[erased]"


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def customer_and_merged_away(session: AsyncSession, *, customer_id: uuid.UUID) -> list[uuid.UUID]:
    """The customer's id first, then every customer merged into it, directly or through a chain."""
    rows = await session.execute(
        text(
            "WITH RECURSIVE tree(id, depth) AS (SELECT CAST(:c AS uuid), 0 UNION ALL "
            "SELECT c.id, t.depth + 1 FROM customers c JOIN tree t ON c.merged_into = t.id WHERE t.depth < 100) "
            "SELECT id FROM tree ORDER BY depth, id"
        ),
        {"c": customer_id},
    )
    return [r.id for r in rows]


async def _rows(session: AsyncSession, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [_json(r.row) for r in await session.execute(text(sql), params)]


async def export_rows(session: AsyncSession, *, customer_ids: Sequence[uuid.UUID]) -> dict[str, list[dict[str, Any]]]:
    """Every row that belongs to these customers, per table, as JSON objects (all columns)."""
    ids = {"ids": list(customer_ids)}
    conversation_ids = [
        r.id
        for r in await session.execute(
            text("SELECT id FROM conversations WHERE customer_id = ANY(:ids) ORDER BY started_at, id"), ids
        )
    ]
    convs = {"convs": conversation_ids}
    return {
        "customers": await _rows(
            session,
            "SELECT to_jsonb(c) AS row FROM customers c WHERE id = ANY(:ids) ORDER BY created_at, id",
            ids,
        ),
        "identifiers": await _rows(
            session,
            "SELECT to_jsonb(i) || jsonb_build_object('verified', i.verified_at IS NOT NULL) AS row "
            "FROM customer_identifiers i WHERE customer_id = ANY(:ids) ORDER BY created_at, id",
            ids,
        ),
        # The token's hash is a secret of ours, not the customer's data.
        "identity_confirmations": await _rows(
            session,
            "SELECT to_jsonb(x) - 'token_hash' AS row FROM identity_confirmations x "
            "WHERE customer_id = ANY(:ids) ORDER BY created_at, id",
            ids,
        ),
        "conversations": await _rows(
            session,
            "SELECT to_jsonb(c) AS row FROM conversations c WHERE id = ANY(:convs) ORDER BY started_at, id",
            convs,
        ),
        "messages": await _rows(
            session,
            "SELECT to_jsonb(m) AS row FROM messages m WHERE conversation_id = ANY(:convs) ORDER BY created_at, id",
            convs,
        ),
        "tickets": await _rows(
            session,
            "SELECT to_jsonb(t) AS row FROM tickets t WHERE customer_id = ANY(:ids) "
            "OR conversation_id = ANY(:convs) ORDER BY created_at, id",
            {**ids, **convs},
        ),
        "escalations": await _rows(
            session,
            "SELECT to_jsonb(e) AS row FROM escalations e WHERE conversation_id = ANY(:convs) ORDER BY created_at, id",
            convs,
        ),
        # The model's output and the tool results of each turn (what the AI read and wrote).
        "agent_steps": await _rows(
            session,
            "SELECT to_jsonb(s) AS row FROM agent_steps s WHERE conversation_id = ANY(:convs) "
            "ORDER BY conversation_id, turn, step, created_at",
            convs,
        ),
        # What the team wrote about the customer's conversations (internal notes, migration 0012).
        "notes": await _rows(
            session,
            "SELECT to_jsonb(n) AS row FROM conversation_notes n WHERE conversation_id = ANY(:convs) "
            "ORDER BY created_at, id",
            convs,
        ),
        # Who merged what; `moved` (row snapshots) is the CRM's bookkeeping, left out.
        "merges": await _rows(
            session,
            "SELECT to_jsonb(m) - 'moved' AS row FROM customer_merges m WHERE source_customer_id = ANY(:ids) "
            "OR target_customer_id = ANY(:ids) ORDER BY merged_at, id",
            ids,
        ),
    }


async def workflow_ids(session: AsyncSession, *, customer_ids: Sequence[uuid.UUID]) -> list[str]:
    """The workflow ids of these customers' conversations (one workflow per conversation)."""
    rows = await session.execute(
        text("SELECT DISTINCT workflow_id FROM conversations WHERE customer_id = ANY(:ids) ORDER BY workflow_id"),
        {"ids": list(customer_ids)},
    )
    return [r.workflow_id for r in rows]


async def erase(session: AsyncSession, *, customer_ids: Sequence[uuid.UUID], erased_by: str) -> dict[str, int]:
    """Redact or delete every piece of these customers' personal data; the rows that others reference stay.

    Message bodies become ERASED_MARKER (attachments and provider attributes emptied); conversations
    lose their subject, and their key and workflow id (which hold a phone number or an address) become
    `erased:<id>`; open ones are closed, open escalations resolved by `erased_by`; tickets lose their
    subject, contact address and notes; the model's steps are deleted; human replies kept in the audit
    trail are removed from it; the team's internal notes and unapproved KB suggestions are deleted;
    identifiers and confirmations are deleted; merge records lose their reason and row snapshots; the
    customer rows keep only their id, plan and dates. Returns counts.
    """
    ids = {"ids": list(customer_ids)}
    counts: dict[str, int] = {}

    async def run(name: str, sql: str, params: dict[str, Any]) -> None:
        result = await session.execute(text(sql), params)
        counts[name] = result.rowcount  # type: ignore[attr-defined]  # CursorResult

    convs_sql = "SELECT id FROM conversations WHERE customer_id = ANY(:ids)"
    await run(
        "messages",
        f"UPDATE messages SET content = :marker, attachments = '[]', attributes = '{{}}' "
        f"WHERE conversation_id IN ({convs_sql})",
        {**ids, "marker": ERASED_MARKER},
    )
    await run("agent_steps", f"DELETE FROM agent_steps WHERE conversation_id IN ({convs_sql})", ids)
    await run("notes", f"DELETE FROM conversation_notes WHERE conversation_id IN ({convs_sql})", ids)
    # Suggested KB entries quote the customer; the approved ones were reviewed into knowledge-base
    # articles, and what stays of them is that reviewed text.
    await run(
        "kb_suggestions",
        f"DELETE FROM kb_suggestions WHERE status <> 'approved' AND conversation_id IN ({convs_sql})",
        ids,
    )
    await run(
        "human_actions",
        f"UPDATE human_actions SET detail = detail - 'reply' WHERE conversation_id IN ({convs_sql}) "
        "AND detail ? 'reply'",
        ids,
    )
    await run(
        "escalations",
        "UPDATE escalations SET status = 'resolved', resolved_by = :by, resolution_action = 'close', "
        f"resolved_at = now(), updated_at = now() WHERE status = 'open' AND conversation_id IN ({convs_sql})",
        {**ids, "by": erased_by},
    )
    await run(
        "tickets",
        "UPDATE tickets SET subject = NULL, contact_email = NULL, resolution_notes = NULL, "
        "status = CASE WHEN status IN ('resolved', 'closed') THEN status ELSE 'closed' END, "
        "resolved_at = coalesce(resolved_at, now()) "
        f"WHERE customer_id = ANY(:ids) OR conversation_id IN ({convs_sql})",
        ids,
    )
    await run(
        "conversations",
        "UPDATE conversations SET subject = NULL, conversation_key = 'erased:' || id, "
        "workflow_id = 'erased:' || id, workflow_run_id = NULL, "
        "status = 'closed', ended_at = coalesce(ended_at, now()) WHERE customer_id = ANY(:ids)",
        ids,
    )
    await run("identifiers", "DELETE FROM customer_identifiers WHERE customer_id = ANY(:ids)", ids)
    await run("identity_confirmations", "DELETE FROM identity_confirmations WHERE customer_id = ANY(:ids)", ids)
    await run(
        "merges",
        "UPDATE customer_merges SET reason = :marker, moved = '{}' "
        "WHERE source_customer_id = ANY(:ids) OR target_customer_id = ANY(:ids)",
        {**ids, "marker": ERASED_MARKER},
    )
    await run(
        "customers",
        "UPDATE customers SET email = NULL, phone = NULL, name = NULL, company = NULL, attributes = '{}', "
        "erased_at = now() WHERE id = ANY(:ids)",
        ids,
    )
    return counts
