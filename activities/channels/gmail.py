"""Email through the Gmail API: the reply adapter and the push-watch request.

Both talk to Gmail through the official client (`google-api-python-client`) with the support
mailbox's OAuth refresh token; `GMAIL_API_BASE_URL` points it elsewhere (tests, proxies). Calls
are blocking and run in a thread, each bounded by a socket timeout.

Replies thread the way Gmail and every other mail client expect: same `threadId`, `In-Reply-To`
the customer's latest Message-ID, `References` its chain plus that id, and the subject as
"Re: <subject>". Each reply carries a Message-ID derived from our outbound message row, so a
retried send first looks for that Message-ID in the mailbox and never sends twice.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, NoReturn

from googleapiclient.errors import HttpError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.channels.port import Delivery, EmailThread, OutboundMessage
from core.gmail_client import gmail_service
from core.logging import get_logger
from core.mail import reply_references
from core.settings import Settings
from workflows.contracts import ErrorType

log = get_logger(__name__)

GMAIL_HTTP_TIMEOUT_SECONDS = 20.0
_REPLY_PREFIX = re.compile(r"^\s*re\s*:", re.IGNORECASE)
# The support mailbox's own sends carry this label; a retry looks for its Message-ID among them.
_SENT_LABEL = "SENT"
# At most this many candidates are fetched when looking for a Message-ID.
_ALREADY_SENT_CANDIDATES = 20


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def reply_subject(subject: str | None) -> str:
    """`Re: <subject>` unless it already is one."""
    subject = " ".join((subject or "").split())
    if not subject:
        return "Re: Your support request"
    return subject if _REPLY_PREFIX.match(subject) else f"Re: {subject}"


def reply_recipient(parent: Mapping[str, object], fallback: str | None) -> str | None:
    """Whom the reply goes to: the email's Reply-To, else its sender, else the customer's address.

    The customer record may hold an older address (identities are linked across channels); the
    person who wrote this thread is the one who expects the answer.
    """
    for header in (parent.get("reply_to"), parent.get("from")):
        address = email.utils.parseaddr(header if isinstance(header, str) else "")[1].strip()
        if "@" in address:
            return address
    return fallback.strip() if fallback and "@" in fallback else None


def email_thread(parent: Mapping[str, object], *, conversation_key: str) -> EmailThread:
    """The thread a reply joins, from the attributes the gateway stored on the customer's latest email.

    Without such an email (or without a threadId on it), the conversation key is Gmail's threadId.
    """

    def fact(name: str) -> str | None:
        value = parent.get(name)
        return value if isinstance(value, str) and value else None

    return EmailThread(
        thread_id=fact("thread_id") or conversation_key,
        parent_message_id=fact("rfc_message_id"),
        references=fact("references"),
        subject=fact("subject"),
    )


def outbound_message_id(message_id: str, mailbox: str) -> str:
    """Our Message-ID for an outbound row: stable across retries, so a resend can be detected."""
    domain = mailbox.rpartition("@")[2] or "crm-fte.invalid"
    return f"<crm-fte.{message_id}@{domain}>"


def _is_retry() -> bool:
    try:
        return activity.info().attempt > 1
    except RuntimeError:  # called outside an activity (tests, scripts)
        return False


def _raise_for_gmail(exc: HttpError, what: str, error_type: str) -> NoReturn:
    """429 and 5xx are transient (Temporal retries); any other 4xx is a rejection, never retried."""
    status = int(exc.resp.status)
    if status == 429 or status >= 500:
        raise exc
    raise ApplicationError(
        f"Gmail rejected the {what}: HTTP {status} {str(exc.reason)[:200]}", type=error_type, non_retryable=True
    ) from exc


class GmailAdapter:
    """Email replies through `users.messages.send`, in the customer's Gmail thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, message: OutboundMessage) -> Delivery:
        """Send the reply in its thread; on a retried attempt, first look for our own Message-ID."""
        s = self.settings
        if not s.gmail_configured or not s.gmail_user_email:
            return Delivery("not_configured", None)
        if message.to_email is None:
            raise ApplicationError(
                f"outbound email {message.message_id} has no recipient address",
                type=ErrorType.SEND_REJECTED,
                non_retryable=True,
            )
        thread = message.email_thread or EmailThread()
        mime = self._compose(message, thread, message.to_email)
        return await asyncio.to_thread(self._send_blocking, mime, thread.thread_id, message.message_id)

    async def find_sent(self, message: OutboundMessage, *, since: datetime, known: set[str]) -> Delivery | None:
        """Nothing to look up here: `send` itself finds an earlier attempt by its Message-ID on a retry."""
        return None

    def _compose(self, message: OutboundMessage, thread: EmailThread, recipient: str) -> EmailMessage:
        mailbox = (self.settings.gmail_user_email or "").strip()
        mime = EmailMessage()
        mime["From"] = mailbox
        mime["To"] = recipient
        mime["Subject"] = reply_subject(thread.subject)
        mime["Date"] = email.utils.format_datetime(datetime.now(UTC))
        mime["Message-ID"] = outbound_message_id(message.message_id, mailbox)
        if thread.parent_message_id:
            mime["In-Reply-To"] = thread.parent_message_id
        references = reply_references(thread.references, thread.parent_message_id)
        if references:
            mime["References"] = references
        mime.set_content(message.content)
        html = message.attributes.get("html")
        if isinstance(html, str) and html:
            # multipart/alternative: clients that show HTML get real lists; the rest read the text.
            mime.add_alternative(html, subtype="html")
        return mime

    def _send_blocking(self, mime: EmailMessage, thread_id: str | None, outbound_id: str) -> Delivery:
        with gmail_service(self.settings, timeout=GMAIL_HTTP_TIMEOUT_SECONDS) as service:  # closes its connections
            return self._send_with(service.users().messages(), mime, thread_id, outbound_id)

    def _send_with(self, messages: Any, mime: EmailMessage, thread_id: str | None, outbound_id: str) -> Delivery:
        if _is_retry():
            existing = self._already_sent(messages, str(mime["Message-ID"]))
            if existing is not None:
                log.info("gmail.reply_already_sent", message_id=outbound_id, gmail_message_id=existing)
                return Delivery("sent", existing)
        body: dict[str, str] = {"raw": _b64url(mime.as_bytes())}
        if thread_id:
            body["threadId"] = thread_id
        try:
            sent = messages.send(userId="me", body=body).execute()
        except HttpError as exc:
            if exc.resp.status == 404 and "threadId" in body:
                # The thread is gone (deleted by someone): still answer, in a new thread.
                log.warning("gmail.thread_missing", message_id=outbound_id, thread_id=thread_id)
                body.pop("threadId")
                try:
                    sent = messages.send(userId="me", body=body).execute()
                except HttpError as retry_exc:
                    _raise_for_gmail(retry_exc, "reply", ErrorType.SEND_REJECTED)
            else:
                _raise_for_gmail(exc, "reply", ErrorType.SEND_REJECTED)
        log.info("gmail.reply_sent", message_id=outbound_id, gmail_message_id=sent.get("id"), thread_id=thread_id)
        return Delivery("sent", str(sent["id"]))

    @staticmethod
    def _already_sent(messages: Any, rfc_message_id: str) -> str | None:
        """The Gmail id of a sent message carrying our Message-ID (a previous attempt got through)."""
        found = (
            messages.list(userId="me", q=f"rfc822msgid:{rfc_message_id.strip('<>')}", labelIds=[_SENT_LABEL])
            .execute()
            .get("messages", [])
        )
        for candidate in found[:_ALREADY_SENT_CANDIDATES]:
            meta = messages.get(
                userId="me", id=candidate["id"], format="metadata", metadataHeaders=["Message-ID"]
            ).execute()
            headers = {h["name"].lower(): h["value"] for h in meta.get("payload", {}).get("headers", [])}
            if headers.get("message-id", "").strip() == rfc_message_id:
                return str(candidate["id"])
        return None


def watch_inbox(settings: Settings, topic: str) -> dict[str, Any]:
    """`users.watch` on the support mailbox's INBOX, publishing to `topic` (blocking).

    Gmail's answer carries `historyId` and `expiration` (epoch milliseconds).
    """
    body = {"topicName": topic, "labelIds": ["INBOX"], "labelFilterBehavior": "INCLUDE"}
    with gmail_service(settings, timeout=GMAIL_HTTP_TIMEOUT_SECONDS) as service:
        try:
            return dict(service.users().watch(userId="me", body=body).execute())
        except HttpError as exc:
            _raise_for_gmail(exc, "watch request", ErrorType.WATCH_REJECTED)
