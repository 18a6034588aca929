"""A fixed subset of the labelled answer set (tuning part) through the real workflow, offline responder.

The whole set runs in `bench/answers_eval.py`; this subset guards what must not regress: whole
sections that answer, honest hand-offs for what the knowledge base does not cover, small talk
answered and never queued for a human, "thanks, that worked" closing the conversation, and no
garbled reply. Counts only, never times.
"""

from __future__ import annotations

import json

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from core.settings import Settings
from tests.evaluation.answers import describe, garbled, load_cases, run_cases, status_once_settled, summarise

# Direct questions, questions in Portuguese and Spanish (one a short email), a typo-ridden one-liner
# (answered through the question bank and the section ranker).
ANSWERABLE = ("a-0015", "a-0056", "a-0065", "a-0134", "a-0151", "a-1046")
UNANSWERABLE = ("a-0190", "a-0196")
# Small talk the rules' marker words read, and small talk with context of its own, read by meaning (a
# greeting with news of a trip, "before I type out my whole problem: are these replies written by a
# program?", a new team lead introducing herself in German).
SMALL_TALK = ("a-0209", "a-0210", "a-0213", "a-7057", "a-7059", "a-7062")
RESOLVED = "a-0213"  # "Thank you so much, the invoice download worked perfectly."


async def test_answer_subset_through_the_workflow(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession], worker: Worker
) -> None:
    cases = load_cases("tuning", ANSWERABLE + UNANSWERABLE + SMALL_TALK)
    assert len(cases) == 14
    outcomes = await run_cases(client, settings, sessions, cases, concurrency=3, run="regression")
    # On failure, the outcomes that did not go as labelled, in full.
    details = json.dumps(
        [describe(o) for o in outcomes if o.verdict not in ("correct", "safe", "handled") or o.problems], indent=1
    )
    summary = summarise(outcomes)
    assert summary.timed_out == 0, details
    answerable = summary.counts["answerable"]
    assert answerable["correct"] >= 5 and answerable["wrong"] == 0, details
    assert summary.counts["unanswerable"]["safe"] == 2, details
    assert summary.counts["small_talk"]["handled"] == 6, details
    assert summary.garbled == [], details
    # Every answer names its article and links to it on the help centre.
    for o in outcomes:
        if o.case.kind == "answerable" and o.verdict == "correct":
            assert f"/help/{o.case.expected[0]}" in o.reply or any(f"/help/{s}" in o.reply for s in o.case.expected)
    # The customer said it worked: the polite close went out and the conversation is closed (the
    # idle timeout is a day away, so nothing else closes it here).
    resolved = next(o for o in outcomes if o.case.id == RESOLVED)
    status = await status_once_settled(sessions, resolved.workflow_id, "closed")
    assert status == "closed" and resolved.escalation is None, describe(resolved)
    assert all(o.status != "closed" for o in outcomes if o.case.id != RESOLVED), details


def test_the_garble_detector_flags_what_a_person_would_never_send() -> None:
    """The detector the evaluation relies on must itself catch the splices seen in replies."""
    assert garbled("Use the raw placeholder, e.g. Can a Slack message mention someone? How many", "web_form")
    assert garbled("| Plan | Limit |\n|---|---|", "email")
    assert garbled('Result: {"hits": [1]}', "whatsapp")
    assert garbled("Click **Save** to finish.", "email")
    assert garbled("See the settings (for example", "whatsapp")
    assert garbled("Turn it on under *Settings*.", "web_form") == []  # rendered as emphasis on the web
    assert garbled("1. Open *Settings*.\n2. Click Save.", "whatsapp") == []
    # Shown on purpose: an asterisk inside a code span, a question that is one step of a list.
    assert garbled("Subscribe to `audit.*` events.", "email") == []
    assert garbled("Subscribe to audit.* events.", "email") == []  # the plain-text mail of the same
    assert garbled("Turn it on under *Settings*.", "email")
    assert garbled("* Open the app", "email")
    assert garbled("1. Sign out.\n2. Still nothing? Use **Send test**.", "web_form") == []
    assert garbled("Forgot your password? Use Forgot password? on the sign-in page.", "email") == []
    assert garbled("Shortcuts make it faster. Press ? anywhere to see them.", "email") == []  # the ? key
    assert garbled("Email **`privacy@techcorp.io`** to ask.", "web_form") == []  # bold code, rendered


def test_no_section_of_the_help_centre_reads_as_garbled_on_any_channel() -> None:
    """The offline responder sends whole sections: every one of them, as each channel formats it."""
    from activities.agent.offline import Candidate, bundled_index, compose_answer
    from activities.channels.formatting import ChannelStyle, format_reply

    limits = {"email": 2000, "whatsapp": 1600, "web_form": 2500}
    flagged = []
    sections = [s for article in bundled_index().by_article.values() for s in article]
    assert len(sections) > 400
    for section in sections:
        body = compose_answer(Candidate(section, 1.0, 1.0, 0), help_url="https://help.example.com")
        for channel, limit in limits.items():
            style = ChannelStyle(channel, "", limit, None, None)
            sent = "\n".join(format_reply(body, style=style, customer_name="Alex", ticket_number=None))
            if problems := garbled(sent, channel):
                flagged.append((channel, section.article_id, section.heading, problems))
    assert flagged == []
