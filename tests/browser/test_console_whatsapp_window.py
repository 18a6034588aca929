"""The agent console in real Chromium: before a human answers a WhatsApp customer who last wrote
more than 24 hours ago, the reply box says how the reply will go out (here: the approved template).

The gateway runs under uvicorn against the session's PostgreSQL; the escalated conversations are
written straight into the CRM, the customer's message with a timestamp 25 hours old (no workflow
runs, nothing is sent). Their escalations are resolved afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings, reset_settings_cache
from crm.db import transaction
from gateway.agents import create_api_key
from tests.crm import customer_records as rec
from tests.gateway_server import ThreadedGateway
from workers.embedded import free_port

try:
    from playwright.async_api import expect
except ImportError:  # CI installs it; elsewhere the browser tests are skipped with the reason
    if os.environ.get("CI"):
        raise
    pytest.skip("the playwright package is missing (pip install playwright)", allow_module_level=True)

CONTENT_SID = "HX" + "0badc0de" * 4


@pytest.fixture
def template_configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The gateway's own settings, and the process settings the conversation view falls back to.
    monkeypatch.setenv("WHATSAPP_LATE_REPLY_CONTENT_SID", CONTENT_SID)
    reset_settings_cache()
    yield
    monkeypatch.delenv("WHATSAPP_LATE_REPLY_CONTENT_SID")
    reset_settings_cache()


async def _whatsapp_escalation(session: AsyncSession, *, name: str, wrote_hours_ago: float) -> tuple[uuid.UUID, str]:
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    who = await rec.customer(session, name=name, phone=phone)
    conv = await session.scalar(
        text(
            "INSERT INTO conversations (customer_id, channel, conversation_key, workflow_id, status) "
            "VALUES (:c, 'whatsapp', :k, :w, 'escalated') RETURNING id"
        ),
        {"c": who.customer_id, "k": phone, "w": f"conversation-test-whatsapp-{phone}"},
    )
    await session.execute(
        text(
            "INSERT INTO messages (conversation_id, channel, direction, role, content, external_message_id, "
            "delivery_status, created_at) VALUES (:c, 'whatsapp', 'inbound', 'customer', :b, :x, 'received', :at)"
        ),
        {
            "c": conv,
            "b": "My invoices are missing",
            "x": f"SM{uuid.uuid4().hex}",
            "at": datetime.now(UTC) - timedelta(hours=wrote_hours_ago),
        },
    )
    ticket = await session.scalar(
        text(
            "INSERT INTO tickets (conversation_id, customer_id, source_channel) VALUES (:c, :cu, 'whatsapp') "
            "RETURNING ticket_number"
        ),
        {"c": conv, "cu": who.customer_id},
    )
    await session.execute(
        text(
            "INSERT INTO escalations (conversation_id, reason, priority, sla_due_at) "
            "VALUES (:c, 'refund', 'high', now() + interval '2 hours')"
        ),
        {"c": conv},
    )
    assert conv is not None and ticket is not None
    return conv, str(ticket)


async def test_the_reply_box_says_a_late_whatsapp_reply_goes_as_the_template(
    settings: Settings, template_configured: None, new_page: Any, sessions: async_sessionmaker[AsyncSession]
) -> None:
    t = rec.tag()
    async with transaction(sessions) as session:
        late_conv, late_ticket = await _whatsapp_escalation(session, name=f"Lena Late {t}", wrote_hours_ago=25)
        fresh_conv, fresh_ticket = await _whatsapp_escalation(session, name=f"Finn Fresh {t}", wrote_hours_ago=2)
        _, key = await create_api_key(session, name=f"Wen Window {t}")
    gateway = ThreadedGateway(settings.model_copy(update={"whatsapp_late_reply_content_sid": CONTENT_SID}), free_port())
    await asyncio.to_thread(gateway.start)
    try:
        page = await new_page(1280, 900)
        await page.goto(f"{gateway.url}/agent?conversation={late_conv}")
        await page.get_by_label("API key").fill(key)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#conversation-title")).to_contain_text(late_ticket)
        notice = page.locator("#whatsapp-window")
        await expect(notice).to_be_visible()
        await expect(notice).to_contain_text("The 24-hour WhatsApp window closed at")
        await expect(notice).to_contain_text("this reply will go as the approved template message")
        # Next to the reply box, before anything is sent.
        await expect(page.get_by_label("Reply to the customer")).to_be_visible()
        await expect(page.locator("#reply-status")).to_have_text("")

        await page.goto(f"{gateway.url}/agent?conversation={fresh_conv}")
        await expect(page.locator("#conversation-title")).to_contain_text(fresh_ticket)
        await expect(page.get_by_label("Reply to the customer")).to_be_visible()
        await expect(notice).to_be_hidden()  # inside the window: the reply goes as typed
    finally:
        await asyncio.to_thread(gateway.stop)
        async with transaction(sessions) as session:
            await session.execute(
                text(
                    "UPDATE escalations SET status = 'resolved', resolved_by = 'test', resolution_action = 'close', "
                    "resolved_at = now() WHERE status = 'open' AND conversation_id = ANY(:c)"
                ),
                {"c": [late_conv, fresh_conv]},
            )
