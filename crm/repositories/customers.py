"""Customers and the identifiers (emails, phone numbers) that find them across channels."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.vocabulary import Channel, IdentifierProof, IdentifierType, Plan
from crm.models import Customer, CustomerIdentifier


@dataclass(frozen=True)
class CustomerContact:
    """A customer's id and the contact details on their record."""

    customer_id: str
    email: str | None
    phone: str | None
    name: str | None


async def lock_identifier(session: AsyncSession, *, value: str) -> None:
    """Hold a lock on one email address or phone number until the transaction ends.

    Two first contacts from the same person (two channels at once) would otherwise both create a
    customer; callers take the locks in sorted order so they cannot deadlock.
    """
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"identity:{value}"})


async def find_by_identifier(session: AsyncSession, *, kind: IdentifierType, value: str) -> str | None:
    """The id of the customer this email address or phone number is verified for, if any.

    Claims (identifiers typed by someone, never proven) find nobody.
    """
    found = await session.scalar(
        select(CustomerIdentifier.customer_id).where(
            CustomerIdentifier.identifier_type == kind,
            CustomerIdentifier.identifier_value == value,
            CustomerIdentifier.verified_at.is_not(None),
        )
    )
    return str(found) if found is not None else None


async def has_identifier(session: AsyncSession, *, customer_id: str, kind: IdentifierType, value: str) -> bool:
    """Whether the customer holds this identifier (verified or claimed)."""
    found = await session.scalar(
        select(CustomerIdentifier.id).where(
            CustomerIdentifier.customer_id == customer_id,
            CustomerIdentifier.identifier_type == kind,
            CustomerIdentifier.identifier_value == value,
        )
    )
    return found is not None


async def claimed(session: AsyncSession, *, customer_id: str, kind: IdentifierType) -> list[str]:
    """The customer's unverified values of one kind (claims), oldest first."""
    rows = await session.scalars(
        select(CustomerIdentifier.identifier_value)
        .where(
            CustomerIdentifier.customer_id == customer_id,
            CustomerIdentifier.identifier_type == kind,
            CustomerIdentifier.verified_at.is_(None),
        )
        .order_by(CustomerIdentifier.created_at)
    )
    return list(rows)


async def create_customer(session: AsyncSession, *, email: str | None, phone: str | None, name: str | None) -> str:
    """A new customer record; returns its id."""
    created = await session.scalar(insert(Customer).values(email=email, phone=phone, name=name).returning(Customer.id))
    return str(created)


async def verified_contact(session: AsyncSession, *, kind: IdentifierType, value: str) -> CustomerContact | None:
    """The customer this identifier is verified for, with the contact on their record (one query)."""
    row = (
        await session.execute(
            select(Customer.id, Customer.email, Customer.phone, Customer.name)
            .join(CustomerIdentifier, CustomerIdentifier.customer_id == Customer.id)
            .where(
                CustomerIdentifier.identifier_type == kind,
                CustomerIdentifier.identifier_value == value,
                CustomerIdentifier.verified_at.is_not(None),
            )
        )
    ).one_or_none()
    if row is None:
        return None
    return CustomerContact(customer_id=str(row.id), email=row.email, phone=row.phone, name=row.name)


async def verified_email(session: AsyncSession, *, customer_id: str | uuid.UUID) -> str | None:
    """The customer's most recently verified email address; None when no address is verified."""
    found = await session.scalar(
        select(CustomerIdentifier.identifier_value)
        .where(
            CustomerIdentifier.customer_id == customer_id,
            CustomerIdentifier.identifier_type == "email",
            CustomerIdentifier.verified_at.is_not(None),
        )
        .order_by(CustomerIdentifier.verified_at.desc(), CustomerIdentifier.created_at.desc())
        .limit(1)
    )
    return str(found) if found is not None else None


async def link_identifier(
    session: AsyncSession,
    *,
    customer_id: str,
    kind: IdentifierType,
    value: str,
    channel: Channel,
    verified_via: IdentifierProof | None = None,
) -> None:
    """Record an identifier of this customer: verified (`verified_via`, what proved it) or a claim.

    Idempotent; a claim the customer already holds becomes verified when proven. Verifying a value
    another customer holds verified violates `uq_customer_identifiers_verified`: the caller looks
    first, under `lock_identifier`.
    """
    statement = insert(CustomerIdentifier).values(
        customer_id=customer_id,
        identifier_type=kind,
        identifier_value=value,
        channel=channel,
        verified_at=func.now() if verified_via else None,
        verified_via=verified_via,
    )
    key = [CustomerIdentifier.customer_id, CustomerIdentifier.identifier_type, CustomerIdentifier.identifier_value]
    if verified_via is None:
        await session.execute(statement.on_conflict_do_nothing(index_elements=key))
        return
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=key,
            set_={
                "verified_at": func.coalesce(CustomerIdentifier.verified_at, statement.excluded.verified_at),
                "verified_via": func.coalesce(CustomerIdentifier.verified_via, statement.excluded.verified_via),
            },
        )
    )


async def verify_claim(
    session: AsyncSession, *, customer_id: str, kind: IdentifierType, value: str, via: IdentifierProof, at: datetime
) -> bool:
    """Turn the customer's claim into a verified identifier; False when there is no such claim."""
    result = await session.execute(
        update(CustomerIdentifier)
        .where(
            CustomerIdentifier.customer_id == customer_id,
            CustomerIdentifier.identifier_type == kind,
            CustomerIdentifier.identifier_value == value,
            CustomerIdentifier.verified_at.is_(None),
        )
        .values(verified_at=at, verified_via=via)
        .returning(CustomerIdentifier.id)
    )
    return result.first() is not None


async def fill_in_contact(
    session: AsyncSession, *, customer_id: str, email: str | None, phone: str | None, name: str | None
) -> CustomerContact:
    """Complete the record's missing email, phone and name (known values are never overwritten)."""
    row = (
        await session.execute(
            update(Customer)
            .where(Customer.id == customer_id)
            .values(
                email=func.coalesce(Customer.email, email),
                phone=func.coalesce(Customer.phone, phone),
                name=func.coalesce(Customer.name, name),
            )
            .returning(Customer.id, Customer.email, Customer.phone, Customer.name)
        )
    ).one()
    return CustomerContact(customer_id=str(row.id), email=row.email, phone=row.phone, name=row.name)


# --- used by guardrails
async def contact_points(session: AsyncSession, *, customer_id: str) -> list[str]:
    """The email addresses and phone numbers a reply to this customer may name as the customer's own.

    The customer's verified identifiers. A record with nothing verified (a web-form submission,
    which is always its own customer) also has what its submitter typed: they are naming their own
    details back to themselves. Once anything is verified, claims no longer count: a merge or a
    confirmation may have brought in values typed by someone else.
    """
    rows = await session.execute(
        text(
            "SELECT identifier_value FROM customer_identifiers i WHERE i.customer_id = CAST(:id AS uuid) "
            "AND (i.verified_at IS NOT NULL OR NOT EXISTS (SELECT 1 FROM customer_identifiers v "
            "WHERE v.customer_id = i.customer_id AND v.verified_at IS NOT NULL)) ORDER BY i.created_at"
        ),
        {"id": customer_id},
    )
    return [value for (value,) in rows]


# --- used by gateway
@dataclass(frozen=True)
class CustomerProfile:
    """The customer record as the agent console shows it."""

    id: uuid.UUID
    name: str | None
    email: str | None
    phone: str | None
    company: str | None
    plan: Plan | None


async def profile(session: AsyncSession, *, customer_id: uuid.UUID) -> CustomerProfile | None:
    """The customer's record; None for no such customer."""
    row = (
        await session.execute(
            text("SELECT id, name, email, phone, company, plan FROM customers WHERE id = :c"), {"c": customer_id}
        )
    ).one_or_none()
    return CustomerProfile(**row._mapping) if row is not None else None


@dataclass(frozen=True)
class IdentifierRecord:
    """An email address or phone number of the customer, the channel it was first seen on, and its proof.

    `verified_via` None: a claim (typed by someone, never proven; it finds nobody).
    """

    type: IdentifierType
    value: str
    channel: Channel | None
    verified_via: IdentifierProof | None = None


async def identifiers_of(session: AsyncSession, *, customer_id: uuid.UUID) -> list[IdentifierRecord]:
    """The customer's identifiers, oldest first."""
    rows = await session.execute(
        text(
            "SELECT identifier_type AS type, identifier_value AS value, channel, verified_via "
            "FROM customer_identifiers "
            "WHERE customer_id = :c ORDER BY created_at"
        ),
        {"c": customer_id},
    )
    return [IdentifierRecord(**r._mapping) for r in rows]
