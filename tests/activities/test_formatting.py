"""Channel formatting: formal email, concise WhatsApp in ordered ≤1600-character parts, semi-formal web."""

from __future__ import annotations

from activities.channels.formatting import ChannelStyle, escalation_message, format_reply, split_for_whatsapp

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


def test_web_and_email_replies_carry_no_markdown_markers() -> None:
    for style in (WEB, EMAIL):
        [text] = format_reply("## Steps\n**Open** `Settings`.", style=style, customer_name="Ana", ticket_number=None)
        assert "**" not in text and "##" not in text and "`" not in text and "Open Settings." in text
