"""What the human-agent API tests share: keys, a real escalated conversation, the audit trail."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from typer.testing import CliRunner, Result

from core.settings import Settings, reset_settings_cache
from crm.db import transaction
from gateway.agents import SCOPE_READ, SCOPE_WRITE, create_api_key
from tests.workflows.helpers import eventually, inbound, messages_of
from workers.bridge import signal_with_start

PRICING = "How much does the Pro plan cost for 40 users? Can you give us a discount?"


async def new_key(
    sessions: async_sessionmaker[AsyncSession], scopes: tuple[str, ...] = (SCOPE_READ, SCOPE_WRITE)
) -> tuple[str, str]:
    name = f"Agent {uuid.uuid4().hex[:8]}"
    async with transaction(sessions) as session:
        _, key = await create_api_key(session, name=name, scopes=scopes)
    return name, key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def escalate(
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    channel: str = "web_form",
    **kw: Any,
) -> str:
    """Start a real conversation that escalates (pricing) and return its ticket number."""
    message = inbound(channel, PRICING, **kw)
    workflow_id = await signal_with_start(client, settings, message)

    async def escalated() -> str | None:
        async with sessions() as session:
            return await session.scalar(
                text(
                    "SELECT t.ticket_number FROM escalations e JOIN conversations c ON c.id = e.conversation_id "
                    "JOIN tickets t ON t.conversation_id = c.id WHERE c.workflow_id = :w AND e.status = 'open'"
                ),
                {"w": workflow_id},
            )

    ticket = await eventually(escalated)

    async def holding_reply_sent() -> bool:
        rows = await messages_of(sessions, workflow_id)
        return any(r["direction"] == "outbound" and r["delivery_status"] != "pending" for r in rows)

    await eventually(holding_reply_sent)
    return ticket


async def audit_rows(sessions: async_sessionmaker[AsyncSession], ticket: str) -> list[dict[str, Any]]:
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT h.agent_name, h.action, h.detail, h.api_key_id, k.name AS key_name FROM human_actions h "
                "LEFT JOIN api_keys k ON k.id = h.api_key_id WHERE h.ticket_number = :t ORDER BY h.id"
            ),
            {"t": ticket},
        )
        return [dict(r._mapping) for r in rows]


def run_cli(settings: Settings, app: Any, args: list[str]) -> Result:
    """A `crm-fte` sub-command aimed at the test stack, as an operator runs it."""
    env = {
        "DATABASE_URL": settings.database_dsn,
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "TEMPORAL_NAMESPACE": settings.temporal_namespace,
        "LOG_LEVEL": "WARNING",
    }
    reset_settings_cache()
    try:
        return CliRunner().invoke(app, args, env=env)
    finally:
        reset_settings_cache()
