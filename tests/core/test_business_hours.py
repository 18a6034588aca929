"""One set of business hours: what customers read, what the holding reply says, what the SLA clock counts."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from activities.channels.formatting import business_hours_text, escalation_message
from core.settings import Settings
from workflows.policies import add_business_hours

ROOT = Path(__file__).resolve().parents[2]
# The articles a customer (or the model answering them) reads the support hours from.
ARTICLES = ("kb/policies/escalation-rules.md", "kb/docs/company-profile.md")
_STATED = re.compile(r"Monday to Friday, (\d\d):00\u2013(\d\d):00 UTC")


@pytest.fixture
def defaults(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("BUSINESS_DAY_START_HOUR", "BUSINESS_DAY_END_HOUR"):
        monkeypatch.delenv(name, raising=False)
    return Settings(_env_file=None)  # type: ignore[call-arg]  # pydantic-settings' init-only option


@pytest.mark.parametrize("article", ARTICLES)
def test_the_articles_state_the_hours_the_sla_clock_uses(article: str, defaults: Settings) -> None:
    stated = {(int(a), int(b)) for a, b in _STATED.findall((ROOT / article).read_text())}
    assert stated == {(defaults.business_day_start_hour, defaults.business_day_end_hour)}, article


def test_the_holding_reply_states_the_configured_hours(defaults: Settings) -> None:
    hours = business_hours_text(defaults.business_day_start_hour, defaults.business_day_end_hour)
    text = escalation_message("pricing", business_hours=hours)
    assert text.endswith("Our support team works Monday to Friday, 08:00\u201320:00 UTC.")
    assert _STATED.search(text)
    # Another configuration is stated as configured, not as the articles' default.
    assert business_hours_text(9, 17) == "Monday to Friday, 09:00\u201317:00 UTC"


def test_the_sla_clock_counts_the_stated_hours(defaults: Settings) -> None:
    friday_evening = datetime(2026, 1, 9, 19, 30, tzinfo=UTC)  # a Friday, half an hour before closing
    due = add_business_hours(
        friday_evening,
        defaults.escalation_sla_business_hours,
        day_start=defaults.business_day_start_hour,
        day_end=defaults.business_day_end_hour,
    )
    # 30 minutes on Friday, the other 90 from Monday's 08:00 opening.
    assert due == datetime(2026, 1, 12, 9, 30, tzinfo=UTC)
