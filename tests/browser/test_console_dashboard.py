"""The agent console's dashboard in real Chromium: the figures it shows are the API's, every chart is
drawn (Chart.js) with its text summary and table, CSAT equals the API's, and the period switch
loads the week. A screenshot of the dashboard with data is saved.

The rows are written straight into the CRM (the day tests/crm/test_report_figures.py computes by
hand, placed so it ends an hour ago). The database is shared, so the comparison is with what the
API answers, not with the hand-computed numbers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from crm.db import transaction
from gateway.agents import create_api_key
from tests.crm.report_rows import seed_known_day
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


def _figures(s: dict[str, Any]) -> dict[str, Any]:
    """What each stat card shows (data-figure → the API's value)."""
    return {
        "conversations": s["conversations"],
        "closed": s["outcomes"]["closed"],
        "resolution_rate": s["outcomes"]["resolution_rate"],
        "automation_rate": s["outcomes"]["automation_rate"],
        "open_with_human": s["open_with_human"],
        "escalations": s["escalations"],
        "sla_breached": s["sla"]["breached"],
        "first_response_p50": s["first_response"]["p50_seconds"],
        "first_response_p95": s["first_response"]["p95_seconds"],
        "human_first_response_p50": s["human_first_response"]["p50_seconds"],
        "average_sentiment": s["sentiment"]["average"],
        "cost_per_resolution": s["model"]["cost_per_resolution_usd"],
    }


def _stable(s: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in s.items() if k not in ("computed_at", "open_with_human")}


async def test_the_dashboard_shows_the_apis_figures_as_charts(
    gateway_url: str, new_page: Any, screenshot_dir: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=26)
    async with transaction(sessions) as session:
        await seed_known_day(session, start)
        _, key = await create_api_key(session, name="Dana Dashboard")

    page = await new_page(1440, 1100)
    await page.goto(f"{gateway_url}/agent")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    async with page.expect_response(lambda r: "/api/v1/reports/summary?window=day" in r.url) as answered:
        await page.get_by_role("button", name="Dashboard").click()
    shown_summary = await (await answered.value).json()
    dashboard = page.get_by_test_id("dashboard")
    await expect(dashboard).to_have_attribute("data-loaded-window", "day")
    await expect(page.locator("#console")).to_be_hidden()

    # The figures the page received are the API's (asked again, independently, with the same key).
    async with httpx.AsyncClient(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}) as http:
        api = (await http.get("/api/v1/reports/summary", params={"window": "day"})).json()
        series = (await http.get("/api/v1/reports/series", params={"window": "day"})).json()
    assert _stable(shown_summary) == _stable(api)
    assert api["conversations"] >= 3 and api["unanswered_questions"], api

    # Every card holds the API's number, and shows it.
    for name, value in _figures(api).items():
        card = page.locator(f'[data-figure="{name}"]')
        shown = await card.get_attribute("data-value")
        assert (shown or None) == value if value is None else float(shown or "nan") == value, (name, shown, value)
    await expect(page.locator('[data-figure="conversations"] dd')).to_contain_text(str(api["conversations"]))
    await expect(page.locator('[data-figure="escalations"] dd')).to_contain_text(str(api["escalations"]))
    rate = api["outcomes"]["resolution_rate"]
    await expect(page.locator('[data-figure="resolution_rate"] dd')).to_contain_text(f"{rate * 100:.1f}%")
    rate = api["outcomes"]["automation_rate"]
    await expect(page.locator('[data-figure="automation_rate"] dd')).to_contain_text(f"{rate * 100:.1f}%")
    await expect(page.locator('[data-figure="sla_breached"] dd')).to_contain_text(
        f"{api['sla']['breached']}of {api['sla']['due']} deadlines passed"
    )
    await expect(page.locator('[data-figure="csat"] dd')).to_contain_text(
        f"{api['csat_average']:.2f} / 5{api['csat_ratings']} ratings"
    )

    # Six charts drawn by Chart.js, each with a summary and a table (24 hourly rows for the day).
    for name in ("volume", "outcomes", "reasons", "channels", "sentiment", "response"):
        drawn = await page.evaluate(f"() => !!window.Chart.getChart(document.getElementById('chart-{name}'))")
        assert drawn, name
        await expect(page.locator(f"#chart-{name}-summary")).not_to_be_empty()
    rows = page.locator("#chart-volume-table tbody tr")
    await expect(rows).to_have_count(len(series["points"]))
    assert len(series["points"]) == 24
    first_row = series["points"][0]
    await expect(rows.first.locator("td").first).to_have_text(str(first_row["conversations"]))
    await expect(page.locator("#chart-outcomes-summary")).to_contain_text(
        f"{api['outcomes']['closed']} closed: {api['outcomes']['resolved_by_ai']} resolved by the AI"
    )
    top = api["unanswered_questions"][0]
    await expect(page.get_by_test_id("unanswered").locator("li").first).to_contain_text(
        f"{top['count']} \u00d7 “{top['text']}”"
    )
    await page.screenshot(path=str(screenshot_dir / "console-dashboard.png"), full_page=True)

    # The week: seven daily buckets, and the week's own figures.
    async with page.expect_response(lambda r: "/api/v1/reports/summary?window=week" in r.url) as answered:
        await page.get_by_role("button", name="Last week").click()
    week = await (await answered.value).json()
    await expect(dashboard).to_have_attribute("data-loaded-window", "week")
    await expect(page.locator("#chart-volume-table tbody tr")).to_have_count(7)
    shown = await page.locator('[data-figure="conversations"]').get_attribute("data-value")
    assert shown == str(week["conversations"])
    assert week["conversations"] >= api["conversations"]
    await expect(page.get_by_test_id("dashboard-window")).to_contain_text("Last week")

    # Back to the queue, and signing out hides the dashboard.
    await page.get_by_role("button", name="Escalations").click()
    await expect(page.locator("#console")).to_be_visible()
    await expect(dashboard).to_be_hidden()
