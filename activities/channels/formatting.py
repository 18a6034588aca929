"""Channel formatting: formal email, concise WhatsApp in ≤1600-character parts, semi-formal web."""

from __future__ import annotations

import re

# The formatter's input is a channel_configs row as the repository returns it (re-exported).
from crm.repositories.channel_configs import ChannelStyle as ChannelStyle

WHATSAPP_PART_LIMIT = 1600
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_MARKDOWN_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*", re.MULTILINE)
_MARKDOWN_BOLD = re.compile(r"\*\*(.+?)\*\*")


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def split_for_whatsapp(text: str, limit: int = WHATSAPP_PART_LIMIT) -> list[str]:
    """Split at sentence boundaries into parts of at most `limit` characters, in order."""
    text = text.strip()
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    current = ""
    for paragraph in re.split(r"\n{2,}", text):
        for sentence in split_sentences(paragraph) or [paragraph]:
            while len(sentence) > limit:  # one enormous sentence: cut at a word boundary
                cut = sentence.rfind(" ", 0, limit)
                cut = cut if cut > limit // 2 else limit
                if current:
                    parts.append(current)
                    current = ""
                parts.append(sentence[:cut].rstrip())
                sentence = sentence[cut:].lstrip()
            joiner = "\n\n" if current and sentence is paragraph else " "
            candidate = f"{current}{joiner}{sentence}" if current else sentence
            if len(candidate) <= limit:
                current = candidate
            else:
                parts.append(current)
                current = sentence
        if current and not current.endswith("\n\n"):
            current = current + "\n\n"
    if current.strip():
        parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def _first_name(name: str | None) -> str:
    return (name or "").strip().split(" ")[0] if name and name.strip() else "there"


def format_reply(
    body: str,
    *,
    style: ChannelStyle,
    customer_name: str | None,
    ticket_number: str | None,
    human_agent: str | None = None,
) -> list[str]:
    """The message(s) to send on this channel; WhatsApp may yield several parts."""
    body = body.strip()
    name = _first_name(customer_name)
    if style.channel == "whatsapp":
        # WhatsApp renders no Markdown headings; keep it short and plain.
        body = _MARKDOWN_HEADING.sub("", body)
        body = _MARKDOWN_BOLD.sub(r"*\1*", body)
        text = body if human_agent is None else f"{body}\n— {human_agent}, TechCorp Support"
        if ticket_number:
            text = f"{text}\n(Ref: {ticket_number})"
        return split_for_whatsapp(text, min(style.max_response_length, WHATSAPP_PART_LIMIT))
    # The ticket page and mail clients show plain text: no Markdown markers.
    body = _MARKDOWN_BOLD.sub(r"\1", _MARKDOWN_HEADING.sub("", body)).replace("`", "")
    greeting = (style.greeting or "Hi {name},").format(name=name)
    lines = [greeting, "", body, ""]
    if style.channel == "email":
        if ticket_number:
            lines += [f"Your ticket reference is {ticket_number}; keep it in the subject line if you write again.", ""]
        signature = f"Best regards,\n{human_agent}\nTechCorp Support" if human_agent else style.signature
        if signature:
            lines.append(signature)
    else:
        if human_agent is not None:
            lines.append(f"— {human_agent}, TechCorp Support")
        elif style.signature:
            lines.append(style.signature)
        if ticket_number:
            lines += ["", f"Ticket: {ticket_number}"]
    text = "\n".join(lines).strip()
    if len(text) > style.max_response_length:
        text = text[: style.max_response_length - 1].rstrip() + "…"
    return [text]


ESCALATION_TEMPLATES: dict[str, str] = {
    "pricing": "Questions about prices, quotes and discounts are handled by our sales team, so I've passed "
    "your message to a specialist who will reply to you directly.",
    "refund": "Refunds, charges and credits are handled by our billing team. I've passed your message to "
    "them and a person will follow up with you.",
    "legal": "This needs our legal and privacy team. I've forwarded your message, and a person from that "
    "team will contact you.",
    "human_request": "Of course. I've asked a member of our support team to take over; they will reply here.",
    "negative_sentiment": "I'm sorry this has been frustrating. I've asked a senior member of our support "
    "team to look at this personally, and they will reply to you here.",
    "security": "For your security, a member of our security team will handle this personally. If you think "
    "your account is compromised, change your password and revoke your API tokens now.",
}
DEFAULT_ESCALATION = (
    "I want to make sure you get the right answer, so I've passed your message to a member of our "
    "support team. They will reply to you here."
)


def escalation_message(reason: str, *, sla_hint: str = "within 2 business hours") -> str:
    """What the customer is told honestly when a human takes over."""
    return f"{ESCALATION_TEMPLATES.get(reason, DEFAULT_ESCALATION)} We usually answer {sla_hint}."
