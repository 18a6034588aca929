"""GET /api/v1/vocabulary: every word of core/vocabulary.py the pages show, in order, each with a label."""

from __future__ import annotations

import httpx

from core import vocabulary as v
from gateway.app import create_app


async def test_the_vocabulary_lists_every_word_in_order_with_a_label() -> None:
    # No lifespan: the endpoint needs no database, broker or Temporal.
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        response = await http.get("/api/v1/vocabulary")
    assert response.status_code == 200, response.text
    body = response.json()
    expected = {
        "channels": v.CHANNELS,
        "ticket_categories": v.TICKET_CATEGORIES,
        "priorities": v.PRIORITIES,
        "ticket_statuses": v.TICKET_STATUSES,
        "escalation_reasons": v.ESCALATION_REASONS,
    }
    for name, words in expected.items():
        assert [term["value"] for term in body[name]] == list(words), name
        assert all(term["label"].strip() for term in body[name]), name
    assert body["web_form"] == {"priorities": list(v.WEB_FORM_PRIORITIES), "default_priority": "medium"}
    assert set(v.WEB_FORM_PRIORITIES) <= set(v.PRIORITIES)
    # The wording the pages have always shown.
    labels = {term["value"]: term["label"] for term in body["escalation_reasons"]}
    assert labels["human_request"] == "Asked for a person" and labels["pricing"] == "Pricing"
    assert {t["value"]: t["label"] for t in body["ticket_statuses"]}["escalated"] == "With our support team"
