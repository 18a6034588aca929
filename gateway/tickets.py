"""`GET /api/v1/tickets/{ticket_id}`: a ticket, its conversation's messages and escalation state."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, EmailStr
from sqlalchemy import text

from core.errors import NotFound
from gateway.agents import OptionalAgent
from gateway.deps import ResourcesDep

router = APIRouter(tags=["tickets"])


class TicketMessage(BaseModel):
    id: str
    direction: str
    role: str
    content: str
    delivery_status: str
    created_at: datetime


class TicketEscalation(BaseModel):
    reason: str
    priority: str
    status: str
    sla_due_at: datetime


class TicketView(BaseModel):
    ticket_id: str
    status: str
    channel: str
    category: str
    priority: str
    subject: str | None
    created_at: datetime
    updated_at: datetime
    workflow_id: str | None
    escalation: TicketEscalation | None
    messages: list[TicketMessage]


@router.get("/api/v1/tickets/{ticket_id}", response_model=TicketView, responses={404: {"description": "Not found"}})
async def get_ticket(
    request: Request,
    resources: ResourcesDep,
    ticket_id: Annotated[str, Path(pattern=r"^TKT-\d{4,12}$", description="e.g. TKT-0001")],
    agent: OptionalAgent,
    email: Annotated[EmailStr | None, Query(description="The email address the ticket belongs to.")] = None,
) -> TicketView:
    """The ticket's status and messages, for the customer whose email it is (404 otherwise: no enumeration)
    or for a human agent's API key.

    Failed look-ups are counted per client address (RATE_LIMIT_TICKET_LOOKUP_FAILURES): an address
    that used them up gets 429 here, so ticket numbers cannot be walked for somebody's email.
    """
    client = request.client.host if request.client else "unknown"
    if agent is None:
        await resources.limiter.refuse_if_exhausted(
            "ticket_lookup_failures", client, "too many failed ticket look-ups from this address"
        )
    if agent is None and email is None:
        await resources.limiter.count("ticket_lookup_failures", client)
        raise NotFound(f"no ticket {ticket_id} for that email address")
    async with resources.sessions() as session:
        ticket = (
            await session.execute(
                text(
                    "SELECT t.ticket_number, t.status, t.source_channel, t.category, t.priority, t.subject, "
                    "t.created_at, t.updated_at, t.conversation_id, c.workflow_id FROM tickets t "
                    "LEFT JOIN conversations c ON c.id = t.conversation_id "
                    # The address that filed the ticket, not any address linked to the customer:
                    # records are unified on unverified identifiers (a phone typed into the form).
                    "WHERE t.ticket_number = :n AND (:agent OR t.contact_email = :e)"
                ),
                {"n": ticket_id, "e": str(email).lower() if email else None, "agent": agent is not None},
            )
        ).one_or_none()
        if ticket is None:
            if agent is None:
                await resources.limiter.count("ticket_lookup_failures", client)
            raise NotFound(f"no ticket {ticket_id} for that email address")
        messages = (
            await session.execute(
                text(
                    "SELECT id, direction, role, content, delivery_status, created_at FROM messages "
                    "WHERE conversation_id = :c ORDER BY created_at, id"
                ),
                {"c": ticket.conversation_id},
            )
        ).all()
        escalation = (
            await session.execute(
                text(
                    "SELECT reason, priority, status, sla_due_at FROM escalations WHERE conversation_id = :c "
                    "ORDER BY created_at DESC LIMIT 1"
                ),
                {"c": ticket.conversation_id},
            )
        ).one_or_none()
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
        escalation=TicketEscalation(**escalation._mapping) if escalation else None,
        messages=[TicketMessage(**{**m._mapping, "id": str(m.id)}) for m in messages],
    )
