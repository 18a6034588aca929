"""The agent console in real Chromium: the queue by priority with filters and counts, an internal
note beside the messages, and a saved reply inserted with its placeholders filled.

The gateway runs under uvicorn against the session's PostgreSQL; the escalated conversations are
written straight into the CRM (no workflow runs: nothing here talks to one). The database is
shared, so the checks look at this test's tickets, and its escalations are resolved afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
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


async def _escalated(
    session: AsyncSession, *, name: str, channel: str, reason: str, priority: str, due_in: timedelta, body: str
) -> tuple[uuid.UUID, str]:
    who = await rec.customer(session, name=name, email=f"{rec.tag()}@example.com")
    conv = await rec.conversation(session, who, channel=channel, body=body)
    await session.execute(
        text(
            "INSERT INTO escalations (conversation_id, ticket_id, reason, priority, sla_due_at) "
            "VALUES (:c, :t, :r, :p, :due)"
        ),
        {"c": conv, "t": who.ticket_ids[0], "r": reason, "p": priority, "due": datetime.now(UTC) + due_in},
    )
    number = await session.scalar(text("SELECT ticket_number FROM tickets WHERE id = :t"), {"t": who.ticket_ids[0]})
    return conv, str(number)


async def test_filter_the_queue_add_a_note_and_insert_a_saved_reply(
    gateway_url: str, new_page: Any, screenshot_dir: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    t = rec.tag()
    agent_name = f"Riley Agent {t}"
    async with transaction(sessions) as session:
        _, urgent = await _escalated(
            session,
            name=f"Uma Urgent {t}",
            channel="whatsapp",
            reason="security",
            priority="urgent",
            due_in=timedelta(hours=2),
            body="Someone logged into my account from abroad",
        )
        _, breached = await _escalated(
            session,
            name=f"Bea Breached {t}",
            channel="email",
            reason="refund",
            priority="high",
            due_in=-timedelta(minutes=30),
            body="I want my money back",
        )
        dana_conv, dana = await _escalated(
            session,
            name="Dana Scully",
            channel="web_form",
            reason="pricing",
            priority="low",
            due_in=timedelta(hours=1),
            body=f"How much for 40 seats? {t}",
        )
        _, key = await create_api_key(session, name=agent_name)
    mine = (urgent, breached, dana)

    try:
        page = await new_page(1440, 1100)
        await page.goto(f"{gateway_url}/agent")
        await page.get_by_label("API key").fill(key)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#who")).to_contain_text(agent_name)

        # Most urgent first, then SLA due soonest: urgent, high (breached), low.
        queue = page.locator("#queue .queue-item")
        await expect(page.locator(f'.queue-item[data-ticket="{dana}"]')).to_be_visible()

        async def our_order() -> list[str]:
            tickets = await queue.evaluate_all("items => items.map(i => i.dataset.ticket)")
            return [ticket for ticket in tickets if ticket in mine]

        assert await our_order() == [urgent, breached, dana]
        counts = page.locator("#queue-counts")
        await expect(counts).to_have_text(re.compile(r"^\d+ urgent · .*\d+ breached$"))
        await expect(page.locator("#queue-note")).to_contain_text("Most urgent first")

        # Filters: priority, breached, channel, reason, a ticket number; the counts follow.
        await page.locator("#filter-priority").select_option("urgent")
        await expect(page.locator(f'.queue-item[data-ticket="{dana}"]')).to_have_count(0)
        await expect(page.locator(f'.queue-item[data-ticket="{urgent}"]')).to_be_visible()
        await expect(counts).to_have_text(re.compile(r"^\d+ urgent · \d+ breached$"))
        await page.get_by_role("button", name="Clear filters").click()
        await page.get_by_label("SLA breached only").check()
        await expect(page.locator(f'.queue-item[data-ticket="{urgent}"]')).to_have_count(0)
        await expect(page.locator(f'.queue-item[data-ticket="{breached}"]')).to_be_visible()
        await expect(page.locator(".queue-item:not(.overdue)")).to_have_count(0)
        await page.get_by_label("SLA breached only").uncheck()
        await page.locator("#filter-channel").select_option("email")
        await page.locator("#filter-reason").select_option("refund")
        await expect(page.locator(f'.queue-item[data-ticket="{breached}"]')).to_be_visible()
        await expect(page.locator(f'.queue-item[data-ticket="{urgent}"]')).to_have_count(0)
        await page.get_by_role("button", name="Clear filters").click()
        search = page.get_by_label("Ticket number")
        await search.fill("TKT-%")
        await expect(page.locator("#filter-ticket-error")).to_contain_text("Letters, digits and '-' only")
        await search.fill(dana.removeprefix("TKT-"))
        await expect(queue).to_have_count(1)
        await expect(queue.first).to_have_attribute("data-ticket", dana)
        await expect(counts).to_have_text("1 low · 0 breached")
        await expect(page.locator("#queue-count")).to_have_text("1")
        await page.screenshot(path=str(screenshot_dir / "console-queue-filtered.png"), full_page=True)

        # An internal note, shown beside the messages, unmistakably not sent.
        await queue.first.click()
        await expect(page.locator("#conversation-title")).to_contain_text(dana)
        await page.get_by_role("button", name="Add note").click()
        await expect(page.locator("#note-error")).to_contain_text("Write the note first")
        note_text = f"Legacy contract: check with billing before quoting {t}"
        await page.get_by_label("Internal note").fill(note_text)
        await page.get_by_role("button", name="Add note").click()
        await expect(page.locator("#note-status")).to_contain_text("Note added")
        note = page.locator("#thread li.msg.note")
        await expect(note).to_contain_text(note_text)
        await expect(note).to_contain_text("Internal — not sent to the customer")
        await expect(note).to_contain_text(f"Internal note · {agent_name}")
        roles = await page.locator("#thread li").evaluate_all("items => items.map(i => i.dataset.role)")
        assert roles[-1] == "note" and sorted(roles[:-1]) == ["agent", "customer"], "in time order, after the rest"
        await expect(page.locator("#audit")).to_contain_text("note.added")
        async with sessions() as session:
            stored = await session.scalar(
                text("SELECT count(*) FROM messages WHERE conversation_id = :c AND content LIKE :n"),
                {"c": dana_conv, "n": f"%{t}%Legacy%"},
            )
            notes = await session.scalar(
                text("SELECT count(*) FROM conversation_notes WHERE conversation_id = :c"), {"c": dana_conv}
            )
        assert stored == 0 and notes == 1, "a note is never a message"

        # A saved reply: an unknown placeholder is refused with its name, then saved and inserted filled in.
        title = f"Quote follow-up {t}"
        await page.get_by_label("Title").fill(title)
        await page.get_by_label("Text", exact=True).fill("Hi {first_name}, about {order}: ...")
        await page.get_by_role("button", name="Save", exact=True).click()
        await expect(page.locator("#saved-reply-body-error")).to_contain_text("unknown placeholder(s) {order}")
        await page.get_by_label("Text", exact=True).fill(
            "Hi {first_name}, a quote for {ticket} is on its way. Best, {agent_name}"
        )
        await page.get_by_role("button", name="Save", exact=True).click()
        await expect(page.locator("#saved-replies-status")).to_contain_text(f"Saved “{title}”")
        await expect(page.locator("#saved-replies")).to_contain_text(title)

        await page.get_by_label("Saved reply", exact=True).select_option(label=title)
        await page.get_by_role("button", name="Insert").click()
        reply = page.get_by_label("Reply to the customer")
        await expect(reply).to_have_value(f"Hi Dana, a quote for {dana} is on its way. Best, {agent_name}")
        await expect(reply).to_be_focused()
        await page.screenshot(path=str(screenshot_dir / "console-note-saved-reply.png"), full_page=True)

        # Edit it (the picker follows), then delete it.
        await page.get_by_role("button", name=f"Edit {title}").click()
        await expect(page.get_by_label("Title")).to_be_focused()
        await page.get_by_label("Text", exact=True).fill("Thanks {first_name}! {agent_name}")
        await page.get_by_role("button", name="Save", exact=True).click()
        await expect(page.locator("#saved-replies-status")).to_contain_text(f"Updated “{title}”")
        await page.get_by_label("Reply to the customer").fill("")
        await page.get_by_role("button", name="Insert").click()
        await expect(page.get_by_label("Reply to the customer")).to_have_value(f"Thanks Dana! {agent_name}")
        await page.get_by_role("button", name=f"Delete {title}").click()
        await expect(page.locator("#saved-replies-status")).to_contain_text(f"Deleted “{title}”")
        await expect(page.locator("#saved-replies")).not_to_contain_text(title)
        picker = page.get_by_label("Saved reply", exact=True)
        await expect(picker.locator("option", has_text=title)).to_have_count(0)
    finally:
        async with transaction(sessions) as session:
            await session.execute(
                text(
                    "UPDATE escalations SET status = 'resolved', resolved_by = 'test', resolution_action = 'close', "
                    "resolved_at = now() WHERE status = 'open' AND conversation_id IN "
                    "(SELECT conversation_id FROM tickets WHERE ticket_number = ANY(:n))"
                ),
                {"n": list(mine)},
            )


async def test_a_notifications_link_opens_its_conversation_after_sign_in(
    gateway_url: str, new_page: Any, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Team notifications link to /agent?conversation=<id> (workflows.notification_contracts).
    t = rec.tag()
    async with transaction(sessions) as session:
        conv, ticket = await _escalated(
            session,
            name=f"Lou Linked {t}",
            channel="whatsapp",
            reason="refund",
            priority="high",
            due_in=timedelta(hours=1),
            body=f"please refund the second charge {t}",
        )
        _, key = await create_api_key(session, name=f"Nico Notified {t}")
    try:
        page = await new_page(1280, 900)
        await page.goto(f"{gateway_url}/agent?conversation={conv}")
        await page.get_by_label("API key").fill(key)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#conversation-title")).to_contain_text(ticket)
        await expect(page.locator("#thread")).to_contain_text(f"please refund the second charge {t}")
    finally:
        async with transaction(sessions) as session:
            await session.execute(
                text("UPDATE escalations SET status = 'resolved' WHERE conversation_id = :c"), {"c": conv}
            )
