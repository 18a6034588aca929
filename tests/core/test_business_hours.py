"""One set of business hours: what customers read, what the holding reply says, what the SLA clock counts."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from activities.channels.formatting import business_hours_text, escalation_message, sla_hint
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


def test_holidays_are_skipped_like_a_weekend_and_a_bad_date_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUSINESS_HOLIDAYS", " 2026-12-25, 2026-12-28 ,")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]  # pydantic-settings' init-only option
    assert settings.holiday_dates == (date(2026, 12, 25), date(2026, 12, 28))
    christmas_eve = datetime(2026, 12, 24, 19, 0, tzinfo=UTC)  # a Thursday, an hour before closing
    due = add_business_hours(christmas_eve, 2, day_start=8, day_end=20, holidays=settings.holiday_dates)
    # One hour on Thursday; Friday the 25th, the weekend and Monday the 28th are days off: Tuesday 09:00.
    assert due == datetime(2026, 12, 29, 9, 0, tzinfo=UTC)
    assert add_business_hours(christmas_eve, 2, day_start=8, day_end=20) == datetime(2026, 12, 25, 9, 0, tzinfo=UTC)
    # The holding reply promises the same moment the timer waits for.
    assert sla_hint(christmas_eve, due, 2) == "by Tuesday 09:00 UTC"

    monkeypatch.setenv("BUSINESS_HOLIDAYS", "2026-12-25,Christmas")
    with pytest.raises(ValidationError, match="not a date such as 2026-12-25: 'Christmas'"):
        Settings(_env_file=None)  # type: ignore[call-arg]
