"""Cross-channel identity: the same email address or phone number is the same customer everywhere."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from core.logging import get_logger

log = get_logger(__name__)
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


class NoIdentity(ValueError):
    """Neither an email address nor a phone number was given."""


@dataclass(frozen=True)
class ResolvedCustomer:
    customer_id: str
    email: str | None
    phone: str | None
    name: str | None


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


async def _customer_by_identifier(session: AsyncSession, kind: str, value: str | None) -> object | None:
    if value is None:
        return None
    row = await session.execute(
        text("SELECT customer_id FROM customer_identifiers WHERE identifier_type = :t AND identifier_value = :v"),
        {"t": kind, "v": value},
    )
    return row.scalar_one_or_none()


async def resolve_customer(
    session: AsyncSession, *, channel: str, email: str | None, phone: str | None, name: str | None
) -> ResolvedCustomer:
    """Find the customer by email or phone (any channel); create one; link every identifier given.

    Runs in the caller's transaction (repositories never commit).
    """
    email = normalise_email(email)
    phone = normalise_phone(phone)
    if email is None and phone is None:
        raise NoIdentity("the message has no email address or phone number to identify the sender")
    # Serialise concurrent first contacts for the same identity (two channels at once).
    for key in sorted(filter(None, (email, phone))):
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"identity:{key}"})
    by_email = await _customer_by_identifier(session, "email", email)
    by_phone = await _customer_by_identifier(session, "phone", phone)
    customer_id = by_email or by_phone
    if customer_id is None:
        customer_id = (
            await session.execute(
                text("INSERT INTO customers (email, phone, name) VALUES (:e, :p, :n) RETURNING id"),
                {"e": email, "p": phone, "n": name},
            )
        ).scalar_one()
    elif by_email and by_phone and by_email != by_phone:
        # Two records turned out to be one person; keep the email's and leave the merge to a human.
        log.warning("crm.identity_conflict", kept=str(by_email), other=str(by_phone))
    for kind, value in (("email", email), ("phone", phone)):
        if value is not None:
            await session.execute(
                text(
                    "INSERT INTO customer_identifiers (customer_id, identifier_type, identifier_value, channel) "
                    "VALUES (:c, :t, :v, :ch) ON CONFLICT (identifier_type, identifier_value) DO NOTHING"
                ),
                {"c": customer_id, "t": kind, "v": value, "ch": channel},
            )
    row = (
        await session.execute(
            text(
                "UPDATE customers SET email = coalesce(email, :e), phone = coalesce(phone, :p), "
                "name = coalesce(name, :n) WHERE id = :c RETURNING id, email, phone, name"
            ),
            {"c": customer_id, "e": email, "p": phone, "n": name},
        )
    ).one()
    return ResolvedCustomer(customer_id=str(row.id), email=row.email, phone=row.phone, name=row.name)
