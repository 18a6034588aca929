"""The data that crosses process boundaries: Kafka records, signals, queries, updates.

Pydantic models only (this module is imported inside the workflow sandbox). Fields may be added
with defaults; never renamed or removed while workflows that carry them are running.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from core.vocabulary import (
    Channel,
    CloseReason,
    ConversationOutcome,
    ConversationStatus,
    EscalationReason,
    MessageDirection,
    Ownership,
    OwnershipAction,
    Priority,
    RatingVia,
    ReplySource,
    ResolutionAction,
)


class ErrorType:
    """`ApplicationError.type` names that retry policies match on: raised by activities, listed as
    non-retryable in `workflows.policies` and `workflows.gmail_watch`."""

    SEND_REJECTED = "SendRejected"  # the provider refused this message; retrying cannot help
    MODEL_REJECTED = "ModelRejected"  # the model API rejected the request (4xx other than 429)
    WATCH_REJECTED = "WatchRejected"  # Gmail refused users.watch (topic, permissions)
    GMAIL_NOT_CONFIGURED = "GmailNotConfigured"  # no Gmail credentials or topic configured


# Workflow ids are derived from the conversation key, so signal-with-start finds the same run.
_WORKFLOW_PREFIX: dict[str, str] = {"email": "email", "whatsapp": "whatsapp", "web_form": "web"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.@+:=-]")

MAX_TEXT_CHARS = 20_000


def _drop_nul(value: object) -> object:
    """PostgreSQL text and jsonb cannot hold NUL: no field of a message may carry one to the CRM."""
    return value.replace("\x00", "") if isinstance(value, str) else value


Text = Annotated[str, BeforeValidator(_drop_nul)]


class Attachment(BaseModel):
    """Metadata of a media file or attachment; the bytes stay with the provider."""

    url: Text | None = None
    content_type: Text | None = None
    filename: Text | None = None
    size_bytes: int | None = None


class SenderIdentity(BaseModel):
    """Who wrote: whatever the channel tells us (email for Gmail, E.164 phone for WhatsApp)."""

    email: Text | None = None
    phone: Text | None = None
    name: Text | None = None


class InboundMessage(BaseModel):
    """One customer message, channel-neutral; the Kafka record value and the signal payload."""

    channel: Channel
    external_message_id: Text = Field(min_length=1, max_length=256)
    conversation_key: Text = Field(min_length=1, max_length=256)
    sender: SenderIdentity
    text: Text = Field(max_length=MAX_TEXT_CHARS)
    received_at: datetime
    subject: Text | None = Field(default=None, max_length=500)
    attachments: list[Attachment] = Field(default_factory=list)
    # Short channel metadata: Gmail thread/message ids for threading, form category, priority.
    metadata: dict[Text, Text] = Field(default_factory=dict)


def conversation_workflow_id(channel: str, conversation_key: str) -> str:
    """`conversation-whatsapp-+14155550100`, `conversation-email-<thread>`, `conversation-web-TKT-0001`."""
    prefix = _WORKFLOW_PREFIX.get(channel)
    if prefix is None:
        raise ValueError(f"unknown channel {channel!r}")
    return f"conversation-{prefix}-{_UNSAFE.sub('_', conversation_key)}"


CONVERSATION_WORKFLOW = "ConversationWorkflow"
INBOUND_SIGNAL = "inbound_message"
RESOLVE_ESCALATION_SIGNAL = "resolve_escalation"
# The same hand-back as an update: validated before it reaches history (a second resolution is
# rejected), and it returns once the human's reply was sent.
RESOLVE_ESCALATION_UPDATE = "resolve_escalation_update"
# A human merged (or unmerged) the conversation's customer: replies, history and search attributes
# follow the record it now belongs to.
CUSTOMER_CHANGED_SIGNAL = "customer_changed"
# A person's action on who answers the conversation (claim, release, assign, take over, reply, hand
# back, close): validated against the workflow's state, acted on in order by the main loop, and
# answered once done.
OWNERSHIP_UPDATE = "change_ownership"
# The `ApplicationError.type` of an ownership action the workflow refused when it came to act on it
# (the state changed after the validator let it in, e.g. two people claimed at once).
OWNERSHIP_REFUSED = "OwnershipRefused"
# The customer's satisfaction rating (CSAT), asked once after a conversation closes: from the ticket
# page or an email's rating link (through the gateway), or a WhatsApp reply "1".."5" (in the workflow).
RATE_UPDATE = "rate_conversation"
MAX_NOTE_CHARS = 5000  # as an internal note (migration 0012)


# ----------------------------------------------------------------------------- human hand-off


class ResolveEscalation(BaseModel):
    """Signal `resolve_escalation`: a human's reply and what happens next."""

    agent: str = Field(min_length=1, max_length=200)
    reply: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    action: ResolutionAction


class EscalationState(BaseModel):
    escalation_id: str
    reason: EscalationReason
    priority: Priority
    sla_due_at: datetime
    notified_count: int = 0
    # When a person first replied: the SLA (time to a human's first answer) is met and its timers stop.
    responded_at: datetime | None = None


class OwnershipChange(BaseModel):
    """Update `change_ownership`: what a person does to who answers this conversation."""

    action: OwnershipAction
    agent: str = Field(min_length=1, max_length=200)
    # `assign`: the colleague it goes to.
    to: str | None = Field(default=None, min_length=1, max_length=200)
    # `reply`: what the customer reads.
    reply: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT_CHARS)
    # `hand_back`: what was done, for the AI (and the team) to read.
    note: str | None = Field(default=None, min_length=1, max_length=MAX_NOTE_CHARS)

    @model_validator(mode="after")
    def _needs_its_field(self) -> OwnershipChange:
        if self.action == "assign" and self.to is None:
            raise ValueError("assign names the colleague (`to`)")
        if self.action == "reply" and self.reply is None:
            raise ValueError("a reply has text (`reply`)")
        return self


class Rating(BaseModel):
    """Update `rate_conversation`: a score from 1 (bad) to 5 (great), with an optional comment."""

    score: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, min_length=1, max_length=1000)
    via: RatingVia


class RecordRatingInput(BaseModel):
    """Store a conversation's rating once; a low one also becomes a note the team reads."""

    conversation_id: str
    channel: Channel
    rating: Rating
    low: bool


class RatingOutcome(BaseModel):
    """What the workflow did with a rating: stored; a low one reopened the conversation to a person."""

    score: int
    reopened: bool
    ticket_number: str | None = None


class OwnershipOutcome(BaseModel):
    """What `change_ownership` answers once the workflow acted on it."""

    status: ConversationStatus
    ownership: Ownership
    assignee: str | None = None
    ticket_number: str | None = None
    reply_message_ids: list[str] = Field(default_factory=list)
    # False when the channel refused the reply (its message shows as failed in the console).
    reply_delivered: bool = True


class MessageSummary(BaseModel):
    """A short line about a message (the body stays in PostgreSQL)."""

    message_id: str
    direction: MessageDirection
    role: str
    at: datetime
    preview: str = Field(max_length=120)


class ConversationState(BaseModel):
    """Query `state`: what an operator or the agent console needs at a glance."""

    workflow_id: str
    channel: Channel
    conversation_key: str
    status: ConversationStatus
    conversation_id: str | None = None
    customer_id: str | None = None
    ticket_number: str | None = None
    escalation: EscalationState | None = None
    turns: int = 0
    pending_messages: int = 0
    last_messages: list[MessageSummary] = Field(default_factory=list)
    ownership: Ownership = "ai"
    assignee: str | None = None


# ----------------------------------------------------------------------------- activity I/O


class ConversationConfig(BaseModel):
    """Read once per run by an activity, so the workflow stays deterministic."""

    idle_timeout_seconds: float = 24 * 3600
    sla_business_hours: float = 2.0
    business_day_start_hour: int = 8
    business_day_end_hour: int = 20
    # BUSINESS_HOLIDAYS (ISO dates): skipped by the SLA clock like weekends.
    holidays: list[str] = Field(default_factory=list)
    # CSAT (issue 17): ask after a resolved conversation closes; wait this long; this score or lower
    # reopens it to a person. Off in histories from before it (their config lacks these fields).
    csat_enabled: bool = False
    csat_window_seconds: float = 72 * 3600.0
    csat_low_score: int = 2
    max_agent_steps: int = 6
    max_tokens_per_conversation: int = 60_000
    max_turns_per_run: int = 200
    negative_sentiment_threshold: float = -0.5
    search_attributes: bool = True
    # With a model configured: an LLM classifier checks each message the rules let through.
    inbound_classifier: bool = False
    # A notification sink is configured (NOTIFY_*): the team is told of escalations, SLA breaches
    # and customer replies while a person owns the conversation.
    notify_team: bool = False
    notify_due_soon_minutes: float = 30.0


class CustomerRef(BaseModel):
    customer_id: str
    email: str | None = None
    phone: str | None = None
    name: str | None = None


class CustomerChanged(BaseModel):
    """The customer record a conversation now belongs to, after a merge or an unmerge."""

    customer_id: str = Field(min_length=1)
    email: str | None = None
    phone: str | None = None
    name: str | None = None


class OpenConversationInput(BaseModel):
    workflow_id: str
    run_id: str
    channel: Channel
    conversation_key: str
    customer_id: str
    subject: str | None = None


class RecordInboundInput(BaseModel):
    conversation_id: str
    message: InboundMessage


class RecordedMessage(BaseModel):
    message_id: str
    duplicate: bool
    preview: str = ""


class EnsureTicketInput(BaseModel):
    conversation_id: str
    customer_id: str
    channel: Channel
    subject: str | None = None
    category: str = "other"  # normalised by the activity: metadata comes from outside
    priority: Priority = "medium"


class TicketRef(BaseModel):
    ticket_id: str
    ticket_number: str
    created: bool


class GuardrailInput(BaseModel):
    message_ids: list[str]
    channel: Channel


class GuardrailResult(BaseModel):
    action: Literal["escalate", "answer"]
    reason: EscalationReason | None = None
    # ISO 639-1 code of the messages' language, when it could be told (None: too short or unknown).
    language: str | None = None
    sentiment: float = 0.0
    matched: list[str] = Field(default_factory=list)


class IntakeInput(BaseModel):
    """A turn's messages and what the workflow knows so far: one local activity records them all.

    Replaces resolve_customer → open_conversation → record_inbound_message (once per message) →
    ensure_ticket for histories that carry the `one-intake-step` patch.
    """

    workflow_id: str
    run_id: str
    channel: Channel
    conversation_key: str
    messages: list[InboundMessage] = Field(min_length=1)
    customer_id: str | None = None
    conversation_id: str | None = None
    needs_ticket: bool = True
    # Run the inbound guardrails on the recorded messages too (not while a person owns the conversation).
    screen: bool = True


class IntakeResult(BaseModel):
    """Who wrote each message (in order), the conversation and each message's row, the ticket if
    made, and the inbound guardrails' decision when asked to screen."""

    customers: list[CustomerRef]
    conversation_id: str
    recorded: list[RecordedMessage]
    ticket: TicketRef | None = None
    guard: GuardrailResult | None = None


class InboundClassification(BaseModel):
    """Result of `classify_inbound`: the model's reading of messages the rules let through.

    It may add an escalation the rules missed, never remove one (the rules already ran).
    """

    escalate: bool = False
    reason: EscalationReason | None = None
    confidence: float = 0.0
    language: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class AgentStepInput(BaseModel):
    conversation_id: str
    customer_id: str
    channel: Channel
    ticket_number: str | None
    turn: int
    step: int
    message_ids: list[str]


class ToolCall(BaseModel):
    call_id: str
    name: str


class AgentStepResult(BaseModel):
    """Ids and counts only: the model's text and tool arguments are stored in agent_steps."""

    step_id: str
    tool_calls: list[ToolCall] = Field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    # The customer said their problem is solved ("thanks, that worked"): after this step's reply the
    # workflow closes the conversation as resolved.
    conversation_resolved: bool = False


class ToolInput(BaseModel):
    conversation_id: str
    customer_id: str
    channel: Channel
    ticket_number: str | None
    turn: int
    step: int
    step_id: str
    call_id: str


class ToolResult(BaseModel):
    call_id: str
    name: str
    ok: bool = True
    summary: str = Field(default="", max_length=300)
    # Set by escalate_to_human and send_response: what the workflow does next.
    escalate_reason: EscalationReason | None = None
    escalate_priority: Priority | None = None


class OutputCheckResult(BaseModel):
    allowed: bool
    violations: list[str] = Field(default_factory=list)


class EscalateInput(BaseModel):
    conversation_id: str
    ticket_number: str | None
    reason: EscalationReason
    priority: Priority
    sla_due_at: datetime


class PrepareReplyInput(BaseModel):
    """Format a reply and record it (status pending) under an idempotency key, before sending."""

    conversation_id: str
    channel: Channel
    ticket_number: str | None
    idempotency_key: str
    # Where the text comes from: a model's send_response call, a human's reply, or a template.
    source: ReplySource
    step_id: str | None = None
    call_id: str | None = None
    template: str | None = None
    human_agent: str | None = None
    human_reply: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    in_reply_to_message_id: str | None = None


class PreparedReply(BaseModel):
    message_ids: list[str]


class SendReplyInput(BaseModel):
    """Input of `send_<channel>_reply`: the outbound message recorded by `prepare_reply`."""

    message_id: str

    @model_validator(mode="before")
    @classmethod
    def _bare_id(cls, value: object) -> object:
        # Histories written before this model passed the message id as a bare string.
        return {"message_id": value} if isinstance(value, str) else value


class SendResult(BaseModel):
    message_id: str
    delivery_status: str
    provider_message_id: str | None = None


class TurnMetrics(BaseModel):
    conversation_id: str
    channel: Channel
    latency_ms: float
    sentiment: float
    escalated: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # The conversation's turn number: a re-run of the same turn records its points once.
    turn: int | None = None


class CloseInput(BaseModel):
    conversation_id: str
    reason: CloseReason
    # How it ended; None in histories from before outcomes were decided.
    outcome: ConversationOutcome | None = None


class BumpEscalationInput(BaseModel):
    escalation_id: str
    new_priority: Priority
    # Computed in the workflow from workflow time (business hours), never from a wall clock.
    new_sla_due_at: datetime


class ResolveEscalationInput(BaseModel):
    escalation_id: str
    conversation_id: str
    agent: str
    action: ResolutionAction
    # A hand-back's note (kind `hand_back`), stored with the resolution, once.
    note: str | None = None


class AssignInput(BaseModel):
    """Mirror who owns an open escalation (None: back in the queue) for the queue's filters."""

    escalation_id: str
    assignee: str | None
    # A person's first reply: the SLA is met (stored once; later replies keep the first time).
    responded: bool = False


class CarriedState(BaseModel):
    """The conversation workflow's state: held as one model, carried across continue-as-new as it is.

    Ids and short fields only; message bodies stay in PostgreSQL. Fields may be added with defaults,
    never renamed or removed (running workflows carry them in their input).
    """

    status: ConversationStatus = "active"
    conversation_id: str | None = None
    customer_id: str | None = None
    customer_email: str | None = None
    customer_phone: str | None = None
    ticket_number: str | None = None
    escalation: EscalationState | None = None
    seen_message_ids: list[str] = Field(default_factory=list)
    pending: list[InboundMessage] = Field(default_factory=list)
    turns: int = 0
    tokens_used: int = 0
    last_sentiment: float = 0.0
    last_messages: list[MessageSummary] = Field(default_factory=list)
    config: ConversationConfig | None = None
    replies: int = 0
    # ISO 639-1 code of the customer's language (the `Language` search attribute).
    language: str | None = None
    # The person who owns the conversation while it is escalated (the `Assignee` search attribute).
    assignee: str | None = None
    # For the outcome at close: whether a person replied in this conversation, and what the last
    # reply was (its source, and whether it reached the customer).
    human_replied: bool = False
    last_reply_source: ReplySource | None = None
    last_reply_delivered: bool = True
    # How it ended (set when it closes) and whether the customer was already asked for a rating.
    outcome: ConversationOutcome | None = None
    rating_asked: bool = False


class ConversationInput(BaseModel):
    """How a conversation workflow starts; everything else arrives by signal."""

    channel: Channel
    conversation_key: str
    # Carried across continue-as-new so a long conversation keeps its identity and dedupe state.
    carried_state: CarriedState | None = None


class ResolutionOutcome(BaseModel):
    """What the resolve update returns once the workflow has acted on it."""

    ticket_number: str | None
    status: ConversationStatus
    reply_message_ids: list[str] = Field(default_factory=list)
    # False when the channel refused the human's reply (its message shows as failed in the console).
    reply_delivered: bool = True
