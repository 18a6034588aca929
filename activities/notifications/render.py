"""What each sink receives for a notification: email text, Slack's text and blocks, the webhook's JSON.

Pure functions of the notification and the console link. Nothing here carries more of a customer's
words than the notification's summary (at most 200 characters) and nothing carries a secret.
"""

from __future__ import annotations

import json
from typing import Any

from core.settings import Settings
from core.vocabulary import (
    CHANNEL_LABELS,
    ESCALATION_REASON_LABELS,
    NOTIFICATION_KIND_LABELS,
    PRIORITY_LABELS,
)
from workflows.notification_contracts import Notification

# The webhook body's schema version: a receiver can refuse versions it does not know.
WEBHOOK_SCHEMA_VERSION = 1


def console_url(settings: Settings, notification: Notification) -> str:
    """PUBLIC_BASE_URL (else the gateway's own address) + the console's path for the conversation."""
    return settings.customer_base_url + notification.console_path


def headline(n: Notification) -> str:
    """`New escalation · TKT-0042 · Refund · High` (the email subject, Slack's fallback text)."""
    parts = [NOTIFICATION_KIND_LABELS[n.kind], n.ticket_number or "no ticket"]
    if n.reason is not None:
        parts.append(ESCALATION_REASON_LABELS[n.reason])
    parts.append(PRIORITY_LABELS[n.priority])
    return " · ".join(parts)


def _facts(n: Notification) -> list[tuple[str, str]]:
    facts = [("Channel", CHANNEL_LABELS[n.channel]), ("Priority", PRIORITY_LABELS[n.priority])]
    if n.reason is not None:
        facts.append(("Reason", ESCALATION_REASON_LABELS[n.reason]))
    if n.sla_due_at is not None:
        facts.append(("SLA due", n.sla_due_at.strftime("%Y-%m-%d %H:%M %Z").strip()))
    facts.append(("Assignee", n.assignee or "unassigned (the team)"))
    return facts


def email_text(n: Notification, link: str) -> str:
    """The plain-text notification email."""
    lines = [headline(n), ""]
    if n.summary:
        lines += [n.summary, ""]
    lines += [f"{name}: {value}" for name, value in _facts(n)]
    lines += ["", f"Open the conversation: {link}", "", f"Notification {n.idempotency_key}"]
    return "\n".join(lines)


def _slack_escape(value: str) -> str:
    # Slack's mrkdwn control characters (its documented escaping): &, <, >.
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(n: Notification, link: str) -> dict[str, Any]:
    """An incoming-webhook message: `text` (notifications and fallback) and Block Kit `blocks`."""
    title = _slack_escape(headline(n))
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"}},
    ]
    if n.summary:
        blocks.append({"type": "section", "text": {"type": "plain_text", "text": n.summary, "emoji": False}})
    blocks.append(
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{_slack_escape(value)}"} for name, value in _facts(n)],
        }
    )
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{link}|Open in the agent console>"}})
    return {"text": f"{title} <{link}|open>", "blocks": blocks}


def webhook_body(n: Notification, link: str) -> bytes:
    """The generic webhook's JSON body: the same bytes on every attempt (the signature covers them)."""
    document = {
        "version": WEBHOOK_SCHEMA_VERSION,
        "id": n.idempotency_key,
        "type": n.kind,
        "occurred_at": n.occurred_at.isoformat(),
        "conversation_id": n.conversation_id,
        "ticket_number": n.ticket_number,
        "channel": n.channel,
        "reason": n.reason,
        "priority": n.priority,
        "sla_due_at": n.sla_due_at.isoformat() if n.sla_due_at else None,
        "assignee": n.assignee,
        "summary": n.summary,
        "console_url": link,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
