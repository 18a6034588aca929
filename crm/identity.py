"""Cross-channel identity: the same email address or phone number is the same customer everywhere.

A service over `crm.repositories.customers`: the rules (normalisation, which record wins) live
here, the SQL there.
"""

from __future__ import annotations

import re

from sqlalchemy.ext.asyncio import AsyncSession

from core.logging import get_logger
from core.vocabulary import Channel, IdentifierType
from crm.repositories import customers
from crm.repositories.customers import CustomerContact

log = get_logger(__name__)
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


class NoIdentity(ValueError):
    """Neither an email address nor a phone number was given."""


def normalise_email(value: str | None) -> str | None:
    """Lower-cased address, or None when it is not an address."""
    value = (value or "").strip().lower()
    return value if "@" in value else None


def normalise_phone(value: str | None) -> str | None:
    """E.164 or nothing: `whatsapp:+1 (415) 555-0100` → `+14155550100`."""
    if not value:
        return None
    raw = value.strip().removeprefix("whatsapp:")
    digits = re.sub(r"[^\d+]", "", raw)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    return digits if _E164.match(digits) else None


async def resolve_customer(
    session: AsyncSession, *, channel: Channel, email: str | None, phone: str | None, name: str | None
) -> CustomerContact:
    """Find the customer by email or phone (any channel); create one; link every identifier given.

    Runs in the caller's transaction (repositories never commit).
    """
    email = normalise_email(email)
    phone = normalise_phone(phone)
    if email is None and phone is None:
        raise NoIdentity("the message has no email address or phone number to identify the sender")
    # Serialise concurrent first contacts for the same identity (two channels at once).
    for key in sorted(filter(None, (email, phone))):
        await customers.lock_identifier(session, value=key)
    by_email = await customers.find_by_identifier(session, kind="email", value=email) if email else None
    by_phone = await customers.find_by_identifier(session, kind="phone", value=phone) if phone else None
    customer_id = by_email or by_phone
    if customer_id is None:
        customer_id = await customers.create_customer(session, email=email, phone=phone, name=name)
    elif by_email and by_phone and by_email != by_phone:
        # Two records turned out to be one person; keep the email's and leave the merge to a human.
        log.warning("crm.identity_conflict", kept=by_email, other=by_phone)
    identifiers: tuple[tuple[IdentifierType, str | None], ...] = (("email", email), ("phone", phone))
    for kind, value in identifiers:
        if value is not None:
            await customers.link_identifier(session, customer_id=customer_id, kind=kind, value=value, channel=channel)
    return await customers.fill_in_contact(session, customer_id=customer_id, email=email, phone=phone, name=name)
