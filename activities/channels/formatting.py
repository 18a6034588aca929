"""Channel formatting: formal email, concise WhatsApp in ≤1600-character parts, semi-formal web.

A reply body is Markdown (a model's answer, a help-article section, a human's plain text). Each
channel gets it in its own form: email as plain text (lists kept, emphasis markers dropped) with an
HTML alternative rendered by markdown-it (real lists, bold); WhatsApp with its own `*bold*` and
`_italic_`, no headings; the web ticket page as Markdown, rendered safely by the gateway. Tables
become one line per row everywhere (no channel shows pipes well).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from core.markdown import render_html

# The formatter's input is a channel_configs row as the repository returns it (re-exported).
from crm.repositories.channel_configs import ChannelStyle as ChannelStyle

WHATSAPP_PART_LIMIT = 1600
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_MARKDOWN_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*", re.MULTILINE)
_MARKDOWN_HEADING_LINE = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_MARKDOWN_BOLD = re.compile(r"\*\*(.+?)\*\*")
# Single-star emphasis (never a `* ` list bullet, never half of `**`).
_MARKDOWN_ITALIC = re.compile(r"(?<![*\w])\*(?![\s*])([^*\n]+?)(?<![\s*])\*(?![*\w])")
_MARKDOWN_LINK = re.compile(r"\[([^\]\n]+)\]\(((?:https?://|/)[^)\s]+)\)")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def tables_as_lists(body: str) -> str:
    """Markdown tables as one list line per row: `- first cell — header: cell; header: cell`."""
    lines = body.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if i + 1 < len(lines) and "|" in lines[i] and _TABLE_RULE.match(lines[i + 1]):
            header = _cells(lines[i])
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                row = _cells(lines[i])
                rest = "; ".join(f"{h}: {c}" for h, c in zip(header[1:], row[1:], strict=False) if c)
                out.append(f"- {row[0]} — {rest}" if rest else f"- {row[0]}")
                i += 1
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


_FENCED = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)


def _indented_code(body: str) -> str:
    """Fenced code blocks as lines indented by four spaces (how plain text shows code)."""
    return _FENCED.sub(lambda m: "\n".join("    " + line for line in m.group(2).rstrip("\n").split("\n")), body)


def plain_text(body: str) -> str:
    """Markdown as plain text for mail clients and previews: lists kept, markers and headings dropped."""
    body = tables_as_lists(_indented_code(body))
    body = _MARKDOWN_HEADING_LINE.sub(r"\1", body)
    body = _MARKDOWN_LINK.sub(r"\1 (\2)", body)
    body = _MARKDOWN_BOLD.sub(r"\1", body)
    body = _MARKDOWN_ITALIC.sub(r"\1", body)
    return body.replace("`", "")


def whatsapp_text(body: str) -> str:
    """Markdown in WhatsApp's own syntax: `*bold*`, `_italic_`, headings as bold lines, no code ticks."""
    body = tables_as_lists(_indented_code(body))
    body = _MARKDOWN_ITALIC.sub(r"_\1_", body)
    body = _MARKDOWN_HEADING_LINE.sub(r"**\1**", body)
    body = _MARKDOWN_BOLD.sub(r"*\1*", body)
    body = _MARKDOWN_LINK.sub(r"\1: \2", body)
    return body.replace("`", "")


def web_markdown(body: str) -> str:
    """Markdown for the ticket page (rendered there by the gateway); headings become bold lines."""
    return _MARKDOWN_HEADING_LINE.sub(r"**\1**", tables_as_lists(body))


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def split_for_whatsapp(text: str, limit: int = WHATSAPP_PART_LIMIT) -> list[str]:
    """Split into parts of at most `limit` characters, in order: at paragraphs, then lines (a list
    stays a list), then sentences, then words; nothing is lost or reordered."""
    text = text.strip()
    if len(text) <= limit:
        return [text]
    # (unit, separator before it): the separators are put back when units share a part.
    units: list[tuple[str, str]] = []
    for p_index, paragraph in enumerate(re.split(r"\n{2,}", text)):
        for l_index, line in enumerate(paragraph.split("\n")):
            joiner = "\n\n" if p_index and not l_index else "\n"
            pieces = [line] if len(line) <= limit else split_sentences(line) or [line]
            for s_index, sentence in enumerate(pieces):
                while len(sentence) > limit:  # one enormous sentence: cut at a word boundary
                    cut = sentence.rfind(" ", 0, limit)
                    cut = cut if cut > limit // 2 else limit
                    units.append((sentence[:cut].rstrip(), joiner if not s_index else " "))
                    sentence, s_index = sentence[cut:].lstrip(), 1
                units.append((sentence, joiner if not s_index else " "))
    parts: list[str] = []
    current = ""
    for unit, joiner in units:
        candidate = f"{current}{joiner}{unit}" if current else unit
        if len(candidate) <= limit:
            current = candidate
        else:
            parts.append(current)
            current = unit
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
        # WhatsApp renders no Markdown headings; its own *bold* and _italic_ instead of Markdown's.
        body = whatsapp_text(body)
        text = body if human_agent is None else f"{body}\n— {human_agent}, TechCorp Support"
        if ticket_number:
            text = f"{text}\n(Ref: {ticket_number})"
        return split_for_whatsapp(text, min(style.max_response_length, WHATSAPP_PART_LIMIT))
    # Mail clients show the plain-text part (the HTML alternative is `email_html`); the ticket page
    # renders Markdown safely.
    body = plain_text(body) if style.channel == "email" else web_markdown(body)
    greeting = (style.greeting or "Hi {name},").format(name=name)
    lines = [greeting, "", body, ""]
    if style.channel == "email":
        lines += _email_closing(style, ticket_number, human_agent)
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


def _email_closing(style: ChannelStyle, ticket_number: str | None, human_agent: str | None) -> list[str]:
    lines = []
    if ticket_number:
        lines += [f"Your ticket reference is {ticket_number}; keep it in the subject line if you write again.", ""]
    signature = f"Best regards,\n{human_agent}\nTechCorp Support" if human_agent else style.signature
    if signature:
        lines.append(signature)
    return lines


def email_html(
    body: str,
    *,
    style: ChannelStyle,
    customer_name: str | None,
    ticket_number: str | None,
    human_agent: str | None = None,
) -> str:
    """The HTML alternative of an email reply: the same words, with real lists, bold and links."""
    greeting = (style.greeting or "Hi {name},").format(name=_first_name(customer_name))
    lines = [greeting, "", tables_as_lists(body.strip()), "", *_email_closing(style, ticket_number, human_agent)]
    return render_html("\n".join(lines).strip(), breaks=True)


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
    "low_rating": "I'm sorry we fell short. I've passed your rating and your words to a member of our support "
    "team, who will follow up with you here.",
}
DEFAULT_ESCALATION = (
    "I want to make sure you get the right answer, so I've passed your message to a member of our "
    "support team. They will reply to you here."
)


def escalation_message(
    reason: str, *, sla_hint: str = "within 2 business hours", business_hours: str | None = None
) -> str:
    """What the customer is told honestly when a human takes over (and when people work, if given)."""
    hours = f" Our support team works {business_hours}." if business_hours else ""
    return f"{ESCALATION_TEMPLATES.get(reason, DEFAULT_ESCALATION)} We usually answer {sla_hint}.{hours}"


# --- asking for a rating (CSAT, issue 17) ---------------------------------------------------
RATING_LABELS = {1: "very poor", 2: "poor", 3: "okay", 4: "good", 5: "excellent"}


def rating_request(channel: str, *, links: dict[int, str] | None = None) -> str:
    """The one question asked after a resolved conversation closes, in the form its channel answers.

    WhatsApp and email: a reply with a number (the workflow reads "4", "4/5", "4 - quick, thanks");
    email with ticket links also lists one link per score (the page asks to confirm: link scanners
    open emailed links); the web form's ticket page shows the buttons.
    """
    ask = "How did we do?"
    if channel == "web_form":
        return f"{ask} You can rate this conversation from 1 (very poor) to 5 (excellent) on your ticket page."
    text = f"{ask} Reply with a number from 1 (very poor) to 5 (excellent), and a few words if you like."
    if channel == "email" and links:
        lines = "\n".join(f"{score} ({RATING_LABELS[score]}): {links[score]}" for score in sorted(links))
        text += f"\n\nOr choose one:\n{lines}"
    return text


# --- holding messages in the customer's language (issue 14, guardrails) ----------------------
# Sent instead of the English template when the conversation's detected language is one of these:
# the languages the guardrails serve (es, pt, fr, de) and the ones customers write in most that the
# offline path does not (an escalation with reason "language"). Honest and short: a person will
# answer; no promise of a time (the SLA line stays in English below, where the hours are exact).
HOLDING_MESSAGES: dict[str, str] = {
    "es": "Gracias por su mensaje. Lo he pasado a una persona de nuestro equipo de soporte, que le responderá aquí.",
    "pt": "Obrigado pela sua mensagem. Encaminhei-a para uma pessoa da nossa equipe de suporte, que responderá aqui.",
    "fr": "Merci pour votre message. Je l'ai transmis à une personne de notre équipe support, qui vous répondra ici.",
    "de": "Danke für Ihre Nachricht. Ich habe sie an eine Person aus unserem Support-Team weitergegeben, "
    "die Ihnen hier antworten wird.",
    "it": "Grazie per il messaggio. L'ho inoltrato a una persona del nostro team di assistenza, che le risponderà qui.",
    "nl": "Bedankt voor uw bericht. Ik heb het doorgestuurd naar een medewerker van ons supportteam, "
    "die u hier zal antwoorden.",
    "pl": "Dziękujemy za wiadomość. Przekazałem ją osobie z naszego zespołu wsparcia, która odpowie tutaj.",
    "sv": "Tack för ditt meddelande. Jag har skickat det vidare till en person i vårt supportteam som svarar dig här.",
    "tr": "Mesajınız için teşekkürler. Mesajınızı destek ekibimizden bir kişiye ilettim; size buradan yanıt verecek.",  # noqa: RUF001 - the letters of that language are meant
    "ru": "Спасибо за сообщение. Я передал его сотруднику нашей службы поддержки, который ответит вам здесь.",  # noqa: RUF001 - the letters of that language are meant
    "cs": "Děkujeme za zprávu. Předal jsem ji kolegovi z našeho týmu podpory, který vám odpoví zde.",
    "ja": "メッセージありがとうございます。サポートチームの担当者に引き継ぎました。こちらで担当者からご返信します。",
    "zh": "感谢您的留言。我已将您的消息转交给我们的支持团队成员，他们会在这里回复您。",  # noqa: RUF001 - the letters of that language are meant
    "ko": "메시지 감사합니다. 지원팀 담당자에게 전달했으며, 담당자가 여기에서 답변드릴 것입니다.",
}


def holding_message(
    reason: str,
    language: str | None,
    *,
    sla_hint: str = "within 2 business hours",
    business_hours: str | None = None,
) -> str:
    """The escalation message in the customer's language when we have one, the English one below it."""
    text = escalation_message(reason, sla_hint=sla_hint, business_hours=business_hours)
    local = HOLDING_MESSAGES.get(language or "")
    return f"{local}\n\n{text}" if local else text


def sla_hint(now: datetime, due: datetime, business_hours: float) -> str:
    """When the customer can expect a person, as they would say it.

    "within 2 business hours" is true only while the whole SLA falls inside business hours; on a
    Friday evening the honest answer is the time the SLA clock actually ends ("by Monday 10:00 UTC").
    """
    if due - now <= timedelta(hours=business_hours, minutes=1):
        return f"within {business_hours:g} business hours"
    due, today = due.astimezone(UTC), now.astimezone(UTC).date()
    if due.date() == today:
        return f"by {due:%H:%M} UTC today"
    if due.date() == today + timedelta(days=1):
        return f"by {due:%H:%M} UTC tomorrow"
    return f"by {due:%A} {due:%H:%M} UTC"


def business_hours_text(start_hour: int, end_hour: int) -> str:
    """The business hours as customers read them, from the settings the SLA clock uses."""
    return f"Monday to Friday, {start_hour:02d}:00\u2013{end_hour:02d}:00 UTC"  # an en dash, as the articles write it
