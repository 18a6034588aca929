"""Real headless Chromium (Debian's `chromium`) driven by Playwright against the real gateway.

The gateway runs under uvicorn on a free port in a thread (its own event loop, as in production);
Kafka, the bridge, the Temporal worker and PostgreSQL are the session's real services. Only
Twilio is a fake (an HTTP server the official client talks to); the model is the offline responder.

Playwright's own browser downloads are never used: the browser is /usr/bin/chromium (`.ci/run`
installs it). Outside CI a machine without it skips these tests; in CI (CI=true) it fails.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
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
from tests.fakes.twilio_fake import TwilioFake
from tests.gateway_server import ThreadedGateway
from tests.workflows.helpers import make_worker
from workers.bridge import Bridge
from workers.embedded import free_port

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]


def _require_browser() -> None:
    problem = None
    if not Path(CHROMIUM).exists():
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        problem = "the playwright package is missing (pip install playwright; never `playwright install`)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests need a browser: {problem}")
        pytest.skip(f"browser tests need a browser: {problem}")


@dataclass
class Stack:
    url: str
    settings: Settings
    twilio: TwilioFake
    client: Client


@pytest.fixture(scope="module")
async def stack(settings: Settings, client: Client, kb_ingested: None) -> AsyncIterator[Stack]:
    """Gateway (uvicorn) → Kafka → bridge → Temporal worker → PostgreSQL, on this module's own topics."""
    suffix = uuid.uuid4().hex[:8]
    port = free_port()
    with TwilioFake() as twilio:
        own = settings.model_copy(
            update={
                "kafka_topic_inbound": f"test.browser.{suffix}",
                "kafka_topic_dead_letter": f"test.browser.dlq.{suffix}",
                "kafka_consumer_group": f"bridge-browser-{suffix}",
                "temporal_task_queue": f"browser-{suffix}",
                "twilio_account_sid": twilio.account_sid,
                "twilio_auth_token": SecretStr(twilio.auth_token),
                "twilio_whatsapp_from": "+14155550000",
                "twilio_api_base_url": twilio.base_url,
                "public_base_url": f"http://127.0.0.1:{port}",
            }
        )
        await ensure_topics(own)
        deps = ActivityDeps.create(own)
        stop = asyncio.Event()
        bridge_task = asyncio.create_task(Bridge(own).run(stop))
        gateway = ThreadedGateway(own, port)
        await asyncio.to_thread(gateway.start)
        try:
            async with make_worker(client, own, deps):
                async with httpx.AsyncClient(base_url=gateway.url) as http:
                    assert (await http.get("/livez")).status_code == 200
                yield Stack(gateway.url, own, twilio, client)
        finally:
            await asyncio.to_thread(gateway.stop)
            stop.set()
            await asyncio.wait_for(bridge_task, 30)
            await deps.close()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    _require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def new_page(browser: Any) -> AsyncIterator[Any]:
    """A factory of pages, each in its own context (a customer and an agent are different people)."""
    contexts: list[Any] = []

    async def make(width: int = 1280, height: int = 900) -> Any:
        context = await browser.new_context(
            viewport={"width": width, "height": height}, locale="en-US", timezone_id="UTC", device_scale_factor=1
        )
        contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(15_000)
        return page

    yield make
    for context in contexts:
        await context.close()


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Iterator[Path]:
    """docs/screenshots when SCREENSHOT_DIR asks for it (refreshing the README's pictures), else a temp dir."""
    wanted = os.environ.get("SCREENSHOT_DIR")
    path = (REPO / wanted) if wanted and not Path(wanted).is_absolute() else Path(wanted or tmp_path)
    path.mkdir(parents=True, exist_ok=True)
    yield path
