"""Confirmation links for claimed identifiers: one row per request, the token's hash, its send and its use."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from core.vocabulary import IdentifierType


@dataclass(frozen=True)
class ConfirmationRequest:
    """A confirmation request as its sender sees it."""

    id: uuid.UUID
    customer_id: uuid.UUID
    identifier_type: IdentifierType
    identifier_value: str
    expires_at: datetime
    send_attempted_at: datetime | None
    sent_at: datetime | None
    delivery_status: str | None
    provider_message_id: str | None
    confirmed_at: datetime | None


_COLUMNS = (
    "id, customer_id, identifier_type, identifier_value, expires_at, send_attempted_at, sent_at, "
    "delivery_status, provider_message_id, confirmed_at"
)


async def start_request(
    session: AsyncSession,
    *,
    request_key: str,
    customer_id: str,
    kind: IdentifierType,
    value: str,
    token_hash: str,
    expires_at: datetime,
) -> ConfirmationRequest:
    """The request's row, created once per `request_key` (a retry gets the first attempt's row back)."""
    await session.execute(
        text(
            "INSERT INTO identity_confirmations (customer_id, identifier_type, identifier_value, token_hash, "
            "request_key, expires_at) VALUES (CAST(:c AS uuid), :k, :v, :h, :r, :e) "
            "ON CONFLICT (request_key) DO NOTHING"
        ),
        {"c": customer_id, "k": kind, "v": value, "h": token_hash, "r": request_key, "e": expires_at},
    )
    row = (
        await session.execute(
            text(f"SELECT {_COLUMNS} FROM identity_confirmations WHERE request_key = :r FOR UPDATE"),
            {"r": request_key},
        )
    ).one()
    return ConfirmationRequest(**row._mapping)


async def begin_send(
    session: AsyncSession, *, confirmation_id: uuid.UUID, token_hash: str, expires_at: datetime, at: datetime
) -> None:
    """Record that a send is about to happen with this token (the hash replaces an unsent one's)."""
    await session.execute(
        text(
            "UPDATE identity_confirmations SET token_hash = :h, expires_at = :e, send_attempted_at = :at "
            "WHERE id = :id AND sent_at IS NULL"
        ),
        {"id": confirmation_id, "h": token_hash, "e": expires_at, "at": at},
    )


async def abandon_send(session: AsyncSession, *, confirmation_id: uuid.UUID) -> None:
    """The provider refused or failed the send: nothing went out, the next attempt may send again."""
    await session.execute(
        text("UPDATE identity_confirmations SET send_attempted_at = NULL WHERE id = :id AND sent_at IS NULL"),
        {"id": confirmation_id},
    )


async def record_sent(
    session: AsyncSession, *, confirmation_id: uuid.UUID, status: str, provider_message_id: str | None, at: datetime
) -> None:
    """What the provider said about the link's message."""
    await session.execute(
        text(
            "UPDATE identity_confirmations SET sent_at = :at, delivery_status = :s, provider_message_id = :p "
            "WHERE id = :id"
        ),
        {"id": confirmation_id, "s": status, "p": provider_message_id, "at": at},
    )


async def recently_requested(
    session: AsyncSession, *, customer_id: str, kind: IdentifierType, value: str, since: datetime
) -> bool:
    """Whether an unused link for this claim was requested after `since` (a double click, a second tab)."""
    found = await session.scalar(
        text(
            "SELECT 1 FROM identity_confirmations WHERE customer_id = CAST(:c AS uuid) AND identifier_type = :k "
            "AND identifier_value = :v AND confirmed_at IS NULL AND created_at > :since LIMIT 1"
        ),
        {"c": customer_id, "k": kind, "v": value, "since": since},
    )
    return found is not None


@dataclass(frozen=True)
class ConfirmationLink:
    """What a token confirms."""

    id: uuid.UUID
    customer_id: uuid.UUID
    identifier_type: IdentifierType
    identifier_value: str
    expires_at: datetime
    confirmed_at: datetime | None


async def by_token_hash(session: AsyncSession, *, token_hash: str, lock: bool = False) -> ConfirmationLink | None:
    """The link whose token hashes to `token_hash` (locked for its confirmation with `lock`); None if unknown."""
    row = (
        await session.execute(
            text(
                "SELECT id, customer_id, identifier_type, identifier_value, expires_at, confirmed_at "
                "FROM identity_confirmations WHERE token_hash = :h" + (" FOR UPDATE" if lock else "")
            ),
            {"h": token_hash},
        )
    ).one_or_none()
    return ConfirmationLink(**row._mapping) if row is not None else None


async def mark_confirmed(session: AsyncSession, *, confirmation_id: uuid.UUID, at: datetime) -> None:
    """The link was used: it confirms nothing again."""
    await session.execute(
        text("UPDATE identity_confirmations SET confirmed_at = :at WHERE id = :id AND confirmed_at IS NULL"),
        {"id": confirmation_id, "at": at},
    )


@dataclass(frozen=True)
class TicketClaimant:
    """The customer a ticket belongs to, and the address that filed it (web form)."""

    customer_id: uuid.UUID
    contact_email: str | None


async def ticket_claimant(session: AsyncSession, *, ticket_number: str) -> TicketClaimant | None:
    """Who a ticket belongs to; None for no such ticket."""
    row = (
        await session.execute(
            text("SELECT customer_id, contact_email FROM tickets WHERE ticket_number = :n"), {"n": ticket_number}
        )
    ).one_or_none()
    return TicketClaimant(**row._mapping) if row is not None else None
