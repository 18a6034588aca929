"""Cross-channel identity: a verified email address or phone number is the same customer everywhere.

A service over `crm.repositories.customers`: the rules (normalisation, what proves an identifier,
which record a message belongs to) live here, the SQL there.

An identifier is *verified* when the channel proved it: an email that reached the support mailbox
from that address (`gmail`), a Twilio-signed WhatsApp message from that number (`whatsapp`), or a
confirmation link sent to it and opened (`confirmation_link`). Anything else a message carries (the
email and phone typed into the web form) is a *claim*: stored on the customer who made it, never
used to find a customer, so it can neither merge records nor open anyone's history. A claim joins
two records only when the real owner confirms it (`confirm_claim`) or a human merges them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.ext.asyncio import AsyncSession

from core.logging import get_logger
from core.settings import Settings
from core.vocabulary import Channel, IdentifierProof, IdentifierType
from crm.merging import MergeRecord, merge_customers
from crm.repositories import customers
from crm.repositories.customers import CustomerContact

log = get_logger(__name__)

# Gmail ignores dots in the local part (and googlemail.com is the same mailbox).
_DOTLESS_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
# The channel that proves each kind of identifier, and the proof it gives.
_PROOF: dict[Channel, tuple[IdentifierType, IdentifierProof]] = {
    "email": ("email", "gmail"),
    "whatsapp": ("phone", "whatsapp"),
}


class NoIdentity(ValueError):
    """Neither an email address nor a phone number was given."""


@dataclass(frozen=True)
class IdentityRules:
    """How identifiers are normalised (IDENTITY_PHONE_DEFAULT_REGION, IDENTITY_EMAIL_CANONICAL)."""

    phone_default_region: str | None = None
    email_canonical: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> IdentityRules:
        region = settings.identity_phone_default_region
        return cls(
            phone_default_region=region.upper() if region else None, email_canonical=settings.identity_email_canonical
        )

    def email(self, value: str | None) -> str | None:
        return normalise_email(value, canonical=self.email_canonical)

    def phone(self, value: str | None) -> str | None:
        return normalise_phone(value, default_region=self.phone_default_region)


def normalise_email(value: str | None, *, canonical: bool = False) -> str | None:
    """email-validator's normalised address, lower-cased; None when it is not a valid address.

    `canonical` also drops plus-addressing (`ann+news@x.com` → `ann@x.com`) and, for Gmail only,
    the dots of the local part (`a.nn@gmail.com` → `ann@gmail.com`).
    """
    if not value or not value.strip():
        return None
    try:
        address = validate_email(value.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None
    if not canonical:
        return address
    local, _, domain = address.rpartition("@")
    local = local.split("+", 1)[0]
    if domain in _DOTLESS_DOMAINS:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}" if local else address


def normalise_phone(value: str | None, *, default_region: str | None = None) -> str | None:
    """E.164 (`whatsapp:+1 (415) 555-0100`, `0014155550100` → `+14155550100`); None when not a number.

    A number without a country code is read in `default_region` (None: not accepted). Numbers are
    checked for a possible length, not against the current numbering plan: a stale plan must never
    refuse a real customer's WhatsApp number.
    """
    if not value or not value.strip():
        return None
    raw = value.strip()
    if raw.lower().startswith("whatsapp:"):
        raw = raw[len("whatsapp:") :].strip()
    if raw.startswith("00"):  # the international call prefix most of the world dials for "+"
        raw = "+" + raw[2:]
    return _e164(raw, default_region)


# Parsing costs ~15 µs; the same senders write again and again (every WhatsApp webhook is normalised).
@lru_cache(maxsize=65_536)
def _e164(raw: str, default_region: str | None) -> str | None:
    try:
        parsed = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


async def resolve_customer(
    session: AsyncSession,
    *,
    channel: Channel,
    email: str | None,
    phone: str | None,
    name: str | None,
    rules: IdentityRules | None = None,
    sender_proven: bool = True,
) -> CustomerContact:
    """The customer a message belongs to: found by the identifier its channel proves, else a new one.

    The proven identifier (the From address of an email, the number of a WhatsApp message) is
    recorded verified; any other identifier the message carries is recorded as a claim of that
    customer. The web form proves nothing: each submission is its own customer, with the typed
    email and phone as claims. Runs in the caller's transaction (repositories never commit).
    """
    rules = rules or IdentityRules()
    email, phone = rules.email(email), rules.phone(phone)
    if email is None and phone is None:
        raise NoIdentity("the message has no email address or phone number to identify the sender")
    given: dict[IdentifierType, str | None] = {"email": email, "phone": phone}
    # An email whose From the receiving server could not authenticate (no aligned DKIM/DMARC pass)
    # proves nothing: anyone can write any From header.
    proof = _PROOF.get(channel) if sender_proven else None
    proven = proof if proof is not None and given[proof[0]] is not None else None
    if proven is not None and all(v is None for k, v in given.items() if k != proven[0]):
        # The common case, a known customer writing again: one read, no lock, no write.
        known = await customers.verified_contact(session, kind=proven[0], value=given[proven[0]] or "")
        on_record = {"email": known.email, "phone": known.phone} if known is not None else {}
        if known is not None and on_record[proven[0]] is not None and (name is None or known.name is not None):
            return known
    customer_id: str | None = None
    if proven is not None:
        kind = proven[0]
        value = given[kind] or ""
        # Serialise concurrent first contacts from the same address or number.
        await customers.lock_identifier(session, value=value)
        customer_id = await customers.find_by_identifier(session, kind=kind, value=value)
    created = customer_id is None
    # The record's own contact details: the verified one, or (a web-form record, nothing verified)
    # what its submitter typed. A claim never fills in an existing customer's record.
    contact = {k: v for k, v in given.items() if proven is None or k == proven[0]}
    if customer_id is None:
        customer_id = await customers.create_customer(
            session, email=contact.get("email"), phone=contact.get("phone"), name=name
        )
    for kind_, value_ in given.items():
        if value_ is not None:
            via = proven[1] if proven is not None and kind_ == proven[0] else None  # None: a claim
            await customers.link_identifier(
                session, customer_id=customer_id, kind=kind_, value=value_, channel=channel, verified_via=via
            )
    if created:
        log.info("crm.customer_created", channel=channel, verified=proven is not None)
    return await customers.fill_in_contact(
        session, customer_id=customer_id, email=contact.get("email"), phone=contact.get("phone"), name=name
    )


@dataclass(frozen=True)
class ConfirmedClaim:
    """What a confirmed claim did: the customer that now holds the identifier verified."""

    customer_id: str
    # Set when the confirming record was merged into the identifier's earlier verified owner.
    merge: MergeRecord | None = None


class ClaimNotFound(LookupError):
    """The customer does not claim that identifier."""


async def confirm_claim(
    session: AsyncSession, *, customer_id: str, kind: IdentifierType, value: str, at: datetime
) -> ConfirmedClaim:
    """The person behind `value` confirmed it for `customer_id`: the claim becomes verified.

    When another customer already holds `value` verified, both records are that person: this
    customer is merged into the owner (`crm.merging.merge_customers`), who keeps the identifier.
    Raises ClaimNotFound when the customer does not claim `value`; MergeRefused from the merge.
    """
    await customers.lock_identifier(session, value=value)
    owner = await customers.find_by_identifier(session, kind=kind, value=value)
    if owner == customer_id:
        return ConfirmedClaim(customer_id=customer_id)
    if not await customers.has_identifier(session, customer_id=customer_id, kind=kind, value=value):
        raise ClaimNotFound(f"the customer does not claim that {kind}")
    if owner is None:
        await customers.verify_claim(
            session, customer_id=customer_id, kind=kind, value=value, via="confirmation_link", at=at
        )
        await customers.fill_in_contact(
            session,
            customer_id=customer_id,
            email=value if kind == "email" else None,
            phone=value if kind == "phone" else None,
            name=None,
        )
        log.info("crm.claim_confirmed", kind=kind, merged=False)
        return ConfirmedClaim(customer_id=customer_id)
    merge = await merge_customers(
        session,
        source_id=customer_id,
        target_id=owner,
        actor="customer (confirmation link)",
        reason=f"the customer confirmed the {kind} of an existing customer through a confirmation link",
    )
    log.info("crm.claim_confirmed", kind=kind, merged=True, merge_id=str(merge.merge_id))
    return ConfirmedClaim(customer_id=owner, merge=merge)
