"""Confirming a claimed email or phone: the ticket page asks for a link, the link's page confirms it.

`POST /api/v1/tickets/{ticket_id}/confirm-identity` (the ticket page's own access: the email that
filed the ticket, or an agent's API key) starts IdentityConfirmationWorkflow, which sends a link
to the email address or WhatsApp number the customer typed (a claim, crm.identity). `GET /verify/{token}`
shows what the link confirms and a Confirm button (a GET never confirms: mail and chat apps open
links to preview them); `POST /verify/{token}` confirms: the claim becomes verified, and a record
that turns out to be an existing verified customer is merged into it.
"""

from __future__ import annotations

import hashlib
import html
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, EmailStr
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from core.errors import Conflict, CRMError, NotFound, ServiceUnavailable
from core.logging import get_logger
from core.vocabulary import IdentifierType
from crm.db import transaction
from crm.identity import ClaimNotFound, confirm_claim
from crm.repositories import customers, identity_confirmations
from gateway.agents import OptionalAgent
from gateway.agents.customer_service import tell_workflows
from gateway.deps import ResourcesDep
from gateway.resources import Resources
from gateway.tickets import authorised_ticket
from gateway.ui import SECURITY_HEADERS
from workflows.identity_confirmation import (
    IdentityConfirmationInput,
    IdentityConfirmationWorkflow,
    identity_confirmation_workflow_id,
)

log = get_logger(__name__)
router = APIRouter(tags=["tickets"])

# A second request for the same claim within this window is the same request (a double click).
_SAME_REQUEST = timedelta(seconds=60)
_TOKEN = r"^[A-Za-z0-9_-]{16,128}$"


class ConfirmIdentityRequest(BaseModel):
    """Which of the details typed on the form to confirm."""

    identifier: IdentifierType


class ConfirmIdentityAccepted(BaseModel):
    identifier: IdentifierType
    # The address or number the link goes to, partly hidden.
    sent_to: str
    status: Literal["sending", "already_sent"]
    message: str


def mask(kind: IdentifierType, value: str) -> str:
    """`a***@example.com`, `+1******0100`: enough to recognise, not to read out."""
    if kind == "email":
        local, _, domain = value.rpartition("@")
        return f"{local[:1]}***@{domain}"
    return value[:2] + "*" * max(len(value) - 6, 1) + value[-4:]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _configured(resources: Resources, kind: IdentifierType) -> bool:
    s = resources.settings
    if kind == "email":
        return s.gmail_configured
    return s.twilio_configured and bool(s.twilio_whatsapp_from)


@router.post(
    "/api/v1/tickets/{ticket_id}/confirm-identity",
    status_code=202,
    response_model=ConfirmIdentityAccepted,
    responses={
        404: {"description": "No such ticket for that email"},
        409: {"description": "Nothing to confirm, or the channel cannot send"},
        429: {"description": "Too many links for this ticket; see Retry-After"},
        503: {"description": "Temporal or the database unavailable; retry"},
    },
)
async def confirm_identity(
    request: Request,
    resources: ResourcesDep,
    body: ConfirmIdentityRequest,
    ticket_id: Annotated[str, Path(pattern=r"^TKT-\d{4,12}$", description="e.g. TKT-0001")],
    agent: OptionalAgent,
    email: Annotated[EmailStr | None, Query(description="The email address the ticket belongs to.")] = None,
) -> ConfirmIdentityAccepted:
    """Send a link to the email or WhatsApp number typed on this ticket's form; opening it links them."""
    kind = body.identifier
    try:
        async with resources.sessions() as session:
            await authorised_ticket(
                session,
                request,
                resources,
                ticket_number=ticket_id,
                email=str(email) if email else None,
                agent=agent is not None,
            )
            owner = await identity_confirmations.ticket_claimant(session, ticket_number=ticket_id)
            if owner is None:  # deleted since the look-up
                raise NotFound(f"no ticket {ticket_id} for that email address")
            customer_id = str(owner.customer_id)
            claims = await customers.claimed(session, customer_id=customer_id, kind=kind)
            # The address that filed the ticket first; else the latest typed value of that kind.
            value = owner.contact_email if kind == "email" and owner.contact_email in claims else None
            value = value or (claims[-1] if claims else None)
            if value is None:
                what = "email address" if kind == "email" else "phone number"
                raise Conflict(
                    f"ticket {ticket_id} has no unconfirmed {what} to confirm",
                    detail={"reason": "nothing_to_confirm", "identifier": kind},
                )
            recent = await identity_confirmations.recently_requested(
                session, customer_id=customer_id, kind=kind, value=value, since=datetime.now(UTC) - _SAME_REQUEST
            )
    except SQLAlchemyError as exc:
        raise ServiceUnavailable("the database is unavailable; retry later") from exc
    if not _configured(resources, kind):
        raise Conflict(
            f"this support site cannot send {'email' if kind == 'email' else 'WhatsApp messages'}",
            detail={"reason": "channel_not_configured", "identifier": kind},
        )
    await resources.limiter.check("identity_confirmation", ticket_id)
    sent_to = mask(kind, value)
    accepted = ConfirmIdentityAccepted(
        identifier=kind, sent_to=sent_to, status="already_sent", message=f"A link was just sent to {sent_to}."
    )
    if recent:
        return accepted
    try:
        temporal = await resources.temporal.get()
        await temporal.start_workflow(
            IdentityConfirmationWorkflow.run,
            IdentityConfirmationInput(
                customer_id=customer_id, ticket_number=ticket_id, identifier_type=kind, identifier_value=value
            ),
            id=identity_confirmation_workflow_id(customer_id=customer_id, identifier_type=kind, value=value),
            task_queue=resources.settings.temporal_task_queue,
        )
    except WorkflowAlreadyStartedError:
        return accepted
    except (RPCError, OSError, RuntimeError) as exc:
        raise ServiceUnavailable("cannot send the link right now; retry later") from exc
    log.info("gateway.identity_confirmation_requested", ticket=ticket_id, identifier=kind)
    return ConfirmIdentityAccepted(
        identifier=kind,
        sent_to=sent_to,
        status="sending",
        message=f"We are sending a link to {sent_to}. Open it and press Confirm to link this ticket.",
    )


# ----------------------------------------------------------------------------- the link's page


def _page(title: str, main: str, status_code: int = 200) -> HTMLResponse:
    body = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="robots" content="noindex">
  <title>{html.escape(title)} · TechCorp Support</title>
  <link rel="stylesheet" href="/static/css/app.css">
</head>
<body>
  <main id="main" class="wrap">
    <section class="panel">
      <h1>{html.escape(title)}</h1>
{main}
    </section>
  </main>
</body>
</html>
"""
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
    return HTMLResponse(body, status_code=status_code, headers=headers)


def _refused(reason: str) -> HTMLResponse:
    messages = {
        "unknown": (404, "This link is not valid", "Check that you opened the whole link from the message."),
        "expired": (410, "This link has expired", "Ask for a new link on your ticket page."),
        "used": (410, "This link was already used", "Nothing more to do: it confirmed your details already."),
        "not_claimed": (409, "Nothing to confirm", "This ticket no longer has these details to confirm."),
        "refused": (409, "This could not be linked", "Please contact our support team to link your records."),
    }
    status, title, text = messages[reason]
    return _page(title, f"      <p>{html.escape(text)}</p>", status)


def _what(kind: str) -> str:
    return "email address" if kind == "email" else "WhatsApp number"


@router.get("/verify/{token}", response_class=HTMLResponse, include_in_schema=False)
async def verify_page(resources: ResourcesDep, token: Annotated[str, Path()]) -> HTMLResponse:
    """What the link confirms, and a Confirm button; opening the link changes nothing."""
    if not _valid(token):
        return _refused("unknown")
    async with resources.sessions() as session:
        link = await identity_confirmations.by_token_hash(session, token_hash=_hash(token))
    refusal = _refusal(link)
    if refusal is not None or link is None:
        return _refused(refusal or "unknown")
    what = _what(link.identifier_type)
    main = (
        f"      <p>Confirm that <strong>{html.escape(mask(link.identifier_type, link.identifier_value))}</strong> "
        f"is your {what}. Your support requests and this {what} will then be one customer record.</p>\n"
        f'      <form method="post" action="/verify/{html.escape(token)}">'
        '<button type="submit" class="primary">Confirm</button></form>\n'
        '      <p class="hint">If you did not ask for this, close this page: nothing changes.</p>'
    )
    return _page(f"Confirm your {what}", main)


@router.post("/verify/{token}", response_class=HTMLResponse, include_in_schema=False)
async def verify(resources: ResourcesDep, token: Annotated[str, Path()]) -> HTMLResponse:
    """Confirm the claim the link was sent for (once, before it expires)."""
    if not _valid(token):
        return _refused("unknown")
    now = datetime.now(UTC)
    try:
        async with transaction(resources.sessions) as session:
            link = await identity_confirmations.by_token_hash(session, token_hash=_hash(token), lock=True)
            refusal = _refusal(link, now=now)
            if refusal is not None or link is None:
                return _refused(refusal or "unknown")
            try:
                confirmed = await confirm_claim(
                    session,
                    customer_id=str(link.customer_id),
                    kind=link.identifier_type,
                    value=link.identifier_value,
                    at=now,
                )
            except ClaimNotFound:
                return _refused("not_claimed")
            except CRMError as exc:  # the merge refused (a record merged away or erased meanwhile)
                log.warning("gateway.identity_confirmation_refused", reason=str(exc))
                return _refused("refused")
            await identity_confirmations.mark_confirmed(session, confirmation_id=link.id, at=now)
    except SQLAlchemyError as exc:
        raise ServiceUnavailable("the database is unavailable; retry later") from exc
    if confirmed.merge is not None:
        try:
            temporal: Client | None = await resources.temporal.get()
        except (RPCError, OSError, RuntimeError) as exc:  # the merge stands; the workflows learn it later
            log.warning("gateway.temporal_unavailable", error=str(exc)[:200])
            temporal = None
        await tell_workflows(temporal, confirmed.merge)
    log.info("gateway.identity_confirmed", kind=link.identifier_type, merged=confirmed.merge is not None)
    what = _what(link.identifier_type)
    return _page("Thank you", f"      <p>Your {what} is confirmed and linked to your support requests.</p>")


def _valid(token: str) -> bool:
    return re.fullmatch(_TOKEN, token) is not None


def _refusal(link: identity_confirmations.ConfirmationLink | None, *, now: datetime | None = None) -> str | None:
    if link is None:
        return "unknown"
    if link.confirmed_at is not None:
        return "used"
    if link.expires_at <= (now or datetime.now(UTC)):
        return "expired"
    return None
