"""Helpers for the workflow tests (kept out of conftest so they can be imported)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities.deps import ActivityDeps
from core.settings import Settings
from workers.registry import activity_callables, workflow_classes, workflow_runner
from workflows.contracts import InboundMessage, SenderIdentity

T = TypeVar("T")


def make_worker(client: Client, settings: Settings, deps: ActivityDeps, *, max_cached_workflows: int = 1000) -> Worker:
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=workflow_classes(),
        workflow_runner=workflow_runner(),
        activities=activity_callables(deps),
        max_cached_workflows=max_cached_workflows,
    )


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 30.0, interval: float = 0.2) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def inbound(
    channel: str = "web_form",
    text_: str = "How do I export a project to CSV?",
    *,
    key: str | None = None,
    message_id: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    name: str = "Lisa Chen",
    subject: str | None = None,
) -> InboundMessage:
    suffix = uuid.uuid4().hex[:10]
    if channel == "whatsapp" and phone is None:
        phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    if channel != "whatsapp" and email is None:
        email = f"lisa.{suffix}@example.com"
    return InboundMessage(
        channel=channel,  # type: ignore[arg-type]
        external_message_id=message_id or f"msg-{suffix}",
        conversation_key=key or (phone if channel == "whatsapp" else f"key-{suffix}"),  # type: ignore[arg-type]
        sender=SenderIdentity(email=email, phone=phone, name=name),
        text=text_,
        received_at=datetime.now(UTC),
        subject=subject,
        # As the Gmail path records a From that Gmail's DKIM/DMARC check authenticated.
        metadata={"sender_authenticated": "true"} if channel == "email" else {},
    )


async def messages_of(sessions: async_sessionmaker[AsyncSession], workflow_id: str) -> list[dict[str, object]]:
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT m.direction, m.role, m.content, m.delivery_status, m.external_message_id, m.channel "
                "FROM messages m JOIN conversations c ON c.id = m.conversation_id "
                "WHERE c.workflow_id = :w ORDER BY m.seq"
            ),
            {"w": workflow_id},
        )
        return [dict(r._mapping) for r in rows]
