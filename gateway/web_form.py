"""`POST /api/v1/support/form`: the web support form, validated, ticketed synchronously, sent through Kafka."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

import phonenumbers
from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, EmailStr, Field, StringConstraints, field_validator
from sqlalchemy.exc import SQLAlchemyError

from core.errors import ServiceUnavailable
from core.vocabulary import WEB_FORM_DEFAULT_PRIORITY, TicketCategory, WebFormPriority
from crm.identity import IdentityRules, normalise_phone, resolve_customer
from crm.repositories import conversations, tickets
from gateway.deps import ResourcesDep
from gateway.producer import publish_inbound
from workflows.contracts import InboundMessage, SenderIdentity, conversation_workflow_id

router = APIRouter(tags=["web form"])

# The shortest national numbers in use have 4-5 digits; E.164 allows at most 15.
MIN_NATIONAL_DIGITS, MAX_DIGITS = 4, 15
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# The longest message a customer may send from the form or the ticket page's reply box.
MESSAGE_MAX_LENGTH = 5000


def refuse_control_characters(value: str) -> str:
    """The text unchanged; a ValueError (a 422 field error) if it holds control characters."""
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


class SupportForm(BaseModel):
    """What a customer submits; the browser checks the same rules before sending."""

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    email: EmailStr
    subject: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=200)]
    category: TicketCategory
    message: Annotated[str, StringConstraints(strip_whitespace=True, min_length=10, max_length=MESSAGE_MAX_LENGTH)]
    priority: WebFormPriority = WEB_FORM_DEFAULT_PRIORITY
    phone: str | None = Field(default=None, max_length=32, description="E.164, e.g. +14155550100")

    @field_validator("name", "subject", "message")
    @classmethod
    def _no_control_characters(cls, value: str) -> str:
        return refuse_control_characters(value)

    @field_validator("phone")
    @classmethod
    def _phone_number(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if normalise_phone(value) is not None:
            return value.strip()
        # Without a country code, the handler reads it in IDENTITY_PHONE_DEFAULT_REGION (if set);
        # what cannot be a number in any region is refused here, with the other fields.
        digits = len(phonenumbers.normalize_digits_only(value))
        if value.strip().startswith(("+", "00")) or not MIN_NATIONAL_DIGITS <= digits <= MAX_DIGITS:
            raise ValueError("must be an international number such as +14155550100")
        return value.strip()


def web_form_message(
    *,
    ticket_number: str,
    submission_id: str,
    sender: SenderIdentity,
    text: str,
    received_at: datetime,
    subject: str | None,
    metadata: dict[str, str] | None = None,
) -> InboundMessage:
    """A web-form customer's message as the conversation workflow receives it (through `publish_inbound`).

    The form's first message and every later reply from the ticket page are built here: keyed by
    the ticket number, they reach the same conversation workflow, in order (one Kafka key). The
    submission id is the message's id, so a message produced twice is recorded and answered once.
    """
    return InboundMessage(
        channel="web_form",
        external_message_id=submission_id,
        conversation_key=ticket_number,
        sender=sender,
        text=text,
        received_at=received_at,
        subject=subject,
        metadata={**(metadata or {}), "submission_id": submission_id},
    )


class SupportFormAccepted(BaseModel):
    ticket_id: str
    status: Literal["received"]
    message: str
    created_at: datetime


@router.post(
    "/api/v1/support/form",
    status_code=201,
    response_model=SupportFormAccepted,
    responses={
        422: {"description": "Invalid fields"},
        429: {"description": "Too many submissions from this email; see Retry-After"},
        503: {"description": "Broker unavailable; retry"},
    },
)
async def submit_support_form(form: SupportForm, resources: ResourcesDep) -> SupportFormAccepted:
    """Create the customer, conversation and ticket, then hand the message to the conversation workflow."""
    await resources.limiter.check("web_form", str(form.email))
    rules = IdentityRules.from_settings(resources.settings)
    phone = rules.phone(form.phone)
    if form.phone is not None and phone is None:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "phone"),
                    "msg": "must be an international number such as +14155550100",
                    "type": "value_error",
                }
            ]
        )
    submission_id = f"form-{uuid.uuid4()}"
    now = datetime.now(UTC)
    # The typed email and phone are claims: this submission becomes its own customer (crm.identity).
    sender = SenderIdentity(email=rules.email(str(form.email)) or str(form.email).lower(), phone=phone, name=form.name)
    try:
        async with resources.sessions() as session, session.begin():
            customer = await resolve_customer(
                session, channel="web_form", email=sender.email, phone=sender.phone, name=sender.name, rules=rules
            )
            # Drawn first: the web form's conversation is keyed by its ticket number.
            ticket_number = await tickets.next_ticket_number(session)
            conversation_id = await conversations.create_conversation(
                session,
                customer_id=customer.customer_id,
                channel="web_form",
                conversation_key=ticket_number,
                workflow_id=conversation_workflow_id("web_form", ticket_number),
                subject=form.subject,
            )
            ticket = await tickets.create_ticket(
                session,
                conversation_id=conversation_id,
                customer_id=customer.customer_id,
                channel="web_form",
                subject=form.subject,
                category=form.category,
                priority=form.priority,
                ticket_number=ticket_number,
                contact_email=sender.email,
            )
            message = web_form_message(
                ticket_number=ticket_number,
                submission_id=submission_id,
                sender=sender,
                text=form.message,
                received_at=now,
                subject=form.subject,
                metadata={"category": form.category, "priority": form.priority},
            )
            # Produced inside the transaction: if the broker does not acknowledge, nothing is kept and
            # the customer gets a 503 to retry; the ticket exists only for a message that will be answered.
            await publish_inbound(resources, message)
    except (SQLAlchemyError, OSError) as exc:
        # PostgreSQL down: tell the browser to retry, like every other dependency outage.
        raise ServiceUnavailable("the database is unavailable; retry later") from exc
    return SupportFormAccepted(
        ticket_id=ticket_number,
        status="received",
        message="Your support request has been received. You can follow the answer on your ticket page.",
        created_at=ticket.created_at,
    )
