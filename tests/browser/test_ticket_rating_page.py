"""The ticket page's "How did we do?" in a real browser, against the real gateway (uvicorn).

The conversation behind each ticket is the test-only `RatingContractWorkflow`
(tests/gateway/rating_helpers.py), which keeps the `rate_conversation` contract on the session's
real Temporal server; the rows are in the session's PostgreSQL. An email's rating link preselects
its score and waits for Send; the page's own buttons, a low score, and a second rating.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.settings import Settings
from core.ticket_links import rating_link, ticket_link
from tests.gateway.rating_helpers import ClosedTicket, RatingContractWorkflow, closed_ticket, contract_worker
from tests.gateway_server import ThreadedGateway
from workers.embedded import free_port
from workflows.contracts import Rating

try:
    from playwright.async_api import expect
except ImportError:  # CI installs it; elsewhere the browser tests are skipped with the reason
    if os.environ.get("CI"):
        raise
    pytest.skip("the playwright package is missing (pip install playwright)", allow_module_level=True)

SECRET = f"browser-rating-secret-{uuid.uuid4().hex}"


@dataclass
class RatingPage:
    url: str
    client: Client
    sessions: async_sessionmaker[AsyncSession]
    task_queue: str

    async def ticket(self) -> ClosedTicket:
        return await closed_ticket(self.client, self.sessions, task_queue=self.task_queue, secret=SECRET)


@pytest.fixture(scope="module")
async def rating_page(
    settings: Settings, client: Client, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[RatingPage]:
    port = free_port()
    own = settings.model_copy(
        update={
            "temporal_task_queue": f"browser-rating-{uuid.uuid4().hex[:8]}",
            "ticket_link_secret": SecretStr(SECRET),
            "public_base_url": f"http://127.0.0.1:{port}",
        }
    )
    gateway = ThreadedGateway(own, port)
    await asyncio.to_thread(gateway.start)
    try:
        async with contract_worker(client, own.temporal_task_queue):
            yield RatingPage(gateway.url, client, sessions, own.temporal_task_queue)
    finally:
        await asyncio.to_thread(gateway.stop)


async def test_an_emailed_rating_link_preselects_its_score_and_waits_for_send(
    rating_page: RatingPage, new_page: Any, screenshot_dir: Path
) -> None:
    ticket = await rating_page.ticket()
    page = await new_page()
    await page.goto(rating_link(rating_page.url, ticket.number, ticket.token, 4))
    await expect(page.get_by_role("heading", name="How did we do?")).to_be_visible()
    await expect(page.get_by_role("radio", name="4 — good")).to_be_checked()
    for other in ("1 — very poor", "2 — poor", "3 — okay", "5 — excellent"):
        await expect(page.get_by_role("radio", name=other)).not_to_be_checked()
    send = page.get_by_role("button", name="Send rating")
    await expect(send).to_be_focused()
    # Opening the link rated nothing (a mail scanner opens links too): only Send does.
    await asyncio.sleep(1)
    assert await ticket.handle.query(RatingContractWorkflow.received) == []
    # The conversation is closed: no reply box, the closed note instead.
    await expect(page.locator("#reply")).to_be_hidden()
    await expect(page.locator("#closed-note")).to_be_visible()

    await page.get_by_label("Anything you would like to add? (optional)").fill("Clear steps, thanks.")
    await page.screenshot(path=str(screenshot_dir / "ticket-rating.png"), full_page=True)
    await send.click()
    await expect(page.locator("#rating-status")).to_have_text("Thank you! Your rating helps us improve.")
    await expect(page.locator("#rating-form")).to_be_hidden()
    received = await ticket.handle.query(RatingContractWorkflow.received)
    assert received == [Rating(score=4, comment="Clear steps, thanks.", via="email_link")]


async def test_the_page_buttons_a_low_score_and_a_second_rating(rating_page: RatingPage, new_page: Any) -> None:
    ticket = await rating_page.ticket()
    page = await new_page()
    await page.goto(ticket_link(rating_page.url, ticket.number, ticket.token))
    await expect(page.get_by_role("group", name="Your rating of our help with this request")).to_be_visible()
    send = page.get_by_role("button", name="Send rating")
    await expect(send).not_to_be_focused()
    # No score chosen: the page says so and sends nothing.
    await send.click()
    await expect(page.locator("#rating-score-error")).to_have_text("Choose a score from 1 to 5")
    await page.get_by_text("2 — poor").click()
    await expect(page.get_by_role("radio", name="2 — poor")).to_be_checked()
    await expect(page.locator("#rating-score-error")).to_be_empty()
    await send.click()
    await expect(page.locator("#rating-status")).to_have_text(
        "Sorry to hear that — a person from our team will follow up."
    )
    (received,) = await ticket.handle.query(RatingContractWorkflow.received)
    assert (received.score, received.comment, received.via) == (2, None, "ticket_page")

    # The page opened again later: the workflow has its rating, and the page says so in words.
    await page.reload()
    await page.get_by_role("radio", name="5 — excellent").check()
    await send.click()
    status = page.locator("#rating-status")
    await expect(status).to_have_text("This conversation has already been rated. Thank you!")
    await expect(status).not_to_contain_text("409")

    # The rating window has closed (the workflow ended): a sentence too.
    await ticket.handle.signal(RatingContractWorkflow.finish)
    await ticket.handle.result()
    await page.reload()
    await page.get_by_role("radio", name="3 — okay").check()
    await send.click()
    await expect(status).to_have_text("The time to rate this conversation has passed. Thank you all the same.")
