"""An agent merges two customer records in the agent console (real Chromium), after a preview, and undoes it.

The gateway runs under uvicorn against the session's PostgreSQL and Temporal; the customers, the
escalated conversation and its ticket are written straight into the CRM (no workflow runs, so the
merge reports the conversation's workflow as not told, which the console does not need).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
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


@pytest.fixture(scope="module")
async def gateway_url(settings: Settings) -> AsyncIterator[str]:
    gateway = ThreadedGateway(settings, free_port())
    await asyncio.to_thread(gateway.start)
    try:
        yield gateway.url
    finally:
        await asyncio.to_thread(gateway.stop)


async def test_merge_with_a_preview_then_unmerge_in_the_console(
    gateway_url: str, new_page: Any, screenshot_dir: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    t = rec.tag()
    async with transaction(sessions) as session:
        source = await rec.customer(session, name=f"Sam Source {t}", phone=f"+1555{uuid.uuid4().int % 10**7:07d}")
        target = await rec.customer(session, name=f"Tara Target {t}", email=f"tara.{t}@example.com")
        await rec.identifier(session, target, kind="email", value=f"tara.{t}@example.com", verified=True)
        await rec.conversation(session, source, channel="whatsapp", escalate=True, body=f"Please cancel my plan {t}")
        await rec.conversation(session, target, channel="email", status="closed")
        ticket = await session.scalar(
            text("SELECT ticket_number FROM tickets WHERE id = :t"), {"t": source.ticket_ids[0]}
        )
        _, key = await create_api_key(session, name=f"Console Merger {t}")

    page = await new_page(1440, 1000)
    await page.goto(f"{gateway_url}/agent")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    item = page.locator(f'.queue-item[data-ticket="{ticket}"]')
    await item.click()
    card = page.locator("#customer-card")
    await expect(card).to_contain_text(f"Sam Source {t}")
    await expect(page.locator("#customer-id")).to_have_text(str(source.customer_id))

    # Nothing to merge into: the form says what is missing; an unknown id is refused by the preview.
    await page.get_by_role("button", name="Preview the merge").click()
    await expect(page.locator("#merge-into-error")).to_contain_text("Enter the id")
    await page.get_by_label("Merge this customer into…").fill(str(uuid.uuid4()))
    await page.get_by_label("Reason", exact=True).fill("Same person: confirmed by phone")
    await page.get_by_role("button", name="Preview the merge").click()
    await expect(page.locator("#merge-into-error")).to_contain_text("no customer")

    await page.get_by_label("Merge this customer into…").fill(str(target.customer_id))
    await page.get_by_role("button", name="Preview the merge").click()
    preview = page.locator("#merge-preview-panel")
    await expect(preview).to_be_visible()
    await expect(preview).to_contain_text("1 conversation, 1 ticket")
    await expect(preview).to_contain_text(f"Moves to Tara Target {t}")
    await page.screenshot(path=str(screenshot_dir / "console-merge-preview.png"), full_page=True)
    async with sessions() as session:
        owners = await rec.owner_of(session, "conversations", source.conversation_ids)
    assert owners == {source.customer_id}, "a preview changes nothing"

    await page.get_by_role("button", name="Confirm the merge").click()
    await expect(page.locator("#merge-status")).to_contain_text("Merged: 1 conversation moved")
    # The conversation now belongs to the remaining record, with its other conversation in the history.
    await expect(card).to_contain_text(f"Tara Target {t}")
    await expect(card).to_contain_text(f"tara.{t}@example.com")
    await expect(page.locator("#history details")).to_have_count(1)
    merges = page.locator("#merges")
    await expect(merges).to_contain_text(f"{source.customer_id} merged into {target.customer_id}")
    async with sessions() as session:
        assert await rec.owner_of(session, "conversations", source.conversation_ids) == {target.customer_id}

    await merges.get_by_role("button", name="Unmerge").click()
    await expect(page.locator("#merge-status")).to_contain_text("Unmerged: 1 conversation went back")
    await expect(card).to_contain_text(f"Sam Source {t}")
    await expect(page.locator("#merges")).to_contain_text(re.compile("undone by Console Merger"))
    async with sessions() as session:
        assert await rec.owner_of(session, "conversations", source.conversation_ids) == {source.customer_id}

    # Erasing asks for the customer id typed out; a slip is caught before anything is sent.
    await page.get_by_label("Erase data: type the customer id to confirm").fill("not the id")
    await page.get_by_role("button", name="Erase data").click()
    await expect(page.locator("#erase-confirm-error")).to_contain_text("Type the customer id exactly")
    async with sessions() as session:
        assert (
            await session.scalar(text("SELECT erased_at FROM customers WHERE id = :c"), {"c": source.customer_id})
            is None
        )

    # Export downloads the customer's JSON; the erasure (typed id) redacts it and the console shows it.
    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Export data").click()
    download = await download_info.value
    assert download.suggested_filename == f"customer-{source.customer_id}.json"
    exported = json.loads(Path(await download.path()).read_text())
    assert any(m["content"] == f"Please cancel my plan {t}" for m in exported["messages"])
    await expect(page.locator("#gdpr-status")).to_contain_text("Exported")

    await page.get_by_label("Erase data: type the customer id to confirm").fill(str(source.customer_id))
    await page.get_by_role("button", name="Erase data").click()
    await expect(page.locator("#gdpr-status")).to_contain_text("Erased: 2 messages redacted")
    await expect(card).not_to_contain_text(f"Sam Source {t}")
    await expect(page.locator("#thread")).to_contain_text("[erased]")
    await expect(page.locator("#thread")).not_to_contain_text("Please cancel my plan")
