"""The help centre and the support form's article suggestions, in real Chromium against the real gateway."""

from __future__ import annotations

import re
from typing import Any

import httpx

from gateway.help import HELP_EVENTS
from tests.workflows.helpers import eventually

try:
    from playwright.async_api import expect
except ImportError:  # the browser fixture skips (or fails in CI) with the reason
    expect = None


def _events(name: str) -> float:
    """The gateway runs in this process: its Prometheus counter is readable here."""
    value = HELP_EVENTS.labels(name)._value.get()
    return float(value)


async def test_help_lists_articles_by_category_and_renders_one_safely(stack: Any, new_page: Any) -> None:
    page = await new_page()
    await page.goto(f"{stack.url}/help")
    await expect(page).to_have_title(re.compile("Help centre"))
    await expect(page.get_by_role("heading", name="Integrations", level=2)).to_be_visible()
    # Internal policy articles are never listed.
    assert await page.get_by_role("link", name=re.compile("Escalation rules|Brand voice", re.I)).count() == 0

    await page.get_by_role("link", name="Google Calendar Integration").click()
    await expect(page).to_have_url(f"{stack.url}/help/google-calendar-integration")
    await expect(page.get_by_role("heading", name="Google Calendar Integration", level=1)).to_be_visible()
    # Markdown rendered: real ordered lists, bold, headings with ids that reply links point at.
    steps = page.locator("#connect-your-google-account + ol > li")
    await expect(steps).to_have_count(5)
    await expect(steps.first.locator("strong")).to_contain_text("Account settings")
    await expect(page.locator("#common-problems")).to_be_visible()

    async with httpx.AsyncClient(base_url=stack.url) as http:
        for slug in ("escalation-rules", "brand-voice", "no-such-article", "..%2F..%2Fetc%2Fpasswd", "A" * 200):
            response = await http.get(f"/help/{slug}")
            assert response.status_code in (404, 422), (slug, response.status_code)
            assert "Traceback" not in response.text


async def test_subject_suggestions_and_a_deflection_are_counted(stack: Any, new_page: Any) -> None:
    page = await new_page()
    suggest_calls: list[str] = []
    page.on("request", lambda r: suggest_calls.append(r.url) if "/api/v1/help/suggest" in r.url else None)
    await page.goto(f"{stack.url}/support")
    shown, opened, deflected = _events("shown"), _events("opened"), _events("deflected")

    await page.get_by_label("Subject").press_sequentially("google calendar not syncing", delay=20)
    suggestions = page.locator("#suggestions")
    await expect(suggestions).to_be_visible()
    first = suggestions.get_by_role("link").first
    await expect(first).to_have_text("Google Calendar Integration")
    # Debounced: one request for what was typed, not one per key.
    assert 1 <= len(suggest_calls) <= 3, suggest_calls

    async with page.context.expect_page() as popup:
        await first.click()
    article = await popup.value
    await expect(article.get_by_role("heading", level=1)).to_have_text("Google Calendar Integration")
    await page.close(run_before_unload=True)  # left without sending the form: a deflection

    async def counted() -> bool:
        return _events("deflected") > deflected

    await eventually(counted, timeout=10)
    assert _events("shown") > shown and _events("opened") > opened


async def test_suggest_api_validates_its_input(stack: Any) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as http:
        ok = await http.get("/api/v1/help/suggest", params={"q": "api rate limit 429"})
        assert ok.status_code == 200
        slugs = [a["slug"] for a in ok.json()["articles"]]
        assert "troubleshooting-api-rate-limits" in slugs[:2]
        assert all(a["url"] == f"/help/{a['slug']}" for a in ok.json()["articles"])
        assert (await http.get("/api/v1/help/suggest", params={"q": "zzqx"})).json()["articles"] == []
        for params in ({}, {"q": ""}, {"q": "x" * 201}, {"q": "slack", "limit": "99"}):
            bad = await http.get("/api/v1/help/suggest", params=params)
            assert bad.status_code == 422, params
            assert "Traceback" not in bad.text
        bad_event = await http.post("/api/v1/help/events", json={"event": "hacked", "slug": "<script>"})
        assert bad_event.status_code == 422
        assert (await http.post("/api/v1/help/events", json={"event": "shown"})).status_code == 204
