"""`GET /api/v1/tickets/{ticket_id}`: a ticket, its conversation's messages and escalation state."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, EmailStr
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import NotFound
from core.markdown import render_html
from core.vocabulary import (
    Channel,
    DeliveryStatus,
    EscalationReason,
    EscalationStatus,
    MessageDirection,
    MessageRole,
    Priority,
    TicketCategory,
    TicketStatus,
)
from crm.identity import IdentityRules
from crm.repositories import escalations, messages, tickets
from crm.repositories.tickets import TicketPage
from gateway.agents import OptionalAgent
from gateway.deps import ResourcesDep
from gateway.resources import Resources

router = APIRouter(tags=["tickets"])


class TicketMessage(BaseModel):
    id: str
    direction: MessageDirection
    role: MessageRole
    content: str
    # Our replies are Markdown: this is their safe HTML (raw HTML escaped, script links dropped).
    html: str | None = None
    delivery_status: DeliveryStatus
    created_at: datetime


class TicketEscalation(BaseModel):
    reason: EscalationReason
    priority: Priority
    status: EscalationStatus
    sla_due_at: datetime


class TicketView(BaseModel):
    ticket_id: str
    status: TicketStatus
    channel: Channel
    category: TicketCategory
    priority: Priority
    subject: str | None
    created_at: datetime
    updated_at: datetime
    workflow_id: str | None
    escalation: TicketEscalation | None
    messages: list[TicketMessage]


async def authorised_ticket(
    session: AsyncSession,
    request: Request,
    resources: Resources,
    *,
    ticket_number: str,
    email: str | None,
    agent: bool,
) -> TicketPage:
    """The ticket, for the customer whose email filed it (404 otherwise: no enumeration) or a human agent.

    Failed look-ups are counted per client address (RATE_LIMIT_TICKET_LOOKUP_FAILURES): an address
    that used them up gets 429, so ticket numbers cannot be walked for somebody's email.
    """
    client = request.client.host if request.client else "unknown"
    if not agent:
        await resources.limiter.refuse_if_exhausted(
            "ticket_lookup_failures", client, "too many failed ticket look-ups from this address"
        )
    # The address as the web form stored it (crm.identity's normalisation), whatever its case.
    contact = IdentityRules.from_settings(resources.settings).email(email) if email else None
    if not agent and contact is None:
        await resources.limiter.count("ticket_lookup_failures", client)
        raise NotFound(f"no ticket {ticket_number} for that email address")
    ticket = await tickets.find_ticket(session, ticket_number=ticket_number, contact_email=contact, any_contact=agent)
    if ticket is None:
        if not agent:
            await resources.limiter.count("ticket_lookup_failures", client)
        raise NotFound(f"no ticket {ticket_number} for that email address")
    return ticket


@router.get("/api/v1/tickets/{ticket_id}", response_model=TicketView, responses={404: {"description": "Not found"}})
async def get_ticket(
    request: Request,
    resources: ResourcesDep,
    ticket_id: Annotated[str, Path(pattern=r"^TKT-\d{4,12}$", description="e.g. TKT-0001")],
    agent: OptionalAgent,
    email: Annotated[EmailStr | None, Query(description="The email address the ticket belongs to.")] = None,
) -> TicketView:
    """The ticket's status and messages, for the customer whose email it is (404 otherwise: no enumeration)
    or for a human agent's API key (see `authorised_ticket`).

    Only this ticket's own conversation is shown, never the customer's other conversations.
    """
    async with resources.sessions() as session:
        ticket = await authorised_ticket(
            session,
            request,
            resources,
            ticket_number=ticket_id,
            email=str(email) if email else None,
            agent=agent is not None,
        )
        thread = (
            await messages.thread(session, conversation_id=ticket.conversation_id) if ticket.conversation_id else []
        )
        escalation = (
            await escalations.latest_of_conversation(session, conversation_id=ticket.conversation_id)
            if ticket.conversation_id
            else None
        )
    return TicketView(
        ticket_id=ticket.ticket_number,
        status=ticket.status,
        channel=ticket.source_channel,
        category=ticket.category,
        priority=ticket.priority,
        subject=ticket.subject,
        created_at=ticket.created_at,
        updated_at=ticket.updated_at,
        workflow_id=ticket.workflow_id,
        escalation=TicketEscalation.model_validate(escalation, from_attributes=True) if escalation else None,
        messages=[
            TicketMessage(
                id=str(m.id),
                direction=m.direction,
                role=m.role,
                content=m.content,
                html=render_html(m.content, breaks=True) if m.direction == "outbound" else None,
                delivery_status=m.delivery_status,
                created_at=m.created_at,
            )
            for m in thread
        ],
    )
