"""The data of a team notification (issue 16): what happened, and one delivery of it to one sink.

Pydantic models only (imported inside the workflow sandbox). A notification carries ids and short
fields: the summary is cut to `SUMMARY_MAX_CHARS`, so a customer's message never travels whole to
Slack, an inbox or a third-party webhook, and no secret is ever a field here. Fields may be added
with defaults; never renamed or removed while workflows that carry them are running.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Annotated, Final
from urllib.parse import quote

from pydantic import BaseModel, BeforeValidator, Field

from core.vocabulary import Channel, EscalationReason, NotificationKind, NotificationSink, Priority

SUMMARY_MAX_CHARS: Final = 200
# Where the agent console opens one conversation (gateway/ui.py serves the console at /agent).
CONSOLE_PATH: Final = "/agent"
NOTIFICATION_WORKFLOW: Final = "NotificationWorkflow"

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.:=-]")
_KEY_MAX_CHARS = 200


class NotificationErrorType:
    """`ApplicationError.type` names of the notification activities (non-retryable in its policy)."""

    # The sink refused this notification for good (4xx other than 408/429, a bad URL, an unset
    # secret, a mailbox that is not configured): retrying cannot help.
    REFUSED: Final = "NotificationRefused"
    # The sink asked us to come back later (429 or 503 with Retry-After): retried after that delay.
    RETRY_LATER: Final = "NotificationRetryLater"


def _short_summary(value: object) -> object:
    """One line of at most SUMMARY_MAX_CHARS characters (an ellipsis marks a cut)."""
    if not isinstance(value, str):
        return value
    line = " ".join(value.replace("\x00", "").split())
    return line if len(line) <= SUMMARY_MAX_CHARS else line[: SUMMARY_MAX_CHARS - 1].rstrip() + "…"


Summary = Annotated[str, BeforeValidator(_short_summary)]


def notification_key(kind: NotificationKind, conversation_id: str, occurrence: str) -> str:
    """The idempotency key of one notification: the same event always gets the same key.

    `occurrence` names the event within the conversation: the escalation's id for
    `escalation_new`/`sla_due_soon`/`sla_breached` (plus the SLA deadline when a bumped SLA may
    notify again), the customer message's id for `customer_replied`.
    """
    raw = f"{kind}:{conversation_id}:{occurrence}"
    safe = _KEY_UNSAFE.sub("_", raw)
    if len(safe) <= _KEY_MAX_CHARS:
        return safe
    return f"{kind}:{hashlib.sha256(raw.encode()).hexdigest()}"


def notification_workflow_id(idempotency_key: str) -> str:
    """`notify-<key>`: a second start of the same notification finds the first one's workflow."""
    return f"notify-{idempotency_key}"


class Notification(BaseModel):
    """Something the support team must know about one conversation."""

    # The same event always carries the same key (see `notification_key`): it is the workflow id,
    # the delivery id a webhook receiver dedupes on, and the delivery table's key.
    idempotency_key: str = Field(min_length=1, max_length=_KEY_MAX_CHARS, pattern=r"^[A-Za-z0-9_.:=-]+$")
    kind: NotificationKind
    conversation_id: str = Field(min_length=1)
    ticket_number: str | None = None
    channel: Channel
    reason: EscalationReason | None = None
    priority: Priority = "medium"
    sla_due_at: datetime | None = None
    # The human who owns the conversation; None: the team (nobody claimed it yet).
    assignee: str | None = None
    # One line for a person: never more than SUMMARY_MAX_CHARS characters of anything.
    summary: Summary = ""
    # When the event happened (workflow.now() of the caller).
    occurred_at: datetime

    @property
    def console_path(self) -> str:
        """The agent console opened on this conversation (relative to PUBLIC_BASE_URL)."""
        return f"{CONSOLE_PATH}?conversation={quote(self.conversation_id, safe='')}"


class NotificationDelivery(BaseModel):
    """One notification to one sink: the input of `send_notification`."""

    notification: Notification
    sink: NotificationSink


class NotificationDelivered(BaseModel):
    """A sink accepted the notification (now, or on an earlier attempt: then nothing was sent again)."""

    sink: NotificationSink
    attempts: int
    already_delivered: bool = False
    # The provider's id where it gives one (Gmail's message id); Slack and webhooks give none.
    provider_id: str | None = None


class NotificationSinks(BaseModel):
    """The sinks configured on the worker (read from settings by the `notification_sinks` activity)."""

    sinks: list[NotificationSink] = Field(default_factory=list)


class NotificationOutcome(BaseModel):
    """What `NotificationWorkflow` achieved, per sink."""

    delivered: list[NotificationSink] = Field(default_factory=list)
    refused: list[NotificationSink] = Field(default_factory=list)
    # Still failing when the delivery window closed (the sink stayed down for a day).
    gave_up: list[NotificationSink] = Field(default_factory=list)
