"""The three notification sinks: the support mailbox (Gmail), a Slack incoming webhook, a signed webhook.

Each sink either returns (accepted; with the provider's id where there is one), raises `SinkRefused`
(a final refusal: retrying cannot help) or raises anything else (retryable). No message raised here
names a URL or a secret: the Slack URL is itself a secret, and Temporal stores failure messages.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import timedelta
from email.message import EmailMessage

import httpx
from temporalio.exceptions import ApplicationError

from activities.channels.gmail import GmailAdapter
from activities.channels.port import EmailThread, OutboundMessage
from core.settings import Settings
from workflows.notification_contracts import NotificationErrorType

# The webhook headers (docs/notifications.md).
DELIVERY_HEADER = "X-CRM-FTE-Delivery"
TIMESTAMP_HEADER = "X-CRM-FTE-Timestamp"
SIGNATURE_HEADER = "X-CRM-FTE-Signature"
SIGNATURE_VERSION = "v1"
# A Retry-After longer than this is not waited for inside one attempt's schedule: the retry policy's
# own backoff takes over.
_MAX_RETRY_AFTER = timedelta(minutes=10)
_BODY_IN_ERROR_CHARS = 200


class SinkRefused(Exception):
    """The sink refused the notification for good (its message is safe to store and log)."""


class SinkUnavailable(Exception):
    """The sink could not take the notification now; a later attempt may succeed."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`v1=<hex HMAC-SHA256 of "{timestamp}.{body}">` with the shared secret."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def _retry_after(response: httpx.Response) -> timedelta | None:
    raw = response.headers.get("retry-after", "").strip()
    if not raw.isdigit():
        return None
    return min(timedelta(seconds=int(raw)), _MAX_RETRY_AFTER)


async def _post(
    client: httpx.AsyncClient,
    what: str,
    url: str,
    *,
    json: dict[str, object] | None = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """POST; 2xx is delivered, 4xx but 408/429 is final, anything else (and no answer) is retried."""
    try:
        response = await client.post(url, json=json, content=content, headers=headers)
    except httpx.HTTPError as exc:
        # The exception's text may carry the URL (a secret for Slack): name the failure only.
        raise SinkUnavailable(f"{what} unreachable: {type(exc).__name__}") from None
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = " ".join(response.text.split())[:_BODY_IN_ERROR_CHARS]
    message = f"{what} answered HTTP {status}" + (f": {detail}" if detail else "")
    if 400 <= status < 500 and status not in (408, 429):
        raise SinkRefused(message)
    delay = _retry_after(response)
    if delay is not None:
        # Honour the sink's Retry-After (Slack: 429 with Retry-After seconds) for the next attempt.
        raise ApplicationError(message, type=NotificationErrorType.RETRY_LATER, next_retry_delay=delay)
    raise SinkUnavailable(message)


async def post_slack(client: httpx.AsyncClient, url: str, payload: dict[str, object]) -> None:
    """An incoming-webhook message. Slack answers 200 "ok"; 400 invalid_payload, 403 action_prohibited,
    404 no_service/channel_not_found, 410 channel_is_archived are final; 429 and 5xx are retried."""
    await _post(client, "Slack", url, json=payload)


async def post_webhook(
    client: httpx.AsyncClient, url: str, *, secret: str, delivery_id: str, body: bytes, timestamp: int | None = None
) -> None:
    """The signed generic webhook (headers and signature as docs/notifications.md describes)."""
    at = int(time.time()) if timestamp is None else timestamp
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "crm-fte-notifications/1",
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(at),
        SIGNATURE_HEADER: sign(secret, at, body),
    }
    await _post(client, "The webhook", url, content=body, headers=headers)


class GmailNotificationAdapter(GmailAdapter):
    """The Gmail reply adapter, composing a new message (its own subject, no `Re:`), not a reply."""

    def _compose(self, message: OutboundMessage, thread: EmailThread, recipient: str) -> EmailMessage:
        mime = super()._compose(message, thread, recipient)
        del mime["Subject"]
        mime["Subject"] = thread.subject or "Support notification"
        return mime


async def send_email(settings: Settings, *, message_id: str, to: str, subject: str, text: str) -> str | None:
    """From the support mailbox to the team, in a new thread; a retry finds its own earlier send."""
    if not settings.gmail_configured:
        raise SinkRefused("the support mailbox is not configured (GMAIL_USER_EMAIL, GMAIL_CLIENT_ID, ...)")
    recipients = [a.strip() for a in to.split(",") if a.strip()]
    if not recipients or not all("@" in a for a in recipients):
        raise SinkRefused("NOTIFY_EMAIL_TO is not a list of email addresses")
    outbound = OutboundMessage(
        message_id=message_id,
        channel="email",
        content=text,
        to_email=", ".join(recipients),
        to_phone=None,
        attributes={},
        email_thread=EmailThread(subject=subject),  # no thread id: a new thread
    )
    try:
        status, provider_id = await GmailNotificationAdapter(settings).send(outbound)
    except ApplicationError as exc:
        if exc.non_retryable:
            raise SinkRefused(str(exc)) from None
        raise
    if status == "not_configured":
        raise SinkRefused("the support mailbox is not configured")
    return provider_id
