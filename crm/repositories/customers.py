"""Customers and the identifiers (emails, phone numbers) that find them across channels."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.vocabulary import Channel, IdentifierType, Plan
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
    """The id of the customer this email address or phone number belongs to, if any."""
    found = await session.scalar(
        select(CustomerIdentifier.customer_id).where(
            CustomerIdentifier.identifier_type == kind, CustomerIdentifier.identifier_value == value
        )
    )
    return str(found) if found is not None else None


async def create_customer(session: AsyncSession, *, email: str | None, phone: str | None, name: str | None) -> str:
    """A new customer record; returns its id."""
    created = await session.scalar(insert(Customer).values(email=email, phone=phone, name=name).returning(Customer.id))
    return str(created)


async def link_identifier(
    session: AsyncSession, *, customer_id: str, kind: IdentifierType, value: str, channel: Channel
) -> None:
    """Remember that this identifier finds this customer; an identifier already linked keeps its customer."""
    await session.execute(
        insert(CustomerIdentifier)
        .values(customer_id=customer_id, identifier_type=kind, identifier_value=value, channel=channel)
        .on_conflict_do_nothing(
            index_elements=[CustomerIdentifier.identifier_type, CustomerIdentifier.identifier_value]
        )
    )


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
    """Every email address and phone number this customer is known by (profile first, then identifiers)."""
    rows = await session.execute(
        text(
            "SELECT email, phone FROM customers WHERE id = CAST(:id AS uuid) UNION ALL "
            "SELECT identifier_value, NULL FROM customer_identifiers WHERE customer_id = CAST(:id AS uuid)"
        ),
        {"id": customer_id},
    )
    return [value for row in rows for value in row if value]


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
    """An email address or phone number that finds the customer, and the channel it was first seen on."""

    type: IdentifierType
    value: str
    channel: Channel | None


async def identifiers_of(session: AsyncSession, *, customer_id: uuid.UUID) -> list[IdentifierRecord]:
    """The customer's identifiers, oldest first."""
    rows = await session.execute(
        text(
            "SELECT identifier_type AS type, identifier_value AS value, channel FROM customer_identifiers "
            "WHERE customer_id = :c ORDER BY created_at"
        ),
        {"c": customer_id},
    )
    return [IdentifierRecord(**r._mapping) for r in rows]
