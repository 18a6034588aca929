"""What each sink receives for a daily report: email text, Slack's text and blocks, the webhook's JSON.

Pure functions of the stored report. A report carries aggregates only, plus the questions the AI
could not answer, each already cut to one line of at most 120 characters; never a secret.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from activities.notifications.render import _slack_escape
from core.settings import Settings
from core.vocabulary import CHANNEL_LABELS, ESCALATION_REASON_LABELS, TICKET_CATEGORY_LABELS
from crm.report_document import ReportSummary

WEBHOOK_SCHEMA_VERSION = 1
DASHBOARD_PATH = "/agent#dashboard"


def dashboard_url(settings: Settings) -> str:
    """PUBLIC_BASE_URL (else the gateway's own address) + the console's dashboard."""
    base = (
        str(settings.public_base_url)
        if settings.public_base_url
        else f"http://{settings.gateway_host}:{settings.gateway_port}"
    )
    return base.rstrip("/") + DASHBOARD_PATH


def delivery_id(day: date) -> str:
    """The webhook's delivery id (the same on every attempt): `daily_report:2026-12-01`."""
    return f"daily_report:{day.isoformat()}"


def headline(day: date) -> str:
    return f"Support report · {day.isoformat()}"


def percent(rate: float | None) -> str:
    return "n/a (nothing closed)" if rate is None else f"{rate * 100:.1f}%"


def duration(seconds: float | None) -> str:
    """`45 s`, `12.5 min`, `3.2 h`; `n/a` when nothing was measured."""
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def lines(r: ReportSummary) -> list[tuple[str, str]]:
    """The report as (name, value) lines, in the order every sink shows them."""
    channels = ", ".join(f"{CHANNEL_LABELS[c]} {n}" for c, n in r.conversations_by_channel.items())
    o = r.outcomes
    reasons = ", ".join(f"{ESCALATION_REASON_LABELS[k]} {n}" for k, n in r.escalations_by_reason.items())
    m = r.model
    per_resolution = (
        f"${m.cost_per_resolution_usd:.4f} per resolution" if m.cost_per_resolution_usd is not None else "no resolution"
    )
    sentiment = (
        f"{r.sentiment.average:+.2f} (mean of {r.sentiment.points} turns)" if r.sentiment.average is not None else "n/a"
    )
    return [
        ("Conversations", f"{r.conversations}" + (f" ({channels})" if channels else "")),
        (
            "Closed",
            f"{o.closed}: {o.resolved_by_ai} by the AI, {o.resolved_by_human} by a person, {o.abandoned} abandoned",
        ),
        ("Resolution rate", percent(o.resolution_rate)),
        ("Automation rate", percent(o.automation_rate)),
        ("With a person now", str(r.open_with_human)),
        ("Escalations", f"{r.escalations}" + (f" ({reasons})" if reasons else "")),
        ("SLA breaches", f"{r.sla.breached} of {r.sla.due} due"),
        (
            "First response",
            f"p50 {duration(r.first_response.p50_seconds)}, p95 {duration(r.first_response.p95_seconds)}",
        ),
        (
            "A person's first response",
            f"p50 {duration(r.human_first_response.p50_seconds)}, p95 {duration(r.human_first_response.p95_seconds)}",
        ),
        ("Sentiment", sentiment),
        ("CSAT", "no ratings" if r.csat_average is None else f"{r.csat_average:.2f} of 5 ({r.csat_ratings} ratings)"),
        ("Knowledge gaps closed", str(r.gaps_closed)),
        (
            "Model cost (estimate)",
            f"${m.cost_usd:.4f} for {m.prompt_tokens} prompt + {m.completion_tokens} completion tokens; "
            + per_resolution,
        ),
    ]


def questions(r: ReportSummary) -> list[str]:
    return [
        f"{q.count} x “{q.text}”" + (f" ({TICKET_CATEGORY_LABELS[q.category]})" if q.category else "")
        for q in r.unanswered_questions
    ]


def email_text(day: date, r: ReportSummary, link: str) -> str:
    """The plain-text report email."""
    out = [f"{headline(day)} (UTC, {r.since:%Y-%m-%d %H:%M} to {r.until:%Y-%m-%d %H:%M})", ""]
    out += [f"{name}: {value}" for name, value in lines(r)]
    out += ["", "Questions the AI could not answer:"]
    out += [f"  {i}. {q}" for i, q in enumerate(questions(r), 1)] or ["  none"]
    out += ["", f"Dashboard: {link}"]
    return "\n".join(out)


def slack_payload(day: date, r: ReportSummary, link: str) -> dict[str, Any]:
    """An incoming-webhook message: `text` (fallback) and Block Kit `blocks`."""
    title = _slack_escape(headline(day))
    facts = [{"type": "mrkdwn", "text": f"*{name}*\n{_slack_escape(value)}"} for name, value in lines(r)]
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"}}]
    # Slack allows at most 10 fields in one section.
    blocks += [{"type": "section", "fields": facts[i : i + 10]} for i in range(0, len(facts), 10)]
    asked = questions(r)
    if asked:
        listing = "\n".join(f"{i}. {_slack_escape(q)}" for i, q in enumerate(asked, 1))
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Questions the AI could not answer*\n{listing}"}}
        )
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{link}|Open the dashboard>"}})
    return {"text": f"{title} <{link}|dashboard>", "blocks": blocks}


def webhook_body(day: date, r: ReportSummary, link: str) -> bytes:
    """The generic webhook's JSON body: the same bytes on every attempt (the signature covers them)."""
    document = {
        "version": WEBHOOK_SCHEMA_VERSION,
        "id": delivery_id(day),
        "type": "daily_report",
        "day": day.isoformat(),
        "dashboard_url": link,
        "report": r.model_dump(mode="json"),
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
