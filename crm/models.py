"""The CRM: SQLAlchemy 2.0 models over PostgreSQL (+pgvector).

The schema itself is owned by the Alembic migrations in ``crm/migrations``; these models mirror
it for the application. Relationships are ``lazy="raise"`` so no query hides behind an attribute.
Enumerations are plain text columns guarded by CHECK constraints that list the words of
``core.vocabulary`` (``tests/crm/test_check_constraints.py`` checks they agree). Tables the application
reaches only through ``text()`` in a repository (``agent_steps``, ``agent_metrics``,
``channel_configs``, ...) have no model here; the migrations own every table.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Integer,
    MetaData,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()"))


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


def _updated() -> Mapped[datetime]:
    # Maintained by the set_updated_at() trigger; the ORM only reads it.
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Customer(Base):
    """One person, whatever channel they write on."""

    __tablename__ = "customers"

    id: Mapped[uuid.UUID] = _uuid_pk()
    email: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    company: Mapped[str | None] = mapped_column(Text)
    plan: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'"))
    # A merged-away customer is a tombstone pointing at the record it was merged into (0010).
    merged_into: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"))
    # Set by a GDPR erasure: the personal fields are nulled, the row stays for foreign keys (0010).
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    identifiers: Mapped[list[CustomerIdentifier]] = relationship(back_populates="customer", lazy="raise")


class CustomerIdentifier(Base):
    """An email address or phone number that identifies a customer across channels."""

    __tablename__ = "customer_identifiers"

    id: Mapped[uuid.UUID] = _uuid_pk()
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), nullable=False)
    identifier_type: Mapped[str] = mapped_column(Text, nullable=False)
    identifier_value: Mapped[str] = mapped_column(Text, nullable=False)
    channel: Mapped[str | None] = mapped_column(Text)
    # Set when a channel proved the identifier (core.vocabulary.IdentifierProof); NULL: a claim,
    # typed by someone, which never finds a customer (migration 0009). At most one customer holds
    # a value verified; several may claim it.
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    verified_via: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()

    customer: Mapped[Customer] = relationship(back_populates="identifiers", lazy="raise")


class IdentityConfirmation(Base):
    """A confirmation link sent to a claimed email or phone; opening it verifies the claim (0009)."""

    __tablename__ = "identity_confirmations"

    id: Mapped[uuid.UUID] = _uuid_pk()
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), nullable=False)
    identifier_type: Mapped[str] = mapped_column(Text, nullable=False)
    identifier_value: Mapped[str] = mapped_column(Text, nullable=False)
    # sha256 of the random token in the link; the token itself is never stored.
    token_hash: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    # The IdentityConfirmationWorkflow run that sends the link: one row per request, however retried.
    request_key: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    created_at: Mapped[datetime] = _created()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    send_attempted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivery_status: Mapped[str | None] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(Text)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Conversation(Base):
    """A support conversation; exactly one Temporal workflow run drives it."""

    __tablename__ = "conversations"

    id: Mapped[uuid.UUID] = _uuid_pk()
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"), nullable=False)
    channel: Mapped[str] = mapped_column(Text, nullable=False)
    conversation_key: Mapped[str] = mapped_column(Text, nullable=False)
    workflow_id: Mapped[str] = mapped_column(Text, nullable=False)
    workflow_run_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="active")
    sentiment_score: Mapped[float | None] = mapped_column(Float)
    subject: Mapped[str | None] = mapped_column(Text)
    # ISO 639-1 code of the customer's language, from the latest inbound message (migration 0007).
    language: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = _created()
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = _updated()
    # How it ended (`ConversationOutcome`), decided by the workflow at close; NULL while open (0016).
    outcome: Mapped[str | None] = mapped_column(Text)
    outcome_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Message(Base):
    """Every message in or out, on any channel."""

    __tablename__ = "messages"

    id: Mapped[uuid.UUID] = _uuid_pk()
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    )
    channel: Mapped[str] = mapped_column(Text, nullable=False)
    direction: Mapped[str] = mapped_column(Text, nullable=False)
    role: Mapped[str] = mapped_column(Text, nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    # Provider id of an inbound message (Twilio MessageSid, Gmail id, form submission id): dedupe key.
    external_message_id: Mapped[str | None] = mapped_column(Text)
    # Our own id for an outbound message, chosen before the send: makes every send idempotent.
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(Text)
    delivery_status: Mapped[str] = mapped_column(Text, nullable=False, server_default="received")
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'"))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'"))
    tokens_used: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    # ISO 639-1 code detected on an inbound message by the guardrails; NULL when undetected (migration 0007).
    language: Mapped[str | None] = mapped_column(Text)
    # The order the CRM recorded messages in (an identity column, migration 0014): a conversation is
    # read in this order. `created_at` is the channel's own time and may tie or run backwards.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), nullable=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Ticket(Base):
    """A support ticket (`TKT-0001`); one per conversation."""

    __tablename__ = "tickets"

    id: Mapped[uuid.UUID] = _uuid_pk()
    ticket_number: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("next_ticket_number()"))
    conversation_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"), nullable=False)
    subject: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str] = mapped_column(Text, nullable=False, server_default="other")
    priority: Mapped[str] = mapped_column(Text, nullable=False, server_default="medium")
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="open")
    source_channel: Mapped[str] = mapped_column(Text, nullable=False)
    resolution_notes: Mapped[str | None] = mapped_column(Text)
    # The address that filed a web-form ticket: its ticket page opens for that address only (0005).
    contact_email: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class KnowledgeBaseChunk(Base):
    """A chunk of a product article with its embedding and full-text vector."""

    __tablename__ = "knowledge_base"

    id: Mapped[uuid.UUID] = _uuid_pk()
    article_id: Mapped[str] = mapped_column(Text, nullable=False)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    category: Mapped[str] = mapped_column(Text, nullable=False)
    chunk_index: Mapped[int] = mapped_column(Integer, nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    content_hash: Mapped[str] = mapped_column(Text, nullable=False)
    # The section's own heading and the headings above it, outermost first (migration 0008).
    section: Mapped[str | None] = mapped_column(Text)
    heading_path: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'"))
    embedding: Mapped[Any] = mapped_column(Vector(), nullable=True)
    embedding_model: Mapped[str | None] = mapped_column(Text)
    search_vector: Mapped[Any] = mapped_column(TSVECTOR, server_default=None, nullable=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Escalation(Base):
    """A conversation handed to a human, with its SLA; at most one open per conversation."""

    __tablename__ = "escalations"

    id: Mapped[uuid.UUID] = _uuid_pk()
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    )
    ticket_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    priority: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="open")
    sla_due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    notified_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # The person who owns the conversation while it is open (migration 0015); NULL: waiting in the queue.
    assignee: Mapped[str | None] = mapped_column(Text)
    assigned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A person's first reply: the SLA is met from then on (0015).
    responded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_by: Mapped[str | None] = mapped_column(Text)
    resolution_action: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class ConversationNote(Base):
    """An agent's internal note on a conversation: never sent, never in the customer's or the model's view."""

    __tablename__ = "conversation_notes"

    id: Mapped[uuid.UUID] = _uuid_pk()
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    )
    # References api_keys (ON DELETE SET NULL in migration 0012); that table has no model here.
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    author: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    # `note`, or `hand_back`: written when a person hands the conversation back; the AI reads these (0015).
    kind: Mapped[str] = mapped_column(Text, nullable=False, server_default="note")
    created_at: Mapped[datetime] = _created()


class SavedReply(Base):
    """A canned answer the team inserts into a reply; `{first_name}`-style placeholders are filled on insert."""

    __tablename__ = "saved_replies"

    id: Mapped[uuid.UUID] = _uuid_pk()
    title: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_by: Mapped[str] = mapped_column(Text, nullable=False)
    updated_by: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
