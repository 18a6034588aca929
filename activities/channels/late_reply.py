"""Which way a WhatsApp message goes out: as text, or, for a human reply after WhatsApp's 24-hour
window closed, as the approved template, by email, or not at all (core/whatsapp_window.py decides).

The send activity calls `plan_whatsapp_send` inside its read session (the facts come from the CRM
through `crm.repositories`); the WhatsApp adapter then carries the plan out (`OutboundMessage.late_reply`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from activities.channels.port import LateReply, OutboundMessage
from core.settings import Settings
from core.whatsapp_window import TemplateVariable, content_variables, late_reply_via, parse_variable_names
from crm.repositories import conversations, customers, messages, tickets
from crm.repositories.messages import OutboundRecord, ReplyPart

_ROUTES = ("text", "template", "email", "undeliverable")


@dataclass(frozen=True)
class WhatsAppPlan:
    """How one WhatsApp message goes out, and what to record about it (`sent_as`, ...)."""

    outbound: OutboundMessage
    attributes: dict[str, Any] = field(default_factory=dict)
    # A later part of a reply whose first part went as a template or by email: that send covered it.
    covered_by: ReplyPart | None = None


def _first_name(name: str | None) -> str:
    return name.split()[0] if name and name.split() else "there"


def _undeliverable(outbound: OutboundMessage) -> WhatsAppPlan:
    return WhatsAppPlan(replace(outbound, late_reply=LateReply("undeliverable")), {"sent_as": "undeliverable"})


async def plan_whatsapp_send(
    session: AsyncSession, *, record: OutboundRecord, outbound: OutboundMessage, settings: Settings, now: datetime
) -> WhatsAppPlan:
    """Text, or, for a human reply after the 24-hour window closed, template / email / refusal.

    The AI only ever answers a message the customer has just sent (inside the window), so only
    human replies are checked. The choice is made once per reply, on its first part, and recorded
    (`sent_as`) before the send: a retry, and the reply's later parts, go the same way.
    """
    if record.role != "human_agent":
        return WhatsAppPlan(outbound)
    parts = await messages.reply_parts(session, message_id=record.message_id)
    first = parts[0] if parts else None
    if first is not None and first.message_id != record.message_id:
        earlier = first.attributes.get("sent_as")
        if earlier in ("template", "email"):
            return WhatsAppPlan(outbound, {"sent_as": earlier, "sent_with": first.message_id}, covered_by=first)
    via = record.attributes.get("sent_as")  # an earlier attempt's choice: a retry sends the same way
    email = await customers.verified_email(session, customer_id=record.customer_id) if record.customer_id else None
    if via not in _ROUTES:
        last = await messages.whatsapp_last_inbound_at(session, conversation_id=record.conversation_id)
        via = late_reply_via(settings, last_inbound_at=last, verified_email=email, now=now)
    if via == "text":
        return WhatsAppPlan(outbound, {"sent_as": "text"})
    if via == "undeliverable" or (via == "email" and email is None):
        return _undeliverable(outbound)
    whole = "\n\n".join(p.content for p in parts) if parts else record.content
    name = await conversations.customer_name(session, conversation_id=record.conversation_id)
    ticket = await tickets.find_for_conversation(session, conversation_id=record.conversation_id)
    ticket_number = ticket.ticket_number if ticket is not None else None
    if via == "template":
        values: dict[TemplateVariable, str | None] = {
            "customer_first_name": _first_name(name),
            "customer_name": name or "there",
            "ticket_number": ticket_number,
            "agent_name": str(record.attributes.get("human_agent") or "") or None,
            "reply_excerpt": whole,
        }
        names = parse_variable_names(settings.whatsapp_late_reply_content_variables)
        late = LateReply(
            "template",
            content_sid=settings.whatsapp_late_reply_content_sid,
            content_variables=content_variables(names, values) if names else None,
        )
        return WhatsAppPlan(
            replace(outbound, late_reply=late),
            {"sent_as": "template", "content_sid": late.content_sid, "content_variables": late.content_variables},
        )
    body = (
        f"Hi {_first_name(name)},\n\nYou wrote to us on WhatsApp. WhatsApp lets us answer there only within "
        f"24 hours of your last message, so here is our reply by email.\n\n{whole}"
    )
    subject = f"Your WhatsApp support request ({ticket_number})" if ticket_number else "Your WhatsApp support request"
    late = LateReply("email", email_to=email, email_subject=subject, email_body=body)
    return WhatsAppPlan(replace(outbound, late_reply=late), {"sent_as": "email", "email_to": email})
