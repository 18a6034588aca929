"""Gmail side effects: the email reply adapter and the push-watch renewal activity.

Both talk to the Gmail API through the official client (`google-api-python-client`) with the
support mailbox's OAuth refresh token; `GMAIL_API_BASE_URL` points it elsewhere (tests, proxies).
Calls are blocking and run in a thread, each bounded by a socket timeout.

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
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, NoReturn

from googleapiclient.errors import HttpError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import ActivityDeps
from core.gmail_client import gmail_service
from core.logging import get_logger
from core.settings import Settings
from crm.db import transaction
from workflows.gmail_watch import RENEW_GMAIL_WATCH_ACTIVITY, GmailWatchInput, GmailWatchResult

if TYPE_CHECKING:
    # Annotation only: activities.channels will import this module to wire the adapter in.
    from activities.channels import OutboundMessage

log = get_logger(__name__)

GMAIL_HTTP_TIMEOUT_SECONDS = 20.0
MAX_REFERENCES = 10
_REPLY_PREFIX = re.compile(r"^\s*re\s*:", re.IGNORECASE)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _message_ids(value: str | None) -> list[str]:
    return re.findall(r"<[^<>\s]+>", value or "")


def reply_subject(subject: str | None) -> str:
    """`Re: <subject>` unless it already is one."""
    subject = " ".join((subject or "").split())
    if not subject:
        return "Re: Your support request"
    return subject if _REPLY_PREFIX.match(subject) else f"Re: {subject}"


def references_for(previous: str | None, parent_id: str | None) -> str | None:
    """The parent's References plus the parent's Message-ID (first and latest ids kept, RFC 5322)."""
    ids = _message_ids(previous)
    for parent in _message_ids(parent_id):
        if parent not in ids:
            ids.append(parent)
    if len(ids) > MAX_REFERENCES:
        ids = ids[:1] + ids[-(MAX_REFERENCES - 1) :]
    return " ".join(ids) or None


def reply_recipient(parent: dict[str, str], fallback: str | None) -> str | None:
    """Whom the reply goes to: the email's Reply-To, else its sender, else the customer's address.

    The customer record may hold an older address (identities are linked across channels); the
    person who wrote this thread is the one who expects the answer.
    """
    for header in (parent.get("reply_to"), parent.get("from")):
        address = email.utils.parseaddr(header or "")[1].strip()
        if "@" in address:
            return address
    return fallback.strip() if fallback and "@" in fallback else None


def outbound_message_id(message_id: str, mailbox: str) -> str:
    """Our Message-ID for an outbound row: stable across retries, so a resend can be detected."""
    domain = mailbox.rpartition("@")[2] or "crm-fte.invalid"
    return f"<crm-fte.{message_id}@{domain}>"


def _is_retry() -> bool:
    try:
        return activity.info().attempt > 1
    except RuntimeError:  # called outside an activity (tests, scripts)
        return False


def _raise_for_gmail(exc: HttpError, what: str) -> NoReturn:
    """429 and 5xx are transient (Temporal retries); any other 4xx is a rejection, never retried."""
    status = int(exc.resp.status)
    if status == 429 or status >= 500:
        raise exc
    raise ApplicationError(
        f"Gmail rejected the {what}: HTTP {status} {str(exc.reason)[:200]}",
        type="SendRejected" if what == "reply" else "WatchRejected",
        non_retryable=True,
    ) from exc


class GmailAdapter:
    """Email replies through `users.messages.send`, in the customer's Gmail thread."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessions = sessions

    async def send(self, message: OutboundMessage) -> tuple[str, str | None]:
        s = self.settings
        if not s.gmail_configured or not s.gmail_user_email:
            return "not_configured", None
        parent = await self._latest_inbound(message.message_id)
        recipient = reply_recipient(parent, message.to_email)
        if recipient is None:
            raise ApplicationError(
                f"outbound email {message.message_id} has no recipient address", type="SendRejected", non_retryable=True
            )
        mime = self._compose(message, parent, recipient)
        thread_id = parent.get("thread_id")
        return await asyncio.to_thread(self._send_blocking, mime, thread_id, message.message_id)

    async def _latest_inbound(self, outbound_id: str) -> dict[str, str]:
        """Threading facts of the customer's latest email in this conversation (empty if none)."""
        async with self.sessions() as session:
            row = (
                await session.execute(
                    text(
                        "SELECT i.attributes, c.conversation_key FROM messages o "
                        "JOIN conversations c ON c.id = o.conversation_id "
                        "LEFT JOIN LATERAL (SELECT attributes FROM messages WHERE conversation_id = o.conversation_id "
                        "  AND direction = 'inbound' AND channel = 'email' "
                        "  ORDER BY created_at DESC, updated_at DESC LIMIT 1) i ON true "
                        "WHERE o.id = :id"
                    ),
                    {"id": outbound_id},
                )
            ).one_or_none()
        if row is None:
            raise ApplicationError(f"outbound message {outbound_id} does not exist", non_retryable=True)
        attributes = row.attributes or {}
        facts = {k: str(v) for k, v in attributes.items() if isinstance(v, str) and v}
        facts.setdefault("thread_id", row.conversation_key)
        return facts

    def _compose(self, message: OutboundMessage, parent: dict[str, str], recipient: str) -> EmailMessage:
        s = self.settings
        mailbox = (s.gmail_user_email or "").strip()
        mime = EmailMessage()
        mime["From"] = mailbox
        mime["To"] = recipient
        mime["Subject"] = reply_subject(parent.get("subject"))
        mime["Date"] = email.utils.format_datetime(datetime.now(UTC))
        mime["Message-ID"] = outbound_message_id(message.message_id, mailbox)
        parent_id = parent.get("rfc_message_id")
        if parent_id:
            mime["In-Reply-To"] = parent_id
        references = references_for(parent.get("references"), parent_id)
        if references:
            mime["References"] = references
        mime.set_content(message.content)
        return mime

    def _send_blocking(self, mime: EmailMessage, thread_id: str | None, outbound_id: str) -> tuple[str, str | None]:
        with gmail_service(self.settings, timeout=GMAIL_HTTP_TIMEOUT_SECONDS) as service:  # closes its connections
            return self._send_with(service.users().messages(), mime, thread_id, outbound_id)

    def _send_with(
        self, messages: Any, mime: EmailMessage, thread_id: str | None, outbound_id: str
    ) -> tuple[str, str | None]:
        if _is_retry():
            existing = self._already_sent(messages, str(mime["Message-ID"]))
            if existing is not None:
                log.info("gmail.reply_already_sent", message_id=outbound_id, gmail_message_id=existing)
                return "sent", existing
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
                    _raise_for_gmail(retry_exc, "reply")
            else:
                _raise_for_gmail(exc, "reply")
        log.info("gmail.reply_sent", message_id=outbound_id, gmail_message_id=sent.get("id"), thread_id=thread_id)
        return "sent", str(sent["id"])

    @staticmethod
    def _already_sent(messages: Any, rfc_message_id: str) -> str | None:
        """The Gmail id of a sent message carrying our Message-ID (a previous attempt got through)."""
        found = (
            messages.list(userId="me", q=f"rfc822msgid:{rfc_message_id.strip('<>')}", labelIds=["SENT"])
            .execute()
            .get("messages", [])
        )
        for candidate in found[:20]:
            meta = messages.get(
                userId="me", id=candidate["id"], format="metadata", metadataHeaders=["Message-ID"]
            ).execute()
            headers = {h["name"].lower(): h["value"] for h in meta.get("payload", {}).get("headers", [])}
            if headers.get("message-id", "").strip() == rfc_message_id:
                return str(candidate["id"])
        return None


class GmailActivities:
    """The Gmail activities the worker hosts besides the reply (which goes through ChannelActivities)."""

    def __init__(self, deps: ActivityDeps) -> None:
        self.deps = deps

    @activity.defn(name=RENEW_GMAIL_WATCH_ACTIVITY)
    async def renew_gmail_watch(self, inp: GmailWatchInput) -> GmailWatchResult:
        """Call `users.watch` for the support mailbox's INBOX; store the baseline (first time) and expiry."""
        s = self.deps.settings
        if not (s.gmail_configured and s.gmail_user_email and s.gmail_watch_topic):
            raise ApplicationError(
                "Gmail watch needs GMAIL_USER_EMAIL, GMAIL_CLIENT_ID, GMAIL_REFRESH_TOKEN and GMAIL_WATCH_TOPIC",
                type="GmailNotConfigured",
                non_retryable=True,
            )
        mailbox = s.gmail_user_email.strip().lower()
        watch = await asyncio.to_thread(self._watch_blocking, s.gmail_watch_topic)
        history_id = int(watch["historyId"])
        expiration = (
            datetime.fromtimestamp(int(watch["expiration"]) / 1000, tz=UTC) if watch.get("expiration") else None
        )
        async with transaction(self.deps.sessions) as session:
            # xmax = 0 only for a freshly inserted row: then this watch's historyId is the baseline.
            row = (
                await session.execute(
                    text(
                        "INSERT INTO gmail_sync_state (mailbox, history_id, watch_expiration) VALUES (:m, :h, :e) "
                        "ON CONFLICT (mailbox) DO UPDATE SET watch_expiration = EXCLUDED.watch_expiration, "
                        "updated_at = now() "
                        "RETURNING history_id, (xmax = 0) AS inserted"
                    ),
                    {"m": mailbox, "h": history_id, "e": expiration},
                )
            ).one()
        log.info(
            "gmail.watch_renewed",
            mailbox=mailbox,
            expiration=expiration.isoformat() if expiration else None,
            baseline_stored=bool(row.inserted),
        )
        return GmailWatchResult(
            mailbox=mailbox, history_id=int(row.history_id), expiration=expiration, baseline_stored=bool(row.inserted)
        )

    def _watch_blocking(self, topic: str) -> dict[str, Any]:
        body = {"topicName": topic, "labelIds": ["INBOX"], "labelFilterBehavior": "INCLUDE"}
        with gmail_service(self.deps.settings, timeout=GMAIL_HTTP_TIMEOUT_SECONDS) as service:
            try:
                return dict(service.users().watch(userId="me", body=body).execute())
            except HttpError as exc:
                _raise_for_gmail(exc, "watch request")
