"""A web-form ticket for its customer: `GET /api/v1/tickets/{ticket_id}` (the ticket, its messages and
escalation state), `POST /api/v1/tickets/{ticket_id}/replies` (the customer answers from the ticket
page), `POST /api/v1/tickets/{ticket_id}/rating` (the customer rates a closed conversation, on any
channel's ticket) and the page itself, `/support/ticket/{ticket_id}`, which the secure links open.

A customer proves access with the email that filed the ticket (the status page) or with the
ticket's secure link (core/ticket_links.py), whose token the page sends in `X-Ticket-Token`.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, EmailStr, Field, StringConstraints, field_validator
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.client import WorkflowUpdateStage as UpdateStage
from temporalio.service import RPCError, RPCStatusCode

from core.errors import Conflict, Forbidden, Gone, NotFound, ServiceUnavailable
from core.logging import get_logger
from core.markdown import render_html
from core.temporal import update_refusal
from core.ticket_links import TOKEN_HEADER, token_matches
from core.vocabulary import (
    RATING_REFUSALS,
    Channel,
    ConversationStatus,
    DeliveryStatus,
    EscalationReason,
    EscalationStatus,
    MessageDirection,
    MessageRole,
    PageRatingVia,
    Priority,
    RatingRefusal,
    TicketCategory,
    TicketStatus,
)
from crm.identity import IdentityRules
from crm.repositories import escalations, messages, ratings, tickets
from crm.repositories.tickets import TicketPage
from gateway.agents import OptionalAgent
from gateway.deps import ResourcesDep
from gateway.producer import publish_inbound
from gateway.resources import Resources
from gateway.ui import SECURITY_HEADERS, STATIC_DIR
from gateway.web_form import MESSAGE_MAX_LENGTH, refuse_control_characters, web_form_message
from workflows.contracts import RATE_UPDATE, Rating, RatingOutcome, SenderIdentity

log = get_logger(__name__)
router = APIRouter(tags=["tickets"])

TICKET_NUMBER = r"^TKT-\d{4,12}$"
# A ticket whose conversation ended takes no more replies: a new request starts a new ticket.
_FINISHED = ("resolved", "closed")


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
    # The conversation's own status: once it is `closed` the page asks for a rating (unless `rated`).
    conversation_status: ConversationStatus | None = None
    rated: bool = False
    escalation: TicketEscalation | None
    messages: list[TicketMessage]


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def linked_ticket(
    session: AsyncSession, request: Request, resources: Resources, *, ticket_number: str, token: str
) -> TicketPage:
    """The ticket whose secure link carries `token`; 403 with a reason otherwise.

    An unknown ticket and a wrong token get the same answer (no enumeration), and both count as
    failed look-ups of the client address (RATE_LIMIT_TICKET_LOOKUP_FAILURES), like a wrong email.
    Without TICKET_LINK_SECRET every token is refused (fail closed).
    """
    client = _client(request)
    await resources.limiter.refuse_if_exhausted(
        "ticket_lookup_failures", client, "too many failed ticket look-ups from this address"
    )
    secret = resources.settings.ticket_link_secret
    if secret is None:
        raise Forbidden(
            "ticket links are not enabled on this support site; use the ticket status page",
            detail={"reason": "links_disabled"},
        )
    ticket = await tickets.find_by_number(session, ticket_number=ticket_number)
    if ticket is None or not token_matches(secret.get_secret_value(), ticket.ticket_id, token.strip()):
        await resources.limiter.count("ticket_lookup_failures", client)
        raise Forbidden(
            f"this link does not open ticket {ticket_number}; open the whole link from the email",
            detail={"reason": "invalid_token"},
        )
    return ticket


async def authorised_ticket(
    session: AsyncSession,
    request: Request,
    resources: Resources,
    *,
    ticket_number: str,
    email: str | None,
    agent: bool,
    token: str | None = None,
) -> TicketPage:
    """The ticket, for the customer whose email filed it (404 otherwise: no enumeration), the holder
    of its secure link (`token`; 403 otherwise, see `linked_ticket`) or a human agent.

    Failed look-ups are counted per client address (RATE_LIMIT_TICKET_LOOKUP_FAILURES): an address
    that used them up gets 429, so ticket numbers cannot be walked for somebody's email.
    """
    if token is not None and not agent:
        return await linked_ticket(session, request, resources, ticket_number=ticket_number, token=token)
    client = _client(request)
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


TicketToken = Annotated[
    str | None,
    Header(
        alias=TOKEN_HEADER,
        max_length=256,
        description="The token of the ticket's secure link (the `#token=` part of the link in the reply notice).",
    ),
]


@router.get(
    "/api/v1/tickets/{ticket_id}",
    response_model=TicketView,
    responses={403: {"description": "Wrong ticket link"}, 404: {"description": "Not found"}},
)
async def get_ticket(
    request: Request,
    resources: ResourcesDep,
    ticket_id: Annotated[str, Path(pattern=TICKET_NUMBER, description="e.g. TKT-0001")],
    agent: OptionalAgent,
    email: Annotated[EmailStr | None, Query(description="The email address the ticket belongs to.")] = None,
    token: TicketToken = None,
) -> TicketView:
    """The ticket's status and messages, for the customer whose email it is (404 otherwise: no enumeration),
    the holder of its secure link (403 otherwise) or a human agent's API key (see `authorised_ticket`).

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
            token=token,
        )
        thread = (
            await messages.thread(session, conversation_id=ticket.conversation_id) if ticket.conversation_id else []
        )
        escalation = (
            await escalations.latest_of_conversation(session, conversation_id=ticket.conversation_id)
            if ticket.conversation_id
            else None
        )
        rated = bool(
            ticket.conversation_id
            and await ratings.of_conversations(session, conversation_ids=[ticket.conversation_id])
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
        conversation_status=ticket.conversation_status,
        rated=rated,
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


# ----------------------------------------------------------------------------- replies from the page


class TicketReply(BaseModel):
    """The customer's answer, typed in the ticket page's reply box."""

    message: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MESSAGE_MAX_LENGTH)]
    # The page draws one per typed answer and sends it again if it retries: the same answer is then
    # recorded and answered once. Without one, the server draws it (a retry is then a new answer).
    reply_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{8,64}$")

    @field_validator("message")
    @classmethod
    def _no_control_characters(cls, value: str) -> str:
        return refuse_control_characters(value)


class TicketReplyAccepted(BaseModel):
    ticket_id: str
    reply_id: str
    status: Literal["received"]
    message: str


@router.post(
    "/api/v1/tickets/{ticket_id}/replies",
    status_code=202,
    response_model=TicketReplyAccepted,
    responses={
        400: {"description": "Malformed request"},
        403: {"description": "No or wrong ticket link (detail.reason: missing_token, invalid_token, links_disabled)"},
        413: {"description": "Request body too large"},
        415: {"description": "The body is not JSON (send Content-Type: application/json)"},
        409: {"description": "The ticket takes no replies (detail.reason: ticket_closed, not_web_form)"},
        422: {"description": "Invalid fields"},
        429: {"description": "Too many messages or failed look-ups; see Retry-After"},
        503: {"description": "Broker or database unavailable; retry with the same reply_id"},
    },
)
async def post_reply(
    request: Request,
    resources: ResourcesDep,
    ticket_id: Annotated[str, Path(pattern=TICKET_NUMBER, description="e.g. TKT-0001")],
    reply: TicketReply,
    token: TicketToken = None,
) -> TicketReplyAccepted:
    """Continue the ticket's conversation: the answer goes to its workflow exactly as a web-form message does."""
    if not token:
        raise Forbidden(
            "a reply needs the ticket's secure link; open the link from the email we sent you",
            detail={"reason": "missing_token"},
        )
    try:
        async with resources.sessions() as session:
            ticket = await linked_ticket(session, request, resources, ticket_number=ticket_id, token=token)
    except SQLAlchemyError as exc:
        raise ServiceUnavailable("the database is unavailable; retry later") from exc
    if ticket.source_channel != "web_form":
        raise Conflict(
            f"ticket {ticket_id} is answered by {ticket.source_channel}, not on this page",
            detail={"reason": "not_web_form"},
        )
    if ticket.status in _FINISHED or ticket.conversation_status == "closed" or ticket.conversation_id is None:
        raise Conflict(
            f"ticket {ticket_id} is closed; please send a new request from the support form",
            detail={"reason": "ticket_closed"},
        )
    # The web form's own per-sender limit: the page is one more way for the same customer to write.
    await resources.limiter.check("web_form", ticket.contact_email or ticket_id)
    reply_id = reply.reply_id or uuid.uuid4().hex
    message = web_form_message(
        ticket_number=ticket.ticket_number,
        # Scoped to the ticket: no other ticket's page can collide with (or pre-empt) this id.
        submission_id=f"reply-{ticket.ticket_number}-{reply_id}",
        sender=SenderIdentity(email=ticket.contact_email),
        text=reply.message,
        received_at=datetime.now(UTC),
        subject=ticket.subject,
        metadata={"source": "ticket_page"},
    )
    await publish_inbound(resources, message)
    log.info("gateway.ticket_reply_published", ticket=ticket.ticket_number)
    return TicketReplyAccepted(
        ticket_id=ticket.ticket_number,
        reply_id=reply_id,
        status="received",
        message="Your reply was sent. It appears on this page in a moment, and so will our answer.",
    )


# ----------------------------------------------------------------------------- the customer's rating

# How long the page waits for the workflow: to take the rating in, then to have stored it.
RATING_ACCEPT_SECONDS = 15.0
RATING_RESULT_SECONDS = 10.0
RATING_COMMENT_MAX_LENGTH = 1000
_THANKS = "Thank you! Your rating helps us improve."
_FOLLOW_UP = "Sorry to hear that — a person from our team will follow up."
_RECEIVED = "Thank you! Your rating was received."
_REFUSED: dict[RatingRefusal, str] = {
    "not_closed": "This conversation is still open: you can rate it once it is closed.",
    "already_rated": "This conversation has already been rated. Thank you!",
    "not_waiting": "This conversation cannot be rated any more.",
}
_WINDOW_CLOSED = "The time to rate this conversation has passed. Thank you all the same."


class TicketRating(BaseModel):
    """A customer's rating of the ticket's closed conversation."""

    score: int = Field(ge=1, le=5, description="1 (very poor) to 5 (excellent)")
    comment: Annotated[str | None, StringConstraints(strip_whitespace=True, max_length=RATING_COMMENT_MAX_LENGTH)] = (
        None
    )
    via: PageRatingVia = Field(
        default="ticket_page", description="`email_link` when the page was opened from an email's rating link"
    )

    @field_validator("comment")
    @classmethod
    def _no_control_characters(cls, value: str | None) -> str | None:
        # An empty box is no comment (the workflow's contract takes 1-1000 characters or none).
        return refuse_control_characters(value) or None if value is not None else None


class TicketRatingResult(BaseModel):
    ticket_id: str
    score: int
    # Null on 202: the workflow took the rating in but had not finished with it yet.
    reopened: bool | None = Field(description="A low score reopened the conversation to a person")
    message: str = Field(description="What the page shows the customer")


def _refusal(exc: WorkflowUpdateFailedError) -> tuple[RatingRefusal, str]:
    """The refusal's word (the workflow's reason starts with one; anything else is `not_waiting`) and its text."""
    text = update_refusal(exc)
    first = re.split(r"[^a-z_]", text.strip().lower(), maxsplit=1)[0]
    word: RatingRefusal = next((w for w in RATING_REFUSALS if w == first), "not_waiting")
    return word, text


def _refused(ticket_number: str, exc: WorkflowUpdateFailedError) -> Conflict:
    word, text = _refusal(exc)
    log.info("gateway.ticket_rating_refused", ticket=ticket_number, reason=word)
    return Conflict(_REFUSED[word], detail={"reason": word, "workflow_reason": text})


@router.post(
    "/api/v1/tickets/{ticket_id}/rating",
    response_model=TicketRatingResult,
    responses={
        202: {"description": "Taken in by the conversation, not yet stored (`reopened` is null)"},
        400: {"description": "Malformed request"},
        403: {"description": "No or wrong ticket link (detail.reason: missing_token, invalid_token, links_disabled)"},
        409: {"description": "No rating taken now (detail.reason: not_closed, already_rated, not_waiting)"},
        410: {"description": "The rating window has closed (the conversation's workflow has ended)"},
        413: {"description": "Request body too large"},
        415: {"description": "The body is not JSON (send Content-Type: application/json)"},
        422: {"description": "Invalid fields"},
        429: {"description": "Too many failed look-ups from this address; see Retry-After"},
        503: {"description": "Temporal or the database unavailable; retry"},
    },
)
async def post_rating(
    request: Request,
    response: Response,
    resources: ResourcesDep,
    ticket_id: Annotated[str, Path(pattern=TICKET_NUMBER, description="e.g. TKT-0001")],
    rating: TicketRating,
    token: TicketToken = None,
) -> TicketRatingResult:
    """Rate the ticket's closed conversation, once: the workflow stores it, and a low score reopens it to a person.

    Any channel's ticket may be rated here (an email's rating links open this ticket's page).
    """
    if not token:
        raise Forbidden(
            "a rating needs the ticket's secure link; open the link from the email we sent you",
            detail={"reason": "missing_token"},
        )
    try:
        async with resources.sessions() as session:
            ticket = await linked_ticket(session, request, resources, ticket_number=ticket_id, token=token)
    except SQLAlchemyError as exc:
        raise ServiceUnavailable("the database is unavailable; retry later") from exc
    if ticket.workflow_id is None:
        raise Conflict(_REFUSED["not_waiting"], detail={"reason": "not_waiting", "workflow_reason": "no conversation"})
    try:
        temporal = await resources.temporal.get()
    except Exception as exc:
        raise ServiceUnavailable("Temporal is not reachable; retry") from exc
    update = Rating(score=rating.score, comment=rating.comment, via=rating.via)
    handle = temporal.get_workflow_handle(ticket.workflow_id)
    try:
        started = await handle.start_update(
            RATE_UPDATE,
            update,
            wait_for_stage=UpdateStage.ACCEPTED,
            result_type=RatingOutcome,
            rpc_timeout=timedelta(seconds=RATING_ACCEPT_SECONDS),
        )
    except WorkflowUpdateFailedError as exc:
        raise _refused(ticket.ticket_number, exc) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
        raise ServiceUnavailable("the conversation did not answer in time; retry") from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            # The workflow waits for a rating for a while after closing, then ends: nothing to rate.
            raise Gone(_WINDOW_CLOSED, detail={"reason": "window_closed"}) from None
        raise ServiceUnavailable("Temporal did not answer; retry") from exc

    try:
        outcome = await asyncio.wait_for(started.result(), RATING_RESULT_SECONDS)
    except TimeoutError:
        log.warning("gateway.ticket_rating_still_running", ticket=ticket.ticket_number)
        response.status_code = 202
        return TicketRatingResult(ticket_id=ticket.ticket_number, score=rating.score, reopened=None, message=_RECEIVED)
    except WorkflowUpdateFailedError as exc:
        raise _refused(ticket.ticket_number, exc) from None
    except RPCError as exc:
        raise ServiceUnavailable("Temporal did not answer; your rating may have been received") from exc
    # Never the comment in the log: it is the customer's own words.
    log.info(
        "gateway.ticket_rated",
        ticket=ticket.ticket_number,
        score=outcome.score,
        reopened=outcome.reopened,
        via=rating.via,
        commented=rating.comment is not None,
    )
    return TicketRatingResult(
        ticket_id=ticket.ticket_number,
        score=outcome.score,
        reopened=outcome.reopened,
        message=_FOLLOW_UP if outcome.reopened else _THANKS,
    )


@router.get("/support/ticket/{ticket_id}", include_in_schema=False)
async def ticket_page(ticket_id: Annotated[str, Path(pattern=TICKET_NUMBER)]) -> FileResponse:
    """The page a reply notice's secure link opens: the conversation and a reply box.

    The token is in the link's fragment, which never reaches the server: the page's script reads it.
    """
    # no-store: the page is the same for every ticket, but its address names one.
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
    return FileResponse(STATIC_DIR / "ticket.html", media_type="text/html; charset=utf-8", headers=headers)
