"""The answer evaluation's judge: a reply is right when it holds every fact of the labelled section or
of one alternative section (bench/data/README.md, `also`), partial with some, wrong with none."""

from __future__ import annotations

import pytest

from tests.evaluation.answers import Alternative, Case, Outcome, judge


def _case() -> Case:
    return Case(
        id="a-9999",
        message="how do i change my login email",
        channel="web_form",
        kind="answerable",
        expected=["account-settings"],
        section="Change your email address",
        must_contain=["Change email", "24 hours"],
        must_not_contain=["€"],
        escalation_reason=None,
        style="direct",
        language="en",
        also=(Alternative("getting-started", "I signed up with the wrong email.", ["Email & password", "confirm"]),),
    )


@pytest.mark.parametrize(
    ("reply", "verdict", "facts"),
    [
        ("Use **Change email**; the link is valid for 24 hours.", "correct", "2/2"),
        (
            "Change it in *Account settings → Email & password*. You will need to confirm the new address.",
            "correct",
            "2/2",
        ),
        ("Open Email & password in your account settings.", "partial", "1/2"),
        ("Use Change email in your settings.", "partial", "1/2"),
        ("Archive the project from its menu.", "wrong", "0/2"),
        ("Use Change email (24 hours) — it costs €5.", "wrong", "2/2"),  # a forbidden string
    ],
)
def test_a_reply_is_judged_against_the_label_and_its_alternatives(reply: str, verdict: str, facts: str) -> None:
    outcome = judge(Outcome(case=_case(), reply=reply))
    assert outcome.verdict == verdict
    assert f"{outcome.facts_found}/{outcome.facts_wanted}" == facts


def test_an_alternative_names_its_section_and_those_under_it() -> None:
    class Section:
        def __init__(self, article_id: str, path: tuple[str, ...], title: str = "T") -> None:
            self.article_id, self.path, self.title = article_id, path, title

    alternative = Alternative("search", "Troubleshooting search", ["is:archived"])
    assert alternative.names(Section("search", ("Troubleshooting search",)))
    assert alternative.names(Section("search", ("Troubleshooting search", '"I know the card exists"')))
    assert not alternative.names(Section("search", ("Quick search",)))
    assert not alternative.names(Section("other", ("Troubleshooting search",)))
