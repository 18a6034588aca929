"""The ticket page a reply notice's secure link opens, in a real browser against the running system.

A web-form customer gets the notice email (Gmail fake), opens its link, reads the reply, answers in
the reply box and sees the answer and our next reply appear; a bad link and bad input are refused.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.client import Client

from activities.deps import ActivityDeps
from core.kafka import ensure_topics
from core.settings import Settings
from tests.channels.conftest import scripted_model
from tests.channels.gmail_support import GmailOAuthFake, gmail_settings
from tests.fakes.openai_fake import OpenAIFake
from tests.gateway_server import ThreadedGateway
from tests.workflows.helpers import eventually, make_worker
from workers.bridge import Bridge
from workers.embedded import free_port

try:
    from playwright.async_api import expect
except ImportError:  # CI installs it; elsewhere the browser tests are skipped with the reason
    if os.environ.get("CI"):
        raise
    pytest.skip("the playwright package is missing (pip install playwright)", allow_module_level=True)

LINK = re.compile(r"https?://\S+/support/ticket/TKT-\d+#token=[A-Za-z0-9_-]+")
REPLY_TIMEOUT_MS = 60_000


@dataclass
class LinkStack:
    url: str
    gmail: GmailOAuthFake


@pytest.fixture(scope="module")
async def link_stack(settings: Settings, client: Client, kb_ingested: None) -> AsyncIterator[LinkStack]:
    """The browser suite's stack (uvicorn gateway, Kafka, bridge, worker) with the support mailbox and link secret."""
    suffix = uuid.uuid4().hex[:8]
    port = free_port()
    with GmailOAuthFake() as gmail, OpenAIFake(responder=scripted_model) as model:
        own = gmail_settings(
            settings,
            gmail,
            kafka_topic_inbound=f"test.browser-links.{suffix}",
            kafka_topic_dead_letter=f"test.browser-links.dlq.{suffix}",
            kafka_consumer_group=f"bridge-browser-links-{suffix}",
            temporal_task_queue=f"browser-links-{suffix}",
            public_base_url=f"http://127.0.0.1:{port}",
            ticket_link_secret=SecretStr(f"browser-link-secret-{uuid.uuid4().hex}"),
            openai_api_key=SecretStr("sk-test"),
            openai_base_url=model.api_base,
        )
        await ensure_topics(own)
        deps = ActivityDeps.create(own)
        stop = asyncio.Event()
        bridge_task = asyncio.create_task(Bridge(own).run(stop))
        gateway = ThreadedGateway(own, port)
        await asyncio.to_thread(gateway.start)
        try:
            async with make_worker(client, own, deps):
                yield LinkStack(gateway.url, gmail)
        finally:
            await asyncio.to_thread(gateway.stop)
            stop.set()
            await asyncio.wait_for(bridge_task, 30)
            await deps.close()


async def ticket_with_notice(stack: Any) -> tuple[str, str]:
    """A web-form ticket whose first reply was posted; returns its number and the notice's link."""
    email = f"mia.{uuid.uuid4().hex[:8]}@example.com"
    form = {
        "name": "Mia",
        "email": email,
        "subject": "Board alerts",
        "category": "how_to",
        "message": "How do I get a Slack message when a card moves?",
    }
    async with httpx.AsyncClient(base_url=stack.url) as http:
        created = await http.post("/api/v1/support/form", json=form)
    assert created.status_code == 201, created.text

    async def link() -> str | None:
        for message in stack.gmail.messages:
            if message.to == email and (found := LINK.search(message.text or "")):
                return found.group(0)
        return None

    return created.json()["ticket_id"], await eventually(link, timeout=60)


async def test_the_link_opens_the_ticket_and_the_answer_continues_the_conversation(
    link_stack: Any, new_page: Any, screenshot_dir: Path
) -> None:
    ticket, link = await ticket_with_notice(link_stack)
    page = await new_page()
    await page.goto(link)
    await expect(page.get_by_role("heading", name=f"Ticket {ticket}", exact=True).first).to_be_visible()
    thread = page.locator("#ticket-thread")
    await expect(thread.locator("li.msg.agent")).to_have_count(1, timeout=REPLY_TIMEOUT_MS)
    await expect(thread.locator("li.msg.agent")).to_contain_text("Thanks for asking!")

    # An empty answer is refused on the page, with nothing sent.
    box = page.get_by_label("Your answer")
    await page.get_by_role("button", name="Send reply").click()
    await expect(page.locator("#reply-message-error")).to_have_text("Write your answer first")
    await expect(box).to_have_attribute("aria-invalid", "true")

    answer = "That worked, thank you. How do I mute a single board?"
    await box.fill(answer)
    await expect(page.locator("#reply-message-error")).to_be_empty()
    await page.get_by_role("button", name="Send reply").click()
    await expect(page.locator("#reply-status")).to_contain_text("Your reply was sent")
    await expect(box).to_have_value("")
    await expect(thread.locator("li.msg.customer")).to_have_count(2, timeout=REPLY_TIMEOUT_MS)
    await expect(thread.locator("li.msg.customer").last).to_contain_text(answer)
    # The same conversation answers it, on the same page.
    await expect(thread.locator("li.msg.agent")).to_have_count(2, timeout=REPLY_TIMEOUT_MS)
    await page.screenshot(path=str(screenshot_dir / "ticket-link-page.png"), full_page=True)


async def test_a_wrong_or_incomplete_link_shows_why_and_no_reply_box(link_stack: Any, new_page: Any) -> None:
    ticket, link = await ticket_with_notice(link_stack)
    page = await new_page()
    token = link.rsplit("=", 1)[1]
    await page.goto(link.replace(token, token[::-1]))
    problem = page.locator("#link-problem")
    await expect(problem).to_be_visible()
    await expect(problem).to_contain_text(f"does not open ticket {ticket}")
    await expect(page.locator("#reply")).to_be_hidden()

    await page.goto(f"{link_stack.url}/support/ticket/{ticket}")  # the token cut off
    await expect(problem).to_contain_text("This link is incomplete")
    await expect(page.locator("#reply")).to_be_hidden()

    # A link pasted with ?token= still works, and the token leaves the query string.
    await page.goto(link.replace("#token=", "?token="))
    await expect(page.locator("#reply")).to_be_visible()
    assert "?token=" not in page.url and "#token=" in page.url
