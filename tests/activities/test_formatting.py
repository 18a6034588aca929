"""Channel formatting: formal email, concise WhatsApp in ordered ≤1600-character parts, semi-formal web."""

from __future__ import annotations

from activities.channels.formatting import (
    ChannelStyle,
    email_html,
    escalation_message,
    format_reply,
    split_for_whatsapp,
)
from core.markdown import render_html

EMAIL = ChannelStyle("email", "formal", 4000, "Dear {name},", "Best regards,\nThe TechCorp Support Team")
WHATSAPP = ChannelStyle("whatsapp", "concise", 1600, "Hi {name}!", None)
WEB = ChannelStyle("web_form", "semi_formal", 3000, "Hi {name},", "TechCorp Support")


def test_email_is_formal_with_greeting_signature_and_ticket_reference() -> None:
    [text] = format_reply(
        "Open Settings, then Integrations.", style=EMAIL, customer_name="Lisa Chen", ticket_number="TKT-0042"
    )
    assert text.startswith("Dear Lisa,")
    assert "TKT-0042" in text and text.rstrip().endswith("The TechCorp Support Team")


def test_human_reply_is_signed_by_the_human() -> None:
    [text] = format_reply(
        "I have issued the fix.", style=EMAIL, customer_name=None, ticket_number=None, human_agent="Sam Rivera"
    )
    assert text.startswith("Dear there,")  # no name known: a neutral greeting, never "Dear None"
    assert text.rstrip().endswith("Sam Rivera\nTechCorp Support")
    assert "The TechCorp Support Team" not in text


def test_whatsapp_has_no_markdown_headings_and_carries_the_reference() -> None:
    [text] = format_reply("## Steps\n**Open** the menu.", style=WHATSAPP, customer_name="Ana", ticket_number="TKT-7")
    assert "##" not in text and "*Open*" in text and "(Ref: TKT-7)" in text


def test_whatsapp_split_keeps_order_sentence_boundaries_and_the_limit() -> None:
    sentences = [f"Sentence {i} explains one more thing about boards." for i in range(150)]
    parts = split_for_whatsapp(" ".join(sentences))
    assert len(parts) > 1 and all(len(p) <= 1600 for p in parts)
    rejoined = " ".join(parts).split()
    assert rejoined == " ".join(sentences).split()  # nothing lost, nothing reordered
    assert all(p.endswith(".") for p in parts)  # cut at sentence ends


def test_a_single_enormous_sentence_is_cut_at_word_boundaries() -> None:
    word_soup = " ".join(["automation"] * 500)
    parts = split_for_whatsapp(word_soup)
    assert all(len(p) <= 1600 for p in parts)
    assert " ".join(parts).split() == word_soup.split()


def test_web_reply_is_semi_formal_and_truncated_to_the_channel_limit() -> None:
    [text] = format_reply("x " * 4000, style=WEB, customer_name="Omar Haddad", ticket_number="TKT-9")
    assert text.startswith("Hi Omar,") and len(text) <= 3000


def test_escalation_message_is_honest_and_states_no_price() -> None:
    for reason in ("pricing", "refund", "legal", "security", "human_request", "negative_sentiment", "budget"):
        text = escalation_message(reason)
        assert "$" not in text and "refund you" not in text.lower()
        assert text.endswith("We usually answer within 2 business hours.")  # says what happens next


def test_email_plain_text_carries_no_markdown_markers_and_its_html_has_real_lists() -> None:
    body = "## Steps\n**Open** `Settings`, then *Integrations*.\n\n1. Click **Connect**.\n2. Sign in."
    [text] = format_reply(body, style=EMAIL, customer_name="Ana", ticket_number=None)
    assert "**" not in text and "##" not in text and "`" not in text and "*" not in text
    assert "Open Settings, then Integrations." in text and "1. Click Connect.\n2. Sign in." in text
    html = email_html(body, style=EMAIL, customer_name="Ana", ticket_number="TKT-1")
    assert "<ol>" in html and "<li>Click <strong>Connect</strong>.</li>" in html and "TKT-1" in html


def test_web_reply_is_markdown_that_renders_without_markers() -> None:
    [text] = format_reply("## Steps\n**Open** `Settings`.", style=WEB, customer_name="Ana", ticket_number=None)
    assert "##" not in text and "**Steps**" in text
    html = render_html(text, breaks=True)
    assert "<strong>Open</strong>" in html and "**" not in html and "<code>Settings</code>" in html


def test_markdown_rendering_escapes_html_and_drops_script_links() -> None:
    html = render_html("<img src=x onerror=alert(1)> [click](javascript:alert(1)) [ok](https://example.com)")
    assert "<img" not in html and "&lt;img" in html
    assert 'href="javascript' not in html and 'href="https://example.com"' in html


def test_whatsapp_uses_its_own_bold_and_italic_and_lists_keep_their_lines() -> None:
    body = "**Connect** *Google* calendar:\n1. Go to **Settings**.\n2. Click *Connect*.\n\n| Plan | Limit |\n|---|---|\n| Free | 60 |"
    [text] = format_reply(body, style=WHATSAPP, customer_name=None, ticket_number=None)
    assert text.startswith("*Connect* _Google_ calendar:\n1. Go to *Settings*.\n2. Click _Connect_.")
    assert "|" not in text and "- Free — Limit: 60" in text


def test_a_long_whatsapp_list_is_split_between_items_never_inside_one() -> None:
    items = [f"{i}. Open the menu and choose option number {i} from the list of choices." for i in range(1, 40)]
    parts = split_for_whatsapp("\n".join(items))
    assert len(parts) > 1 and all(len(p) <= 1600 for p in parts)
    assert [line for p in parts for line in p.split("\n")] == items


def test_an_email_reply_goes_out_as_plain_text_with_an_html_alternative() -> None:
    from activities.channels.gmail import GmailAdapter
    from activities.channels.port import EmailThread, OutboundMessage
    from core.settings import Settings

    body = "**Connect**:\n\n1. Open *Settings*.\n2. Click **Connect**."
    [plain] = format_reply(body, style=EMAIL, customer_name="Ana", ticket_number=None)
    html = email_html(body, style=EMAIL, customer_name="Ana", ticket_number=None)
    message = OutboundMessage(
        message_id="m-1",
        channel="email",
        content=plain,
        to_email="ana@example.com",
        to_phone=None,
        attributes={"html": html},
    )
    settings = Settings(_env_file=None, gmail_user_email="support@example.com")  # type: ignore[call-arg]
    mime = GmailAdapter(settings)._compose(message, EmailThread(subject="Help"), "ana@example.com")
    assert mime.get_content_type() == "multipart/alternative"
    text_part = mime.get_body(preferencelist=("plain",))
    html_part = mime.get_body(preferencelist=("html",))
    assert text_part is not None and html_part is not None
    assert "1. Open Settings.\n2. Click Connect." in text_part.get_content()
    assert "<ol>" in html_part.get_content() and "<strong>Connect</strong>" in html_part.get_content()


def test_the_holding_message_tells_the_time_a_person_will_really_answer() -> None:
    from datetime import UTC, datetime

    from activities.channels.formatting import sla_hint
    from workflows.policies import add_business_hours

    def hint(now: datetime) -> str:
        return sla_hint(now, add_business_hours(now, 2, day_start=8, day_end=20), 2)

    # Wednesday 10:00: the whole SLA falls inside business hours.
    assert hint(datetime(2026, 12, 2, 10, 0, tzinfo=UTC)) == "within 2 business hours"
    # Wednesday 19:30: half an hour today, the rest tomorrow morning.
    assert hint(datetime(2026, 12, 2, 19, 30, tzinfo=UTC)) == "by 09:30 UTC tomorrow"
    # Friday 22:00 and Saturday noon: Monday morning, not "within 2 business hours".
    assert hint(datetime(2026, 12, 4, 22, 0, tzinfo=UTC)) == "by Monday 10:00 UTC"
    assert hint(datetime(2026, 12, 5, 12, 0, tzinfo=UTC)) == "by Monday 10:00 UTC"
    # Early morning before the day starts: later today.
    assert hint(datetime(2026, 12, 2, 6, 0, tzinfo=UTC)) == "by 10:00 UTC today"
