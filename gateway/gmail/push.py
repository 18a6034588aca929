"""`POST /api/v1/webhooks/gmail`: Gmail push notifications (Pub/Sub push) → one Kafka record per new email.

Flow of one push:

1. **Authenticate, fail closed.** The push carries an OIDC ID token (`Authorization: Bearer`)
   signed by Google for the push subscription's service account. It is verified (`oidc.py`) with
   google-auth against Google's signing certificates (URL configurable, cached), and its issuer,
   audience, `email` and `email_verified` are checked. A static token (`GMAIL_PUBSUB_STATIC_TOKEN`, as a
   bearer token or a `?token=` query parameter, the form a push endpoint URL can carry) is accepted
   only when it is explicitly configured. With neither configured, or without Gmail credentials,
   every push is refused (403); nothing is ever accepted unauthenticated.
2. **Decode** the envelope (400 if malformed; an unwrapped push payload is accepted too) into
   `{emailAddress, historyId}`; pushes for another mailbox are acknowledged and ignored.
3. **Fetch** what changed since the last processed historyId (`users.history.list`, paged, then
   `users.messages.get(format="full")` per new message) with the official client, in a thread, each
   HTTP call bounded by a timeout and the whole fetch by a budget below Pub/Sub's 10 s deadline.
4. **Normalise** (`mime.py`) every new customer email (the agent's own mail, drafts, spam and
   auto-replies are skipped) into one `InboundMessage`: text/plain preferred, else HTML converted to text; quoted
   replies and signatures stripped; Gmail threadId as the conversation key; threading headers in
   the metadata so the reply lands in the same thread.
5. **Publish** each to Kafka (acks=all) and only then advance the stored historyId. If the broker
   does not acknowledge, the answer is 503, the cursor stays, and Pub/Sub redelivers: nothing is
   lost. A redelivery after success finds the cursor advanced and does nothing; a duplicate that
   slips through (two concurrent pushes) is harmless because the conversation workflow and the
   messages table deduplicate by Gmail message id.

The cursor lives in `gmail_sync_state` (one row per mailbox, migration 0003):

* **Baseline.** The `renew_gmail_watch` activity stores the historyId `users.watch`
  returns when it first creates the watch, so every later push has a starting point. If a push
  arrives for a mailbox with no stored cursor (a watch created outside this service), the pushed
  historyId becomes the baseline and nothing before it is fetched: answering a mailbox's past mail
  would be worse than missing the one message that raced the baseline.
* **History too old.** If `history.list` answers 404 (Gmail keeps roughly a week of history), the
  pushed historyId becomes the new cursor and `gmail.history_expired` is logged as a warning. A full
  re-sync (`messages.list` over the gap) is out of scope.
* **Backlog.** One push handles at most `MAX_MESSAGES_PER_PUSH` messages within
  `FETCH_BUDGET_SECONDS`; if more are pending, the cursor advances to the last history record fully
  handled and the answer is 503, so Pub/Sub redelivers and the next attempt continues from there.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import httplib2
from fastapi import APIRouter, Request
from fastapi.responses import Response
from google.auth import exceptions as google_auth_exceptions
from googleapiclient.errors import HttpError
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.errors import BadRequest, Forbidden, ServiceUnavailable
from core.gmail_client import gmail_service
from core.logging import get_logger
from core.settings import Settings
from crm.db import transaction
from crm.repositories import conversations, gmail_sync
from gateway.deps import ResourcesDep
from gateway.gmail.mime import SKIP_LABELS, inbound_from_gmail, skip_reason
from gateway.gmail.oidc import TokenRejected, verify_oidc
from gateway.producer import publish_inbound
from workflows.contracts import InboundMessage

router = APIRouter()
log = get_logger(__name__)
T = TypeVar("T")

# Pub/Sub waits 10 s for the push endpoint. Each Gmail HTTP call gets GMAIL_HTTP_TIMEOUT_SECONDS;
# no new history record is started after FETCH_BUDGET_SECONDS; the whole fetch is abandoned (503)
# after FETCH_DEADLINE_SECONDS, leaving time to answer.
GMAIL_HTTP_TIMEOUT_SECONDS = 3.0
FETCH_BUDGET_SECONDS = 5.0
FETCH_DEADLINE_SECONDS = 8.5
MAX_MESSAGES_PER_PUSH = 100
HISTORY_PAGE_SIZE = 500

GMAIL_PUSHES = Counter("crm_fte_gmail_pushes_total", "Gmail Pub/Sub pushes by outcome", ["outcome"])
GMAIL_MESSAGES = Counter("crm_fte_gmail_messages_total", "Gmail messages seen in pushes by outcome", ["outcome"])


# ----------------------------------------------------------------------------- the envelope


class PubSubMessage(BaseModel):
    """The `message` of a Pub/Sub push; `data` is base64 of Gmail's JSON notification."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    data: str = Field(min_length=1, max_length=10_000)
    message_id: str | None = Field(default=None, alias="messageId", max_length=256)
    publish_time: str | None = Field(default=None, alias="publishTime", max_length=64)
    attributes: dict[str, str] | None = None


class PushEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message: PubSubMessage
    subscription: str | None = Field(default=None, max_length=512)


class GmailNotification(BaseModel):
    """What Gmail publishes on a mailbox change: the mailbox and its historyId after the change."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    email_address: str = Field(alias="emailAddress", min_length=3, max_length=320)
    history_id: int = Field(alias="historyId", gt=0, lt=2**63)


def parse_push(body: bytes) -> tuple[PushEnvelope | None, GmailNotification]:
    """Decode a Pub/Sub push body; anything malformed is a 400, never a 500.

    Accepts the standard wrapped envelope and, for subscriptions with payload unwrapping enabled,
    the bare notification (then there is no envelope).
    """
    try:
        envelope = PushEnvelope.model_validate_json(body)
    except ValidationError as exc:
        try:
            return None, GmailNotification.model_validate_json(body)
        except ValidationError:
            raise BadRequest("not a Pub/Sub push envelope", detail=_errors(exc)) from None
    try:
        data = base64.b64decode(envelope.message.data, validate=True)
    except (binascii.Error, ValueError):
        # Pub/Sub uses standard base64; accept the URL-safe alphabet too.
        try:
            raw = envelope.message.data
            data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            raise BadRequest("message.data is not base64") from None
    try:
        notification = GmailNotification.model_validate_json(data)
    except ValidationError as exc:
        raise BadRequest("message.data is not a Gmail notification", detail=_errors(exc)) from None
    return envelope, notification


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()][:10]


# ----------------------------------------------------------------------------- push authentication


def _reject(reason: str, **fields: object) -> NoReturn:
    log.warning("gmail.push_rejected", reason=reason, **fields)
    GMAIL_PUSHES.labels("rejected").inc()
    raise Forbidden("the push's token is not valid for this endpoint")


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def authenticate_push(request: Request, settings: Settings) -> str:
    """Fail closed: OIDC (or an explicitly configured static token), else 403. Returns the method used."""
    if not settings.gmail_configured:
        GMAIL_PUSHES.labels("not_configured").inc()
        raise Forbidden(
            "the Gmail channel is not configured (set GMAIL_USER_EMAIL, GMAIL_CLIENT_ID and GMAIL_REFRESH_TOKEN)"
        )
    static = settings.gmail_pubsub_static_token.get_secret_value() if settings.gmail_pubsub_static_token else ""
    oidc = bool(settings.gmail_pubsub_audience and settings.gmail_pubsub_service_account)
    if not static and not oidc:
        GMAIL_PUSHES.labels("not_configured").inc()
        raise Forbidden(
            "Pub/Sub push authentication is not configured (set GMAIL_PUBSUB_AUDIENCE and "
            "GMAIL_PUBSUB_SERVICE_ACCOUNT, or opt in to GMAIL_PUBSUB_STATIC_TOKEN)"
        )
    token = _bearer(request)
    if static:
        candidate = token or request.query_params.get("token") or ""
        if candidate and hmac.compare_digest(candidate.encode(), static.encode()):
            return "static_token"
        if not oidc:
            _reject("static_token_mismatch" if candidate else "token_missing")
    if token is None:
        _reject("token_missing")
    try:
        await asyncio.to_thread(verify_oidc, token, settings)
    except TokenRejected as exc:
        _reject(exc.reason, **exc.fields)
    return "oidc"


# ----------------------------------------------------------------------------- the Gmail API


@dataclass
class FetchResult:
    """New messages (Gmail `full` resources) in history order, and where the cursor may move."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    cursor: int = 0
    complete: bool = True
    expired: bool = False
    skipped_before_fetch: int = 0


def fetch_new_messages(settings: Settings, start_history_id: int, *, budget_seconds: float) -> FetchResult:
    """history.list from the cursor (paged), then messages.get per new message (blocking)."""
    with gmail_service(settings, timeout=GMAIL_HTTP_TIMEOUT_SECONDS) as service:  # closes its connections
        return _fetch(service.users(), start_history_id, deadline=time.monotonic() + budget_seconds)


def _fetch(users: Any, start_history_id: int, *, deadline: float) -> FetchResult:
    result = FetchResult(cursor=start_history_id)
    seen: set[str] = set()
    page_token: str | None = None
    while True:
        try:
            page = (
                users.history()
                .list(
                    userId="me",
                    startHistoryId=str(start_history_id),
                    historyTypes=["messageAdded"],
                    maxResults=HISTORY_PAGE_SIZE,
                    pageToken=page_token,
                )
                .execute()
            )
        except HttpError as exc:
            if exc.resp.status == 404:
                result.expired = True
                return result
            raise
        for record in page.get("history", []):
            if len(result.messages) >= MAX_MESSAGES_PER_PUSH or time.monotonic() > deadline:
                result.complete = False
                return result
            for added in record.get("messagesAdded", []):
                ref = added.get("message") or {}
                message_id = ref.get("id")
                if not message_id or message_id in seen:
                    continue
                seen.add(message_id)
                if SKIP_LABELS & set(ref.get("labelIds") or ()):
                    result.skipped_before_fetch += 1
                    continue
                try:
                    full = users.messages().get(userId="me", id=message_id, format="full").execute()
                except HttpError as exc:
                    if exc.resp.status == 404:  # deleted since: nothing to answer
                        continue
                    raise
                result.messages.append(full)
            result.cursor = max(result.cursor, int(record["id"]))
        page_token = page.get("nextPageToken")
        if not page_token:
            result.cursor = max(result.cursor, int(page.get("historyId") or 0))
            return result


# ----------------------------------------------------------------------------- the cursor


async def load_cursor(sessions: async_sessionmaker[AsyncSession], mailbox: str) -> int | None:
    """The last processed historyId of `mailbox`, or None before the baseline exists."""
    try:
        async with sessions() as session:
            return await gmail_sync.get_history_id(session, mailbox=mailbox)
    except (SQLAlchemyError, OSError) as exc:
        raise _database_down(exc) from exc


async def advance_cursor(sessions: async_sessionmaker[AsyncSession], mailbox: str, history_id: int) -> None:
    """Move the cursor forward (never back: concurrent pushes may finish out of order)."""
    try:
        async with transaction(sessions) as session:
            await gmail_sync.advance_history_id(session, mailbox=mailbox, history_id=history_id)
    except (SQLAlchemyError, OSError) as exc:
        raise _database_down(exc) from exc


_TICKET_IN_SUBJECT = re.compile(r"\[(TKT-\d{4,12})\]")


async def _into_its_ticket(sessions: async_sessionmaker[AsyncSession], inbound: InboundMessage) -> InboundMessage:
    """A new email whose subject carries `[TKT-…]` joins that ticket's open conversation.

    Our replies ask customers to keep the ticket number in the subject; a customer who writes a new
    email instead of replying in the thread would otherwise start a second conversation. Only the
    ticket's own customer, writing from a verified address that Gmail authenticated, is joined: a
    ticket number is easy to guess.
    """
    match = _TICKET_IN_SUBJECT.search(inbound.subject or "")
    sender = inbound.sender.email
    if match is None or sender is None or inbound.metadata.get("sender_authenticated") != "true":
        return inbound
    try:
        async with sessions() as session:
            thread = await conversations.open_email_thread_of_ticket(
                session, ticket_number=match.group(1), sender=sender
            )
    except (SQLAlchemyError, OSError) as exc:
        raise _database_down(exc) from exc
    if thread is None or thread == inbound.conversation_key:
        return inbound
    log.info("gmail.joined_ticket", ticket=match.group(1), gmail_message_id=inbound.external_message_id)
    return inbound.model_copy(update={"conversation_key": thread})


def _database_down(exc: Exception) -> ServiceUnavailable:
    log.warning("gmail.database_unavailable", error=type(exc).__name__)
    return ServiceUnavailable("the database is unavailable; retry later")


# ----------------------------------------------------------------------------- the endpoint


async def _call_gmail(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking Gmail call in a thread; Gmail or OAuth trouble is a 503 (Pub/Sub retries)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(func, *args, **kwargs), FETCH_DEADLINE_SECONDS)
    except HttpError as exc:
        log.warning("gmail.api_error", status=exc.resp.status, reason=str(exc.reason)[:200])
        raise _gmail_down() from exc
    except google_auth_exceptions.GoogleAuthError as exc:
        log.warning("gmail.auth_error", error=type(exc).__name__, reason=str(exc)[:200])
        raise _gmail_down() from exc
    except (TimeoutError, OSError, httplib2.HttpLib2Error) as exc:
        log.warning("gmail.unreachable", error=type(exc).__name__)
        raise _gmail_down() from exc


def _gmail_down() -> ServiceUnavailable:
    GMAIL_PUSHES.labels("gmail_unavailable").inc()
    return ServiceUnavailable("the Gmail API did not answer; retry later")


@router.post(
    "/api/v1/webhooks/gmail",
    status_code=204,
    response_class=Response,
    summary="Gmail push notification (Pub/Sub push subscription)",
)
async def gmail_push(request: Request, resources: ResourcesDep) -> Response:
    """Verify the push, fetch the mailbox's new mail, publish each message; 204 only after Kafka acked."""
    settings = resources.settings
    auth = await authenticate_push(request, settings)
    envelope, notification = parse_push(await request.body())
    mailbox = (settings.gmail_user_email or "").strip().lower()
    pushed = notification.history_id
    if notification.email_address.strip().lower() != mailbox:
        log.info("gmail.push_other_mailbox", mailbox=notification.email_address[:320])
        GMAIL_PUSHES.labels("other_mailbox").inc()
        return Response(status_code=204)

    cursor = await load_cursor(resources.sessions, mailbox)
    if cursor is None:
        await advance_cursor(resources.sessions, mailbox, pushed)
        log.info("gmail.baseline_stored", history_id=pushed, source="push")
        GMAIL_PUSHES.labels("baseline").inc()
        return Response(status_code=204)
    if pushed <= cursor:
        log.info("gmail.push_already_processed", history_id=pushed, cursor=cursor)
        GMAIL_PUSHES.labels("already_processed").inc()
        return Response(status_code=204)

    fetched = await _call_gmail(fetch_new_messages, settings, cursor, budget_seconds=FETCH_BUDGET_SECONDS)
    if fetched.expired:
        log.warning("gmail.history_expired", cursor=cursor, new_cursor=pushed, note="mail in the gap is not fetched")
        await advance_cursor(resources.sessions, mailbox, pushed)
        GMAIL_PUSHES.labels("history_expired").inc()
        return Response(status_code=204)

    published = 0
    GMAIL_MESSAGES.labels("skipped").inc(fetched.skipped_before_fetch)
    for message in fetched.messages:
        reason = skip_reason(message, own_address=mailbox)
        if reason is None:
            try:
                inbound = inbound_from_gmail(message)
            except (KeyError, TypeError, ValueError) as exc:
                # One unreadable message must not block the mailbox forever: log it for a human.
                log.error("gmail.message_unparseable", gmail_message_id=str(message.get("id")), error=repr(exc)[:300])
                GMAIL_MESSAGES.labels("unparseable").inc()
                continue
            inbound = await _into_its_ticket(resources.sessions, inbound)
            await publish_inbound(resources, inbound)  # 503 if the broker does not ack: cursor stays
            published += 1
            GMAIL_MESSAGES.labels("published").inc()
        else:
            log.info("gmail.message_skipped", gmail_message_id=str(message.get("id")), reason=reason)
            GMAIL_MESSAGES.labels("skipped").inc()

    await advance_cursor(resources.sessions, mailbox, fetched.cursor)
    log.info(
        "gmail.push_processed",
        auth=auth,
        pubsub_message_id=envelope.message.message_id if envelope else None,
        published=published,
        cursor=fetched.cursor,
        complete=fetched.complete,
    )
    if not fetched.complete:
        GMAIL_PUSHES.labels("partial").inc()
        # Pub/Sub redelivers a failed push: the next attempt continues from the advanced cursor.
        raise ServiceUnavailable(
            "more new mail than one push can carry; processed part of it, retry to continue",
            detail={"published": published, "history_id": fetched.cursor},
        )
    GMAIL_PUSHES.labels("processed").inc()
    return Response(status_code=204)
