"""The console's "Suggested answers" in real Chromium: a resolved `no_answer` gap a person answered is
listed; an agent edits and approves it, and the knowledge-base search finds it right away.

The gap is written straight into the CRM (a customer question, a resolved `no_answer` escalation, a
person's reply as the web channel framed it); listing the panel collects it, as for a one-step resolve.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from crm.db import transaction
from crm.repositories import knowledge_base
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


@pytest.fixture(scope="module")
async def gateway_url(settings: Settings, kb_ingested: None) -> AsyncIterator[str]:
    gateway = ThreadedGateway(settings, free_port())
    await asyncio.to_thread(gateway.start)
    try:
        yield gateway.url
    finally:
        await asyncio.to_thread(gateway.stop)


async def _answered_gap(session: AsyncSession, *, question: str, answer: str, agent: str) -> uuid.UUID:
    """A web-form conversation whose `no_answer` escalation a person answered and closed."""
    who = await rec.customer(session, name="Nia Patel", email=f"{rec.tag()}@example.com")
    conv = await rec.conversation(session, who, channel="web_form")
    now = datetime.now(UTC)
    await session.execute(
        text(
            "INSERT INTO messages (conversation_id, channel, direction, role, content, external_message_id, "
            "delivery_status) VALUES (:c, 'web_form', 'inbound', 'customer', :q, :x, 'received')"
        ),
        {"c": conv, "q": question, "x": f"ext-{rec.tag()}"},
    )
    escalation = await session.scalar(
        text(
            "INSERT INTO escalations (conversation_id, ticket_id, reason, priority, sla_due_at, status, resolved_by, "
            "resolution_action, resolved_at, created_at) VALUES (:c, :t, 'no_answer', 'medium', :due, 'resolved', "
            ":a, 'close', :done, :at) RETURNING id"
        ),
        {
            "c": conv,
            "t": who.ticket_ids[0],
            "due": now + timedelta(hours=2),
            "a": agent,
            "done": now + timedelta(seconds=2),
            "at": now + timedelta(seconds=1),
        },
    )
    framed = f"Hi Nia,\n\n{answer}\n\n— {agent}, TechCorp Support"
    await session.execute(
        text(
            "INSERT INTO messages (conversation_id, channel, direction, role, content, idempotency_key, "
            "delivery_status, attributes, created_at) VALUES (:c, 'web_form', 'outbound', 'human_agent', :b, :k, "
            "'delivered', CAST(:attr AS jsonb), :at)"
        ),
        {
            "c": conv,
            "b": framed,
            "k": f"idem-{rec.tag()}",
            "attr": f'{{"part": 1, "parts": 1, "source": "human", "human_agent": "{agent}"}}',
            "at": now + timedelta(seconds=3),
        },
    )
    assert escalation is not None
    return uuid.UUID(str(escalation))


async def test_approve_a_suggested_answer_and_find_it_in_the_knowledge_base(
    gateway_url: str, new_page: Any, screenshot_dir: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    t = rec.tag()
    agent_name = f"Kim Agent {t}"
    question = f"Can the Orbit {t} barcode scanner send scans straight into TechCorp tasks?"
    answer = f"Yes: pair the Orbit {t} scanner over Bluetooth, then turn on Settings > Devices > Scanner input."
    async with transaction(sessions) as session:
        escalation = await _answered_gap(session, question=question, answer=answer, agent=agent_name)
        _, key = await create_api_key(session, name=agent_name)

    article_id = None
    try:
        page = await new_page(1440, 1400)
        await page.goto(f"{gateway_url}/agent")
        await page.get_by_label("API key").fill(key)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#who")).to_contain_text(agent_name)

        item = page.locator("#kb-suggestions li", has_text=question)
        await expect(item).to_be_visible()
        await expect(item).to_contain_text(answer)
        await expect(item).not_to_contain_text("Hi Nia")  # the channel's greeting is not part of the answer

        # Edit: an empty answer is refused in the form, then a sharper answer is saved.
        await item.get_by_role("button", name="Edit").click()
        answer_field = page.get_by_label("Answer", exact=True)
        await expect(answer_field).to_be_focused()
        await answer_field.fill("  ")
        await page.get_by_role("button", name="Save changes").click()
        await expect(page.locator("#kb-suggestion-answer-error")).to_contain_text("Write the answer")
        edited = answer + " Scans then appear as new tasks."
        await answer_field.fill(edited)
        await page.get_by_role("button", name="Save changes").click()
        await expect(page.locator("#kb-suggestions-status")).to_contain_text("Saved the changes")
        await expect(item).to_contain_text("Scans then appear as new tasks.")
        await page.screenshot(path=str(screenshot_dir / "console-kb-suggestions.png"), full_page=True)

        await item.get_by_role("button", name="Approve").click()
        await expect(page.locator("#kb-suggestions-status")).to_contain_text("now in the knowledge base as learned-")
        await expect(page.locator("#kb-suggestions li", has_text=question)).to_have_count(0)

        async with sessions() as session:
            article_id = await session.scalar(
                text("SELECT article_id FROM kb_suggestions WHERE escalation_id = :e AND status = 'approved'"),
                {"e": escalation},
            )
        assert article_id is not None

        # The same search the AI's tool uses finds it at once.
        async with httpx.AsyncClient(base_url=gateway_url) as http:
            found = await http.get(
                "/api/v1/kb/search",
                params={"q": f"Orbit {t} barcode scanner"},
                headers={"Authorization": f"Bearer {key}"},
            )
        assert found.status_code == 200, found.text
        hit = found.json()["hits"][0]
        assert hit["article_id"] == article_id and "Scans then appear as new tasks." in hit["content"]
    finally:
        if article_id:
            async with transaction(sessions) as session:
                await knowledge_base.delete_articles(session, article_ids=[article_id])
