"""WhatsApp's 24-hour customer-service window, and how a human reply outside it goes out.

WhatsApp Business accepts free-form messages only within 24 hours of the customer's last message
to us; outside that window only an approved template may be sent (Twilio refuses free text with
error 63016). A human agent often answers later than that, so a late human reply goes out:

1. as the approved template `WHATSAPP_LATE_REPLY_CONTENT_SID` (a Twilio Content SID, `HX...`),
   with the variables `WHATSAPP_LATE_REPLY_CONTENT_VARIABLES` names, when one is configured;
2. else by email from the support mailbox, when the customer has a verified email address and
   Gmail is configured;
3. else not at all: the send fails for good and the console says so beforehand.

Why the template does not carry the reply itself: Twilio caps a variable's value (1,600 characters,
fewer than 250 recommended), WhatsApp caps a template body at 1,024 characters and refuses
parameters with new lines, tabs or more than four consecutive spaces. A human's answer, with its
paragraphs and lists, does not survive that; so the template tells the customer the team has
answered and asks them to write back, which reopens the window (`reply_excerpt` can put the first
line-free 200 characters of the answer in the template, for operators whose template has a slot).

Pure functions: the send activity and the console's conversation view both decide with them, so
what the console announces is what the activity does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal, cast, get_args

if TYPE_CHECKING:  # core.settings imports this module (its validator): no import cycle at run time
    from core.settings import Settings

WINDOW: Final = timedelta(hours=24)

# How a human reply on WhatsApp goes out: as typed (window open), as the approved template, by
# email, or not at all.
LateReplyVia = Literal["text", "template", "email", "undeliverable"]

# What a template variable may hold, named in WHATSAPP_LATE_REPLY_CONTENT_VARIABLES in the order
# of the template's {{1}}, {{2}}, ...
TemplateVariable = Literal["customer_first_name", "customer_name", "ticket_number", "agent_name", "reply_excerpt"]
TEMPLATE_VARIABLES: Final[tuple[TemplateVariable, ...]] = get_args(TemplateVariable)
# WhatsApp's parameter rules: one line, no tabs; Twilio recommends values under 250 characters.
EXCERPT_CHARS: Final = 200


def closes_at(last_inbound_at: datetime | None) -> datetime | None:
    """When the window closes (or closed); None without any message from the customer."""
    return last_inbound_at + WINDOW if last_inbound_at is not None else None


def is_open(last_inbound_at: datetime | None, *, now: datetime) -> bool:
    """Whether free-form messages may still go to the customer."""
    end = closes_at(last_inbound_at)
    return end is not None and now < end


def late_reply_via(
    settings: Settings, *, last_inbound_at: datetime | None, verified_email: str | None, now: datetime
) -> LateReplyVia:
    """How a human reply sent at `now` goes out (see the module docstring for the order)."""
    if is_open(last_inbound_at, now=now):
        return "text"
    if settings.whatsapp_late_reply_content_sid:
        return "template"
    if verified_email and settings.gmail_configured:
        return "email"
    return "undeliverable"


def parse_variable_names(spec: str) -> tuple[TemplateVariable, ...]:
    """`"customer_first_name, ticket_number"` → the names in order; ValueError for an unknown one."""
    names = [part.strip() for part in spec.split(",") if part.strip()]
    unknown = [name for name in names if name not in TEMPLATE_VARIABLES]
    if unknown:
        raise ValueError(f"unknown template variable(s) {unknown}; use {', '.join(TEMPLATE_VARIABLES)}")
    return tuple(cast(TemplateVariable, name) for name in names)


def one_line(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` on one line (WhatsApp refuses new lines and runs of spaces in parameters), cut to `limit`."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def content_variables(names: Sequence[TemplateVariable], values: Mapping[TemplateVariable, str | None]) -> str:
    """Twilio's `ContentVariables`: a JSON object {"1": ..., "2": ...} in the template's order.

    A missing value becomes "-": WhatsApp refuses an empty parameter.
    """
    return json.dumps({str(i + 1): one_line(values.get(name) or "") or "-" for i, name in enumerate(names)})
