"""The project's one vocabulary: channels, statuses, categories, priorities, escalation reasons.

Every other place takes its words from here: the workflow contracts, the model's tool schema, the
gateway's request and response models, the UI (served at `/api/v1/vocabulary`) and the tests. The
database has CHECK constraints written by the migrations; `tests/crm/test_check_constraints.py` reads them
back from PostgreSQL and asserts they list exactly these words, so the two cannot drift apart.

Pure data (no I/O): imported inside the Temporal workflow sandbox.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Channel = Literal["email", "whatsapp", "web_form"]
CHANNELS: Final[tuple[Channel, ...]] = get_args(Channel)

IdentifierType = Literal["email", "phone"]
IDENTIFIER_TYPES: Final[tuple[IdentifierType, ...]] = get_args(IdentifierType)

# What proved an identifier belongs to its customer: an email that reached the support mailbox
# (Gmail) from it, a Twilio-signed WhatsApp message from it, or a confirmation link sent to it.
IdentifierProof = Literal["gmail", "whatsapp", "confirmation_link"]
IDENTIFIER_PROOFS: Final[tuple[IdentifierProof, ...]] = get_args(IdentifierProof)

Plan = Literal["free", "starter", "pro", "enterprise"]
PLANS: Final[tuple[Plan, ...]] = get_args(Plan)

ConversationStatus = Literal["active", "escalated", "resolved", "closed"]
CONVERSATION_STATUSES: Final[tuple[ConversationStatus, ...]] = get_args(ConversationStatus)

MessageDirection = Literal["inbound", "outbound"]
MESSAGE_DIRECTIONS: Final[tuple[MessageDirection, ...]] = get_args(MessageDirection)

MessageRole = Literal["customer", "agent", "human_agent", "system"]
MESSAGE_ROLES: Final[tuple[MessageRole, ...]] = get_args(MessageRole)

DeliveryStatus = Literal[
    "received",  # inbound, stored
    "pending",  # outbound, recorded before the send
    "queued",
    "sent",
    "delivered",
    "read",
    "failed",
    "undelivered",
    "not_configured",  # the channel has no credentials: recorded, not sent
]
DELIVERY_STATUSES: Final[tuple[DeliveryStatus, ...]] = get_args(DeliveryStatus)

TicketCategory = Literal["how_to", "bug", "billing", "account", "feature_request", "other"]
TICKET_CATEGORIES: Final[tuple[TicketCategory, ...]] = get_args(TicketCategory)

TicketStatus = Literal["open", "in_progress", "escalated", "resolved", "closed"]
TICKET_STATUSES: Final[tuple[TicketStatus, ...]] = get_args(TicketStatus)

Priority = Literal["low", "medium", "high", "urgent"]
PRIORITIES: Final[tuple[Priority, ...]] = get_args(Priority)
# An SLA that passes without a human answer raises the priority one step.
NEXT_PRIORITY: Final[dict[Priority, Priority]] = {
    "low": "medium",
    "medium": "high",
    "high": "urgent",
    "urgent": "urgent",
}

EscalationReason = Literal[
    "pricing",
    "refund",
    "legal",
    "human_request",
    "negative_sentiment",
    "security",
    "unsafe_output",
    "model_error",
    "budget",
    "no_answer",
    "agent_requested",
    "language",  # written in a language the offline path does not support
    "delivery_failed",  # the channel refused a reply (or kept failing for the whole send window)
    "taken_over",  # a person took the conversation from the AI
    "low_rating",  # the customer rated the closed conversation low (CSAT): a person follows up
]
ESCALATION_REASONS: Final[tuple[EscalationReason, ...]] = get_args(EscalationReason)

# The reasons the inbound guardrails decide, highest first: when a message trips several, the
# first one here names the escalation. Security beats everything because an attacker may be talking
# to the bot right now; legal carries liability and deadlines; refund moves money; pricing is a
# sales conversation; an explicit human request is honoured before the fuzzier sentiment signal.
GuardrailReason = Literal["security", "legal", "refund", "pricing", "human_request", "negative_sentiment"]
GUARDRAIL_REASONS: Final[tuple[GuardrailReason, ...]] = get_args(GuardrailReason)

# The reasons the model may give when it calls `escalate_to_human`; anything else it says is
# recorded as `agent_requested`.
MODEL_ESCALATION_REASONS: Final[tuple[EscalationReason, ...]] = (*GUARDRAIL_REASONS, "no_answer")

# The priority an escalation starts at, by reason.
REASON_PRIORITY: Final[dict[EscalationReason, Priority]] = {
    "security": "urgent",
    "legal": "high",
    "refund": "high",
    "negative_sentiment": "high",
    "pricing": "medium",
    "human_request": "medium",
    "unsafe_output": "medium",
    "model_error": "medium",
    "budget": "medium",
    "no_answer": "medium",
    "agent_requested": "medium",
    "language": "medium",
    "delivery_failed": "high",
    "taken_over": "medium",
    "low_rating": "high",
}

EscalationStatus = Literal["open", "resolved"]
ESCALATION_STATUSES: Final[tuple[EscalationStatus, ...]] = get_args(EscalationStatus)

ResolutionAction = Literal["resume_ai", "close"]
RESOLUTION_ACTIONS: Final[tuple[ResolutionAction, ...]] = get_args(ResolutionAction)

CloseReason = Literal["idle", "human_closed", "resolved"]
CLOSE_REASONS: Final[tuple[CloseReason, ...]] = get_args(CloseReason)

# How a conversation ended (issue 17), decided by its workflow when it closes: the AI resolved it
# (the customer confirmed, or wrote nothing more within the idle window after the AI's delivered
# answer), a person did (a person replied or closed it), or the customer went away with no answer
# delivered (after a holding message, a refused reply). A conversation still with a person has none
# yet: it is `escalated`.
ConversationOutcome = Literal["resolved_by_ai", "resolved_by_human", "abandoned"]
CONVERSATION_OUTCOMES: Final[tuple[ConversationOutcome, ...]] = get_args(ConversationOutcome)
# Where a customer's satisfaction rating (1-5, asked once after a conversation closes) came from: a
# reply on the conversation's channel (WhatsApp, email), or the ticket page (opened on the site, or
# from the rating links of an email).
RatingVia = Literal["reply", "ticket_page", "email_link"]
RATING_VIAS: Final[tuple[RatingVia, ...]] = get_args(RatingVia)

AgentStepRole = Literal["assistant", "tool"]
AGENT_STEP_ROLES: Final[tuple[AgentStepRole, ...]] = get_args(AgentStepRole)

ChannelTone = Literal["formal", "concise", "semi_formal"]
CHANNEL_TONES: Final[tuple[ChannelTone, ...]] = get_args(ChannelTone)

ReplySource = Literal["agent", "human", "template"]

# Who answers a conversation (issue 16): the AI; nobody yet (it waits in the queue for a person); a
# named person (`assignee`); or nobody ever again. Derived from the status and the assignee.
Ownership = Literal["ai", "waiting", "human", "closed"]
OWNERSHIPS: Final[tuple[Ownership, ...]] = get_args(Ownership)
# What a person does to a conversation's ownership, through the API, the console, the CLI or MCP:
# claim it, release it to the queue, give it to a named colleague, take it from the AI, reply (as
# often as needed), hand it back to the AI with a note the AI reads, or close it.
OwnershipAction = Literal["claim", "release", "assign", "take_over", "reply", "hand_back", "close"]
OWNERSHIP_ACTIONS: Final[tuple[OwnershipAction, ...]] = get_args(OwnershipAction)
# An internal note is for the team only; a `hand_back` note (written when a person hands the
# conversation back) is also what the AI reads about what the person did.
NoteKind = Literal["note", "hand_back"]
NOTE_KINDS: Final[tuple[NoteKind, ...]] = get_args(NoteKind)

# A suggested knowledge-base entry learned from a resolved `no_answer` escalation (issue 17): the
# customer's question and the person's answer wait (`pending`) until an agent approves them (then
# they are embedded into the knowledge base) or rejects them.
KbSuggestionStatus = Literal["pending", "approved", "rejected"]
KB_SUGGESTION_STATUSES: Final[tuple[KbSuggestionStatus, ...]] = get_args(KbSuggestionStatus)

# What the support team is told (issue 16), where, and how far each delivery got. A sink's delivery
# is `pending` until the sink accepted it (`delivered`) or refused it for good (`refused`).
NotificationKind = Literal["escalation_new", "sla_due_soon", "sla_breached", "customer_replied"]
NOTIFICATION_KINDS: Final[tuple[NotificationKind, ...]] = get_args(NotificationKind)
NotificationSink = Literal["email", "slack", "webhook"]
NOTIFICATION_SINKS: Final[tuple[NotificationSink, ...]] = get_args(NotificationSink)
NotificationDeliveryStatus = Literal["pending", "delivered", "refused"]
NOTIFICATION_DELIVERY_STATUSES: Final[tuple[NotificationDeliveryStatus, ...]] = get_args(NotificationDeliveryStatus)
NOTIFICATION_KIND_LABELS: Final[dict[NotificationKind, str]] = {
    "escalation_new": "New escalation",
    "sla_due_soon": "SLA due soon",
    "sla_breached": "SLA breached",
    "customer_replied": "Customer replied",
}

# --- added by the gateway

# Where a rating sent through the ticket page came from: the page's own buttons, or an email's
# one-click rating link (which opens the page with the score preselected).
PageRatingVia = Literal["ticket_page", "email_link"]
PAGE_RATING_VIAS: Final[tuple[PageRatingVia, ...]] = get_args(PageRatingVia)
# Why a conversation takes no rating now (the 409's `detail.reason` on the ticket page's rating):
# not closed yet, rated already, or not waiting for one for any other reason (e.g. started before
# ratings were asked for). The workflow's refusal starts with one of these words.
RatingRefusal = Literal["not_closed", "already_rated", "not_waiting"]
RATING_REFUSALS: Final[tuple[RatingRefusal, ...]] = get_args(RatingRefusal)

# The priorities a customer may choose on the web form; `urgent` is for escalations only.
WebFormPriority = Literal["low", "medium", "high"]
WEB_FORM_PRIORITIES: Final[tuple[WebFormPriority, ...]] = get_args(WebFormPriority)

# How far an outbound message got. A provider's status callbacks arrive out of order, so a stored
# status is only replaced by one that ranks higher (failed and undelivered tie: both are final
# unless the provider later reports the message delivered or read).
DELIVERY_PROGRESS: Final[dict[DeliveryStatus, int]] = {
    "pending": 0,
    "queued": 1,
    "sent": 2,
    "failed": 3,
    "undelivered": 3,
    "delivered": 4,
    "read": 5,
}

# What people read for each word, on the customer pages and in the agent console (the UI loads
# these from GET /api/v1/vocabulary).
CHANNEL_LABELS: Final[dict[Channel, str]] = {"email": "Email", "whatsapp": "WhatsApp", "web_form": "Web form"}
TICKET_CATEGORY_LABELS: Final[dict[TicketCategory, str]] = {
    "how_to": "How to",
    "bug": "Something is not working",
    "billing": "Billing",
    "account": "Account and access",
    "feature_request": "Feature request",
    "other": "Other",
}
PRIORITY_LABELS: Final[dict[Priority, str]] = {"low": "Low", "medium": "Medium", "high": "High", "urgent": "Urgent"}
# A ticket's status as its customer reads it ("escalated" is an internal word).
TICKET_STATUS_LABELS: Final[dict[TicketStatus, str]] = {
    "open": "Open",
    "in_progress": "In progress",
    "escalated": "With our support team",
    "resolved": "Resolved",
    "closed": "Closed",
}
ESCALATION_REASON_LABELS: Final[dict[EscalationReason, str]] = {
    "pricing": "Pricing",
    "refund": "Refund",
    "legal": "Legal",
    "human_request": "Asked for a person",
    "negative_sentiment": "Unhappy customer",
    "security": "Security",
    "unsafe_output": "Reply blocked",
    "model_error": "AI unavailable",
    "budget": "AI budget reached",
    "no_answer": "No answer in KB",
    "agent_requested": "AI asked for help",
    "language": "Language not supported",
    "delivery_failed": "Reply not delivered",
    "taken_over": "Taken over by a person",
    "low_rating": "Low satisfaction rating",
}
# What the web form's priority choice starts at.
WEB_FORM_DEFAULT_PRIORITY: Final[WebFormPriority] = "medium"
# What happened to a message, as the agent console shows it beside each reply.
DELIVERY_STATUS_LABELS: Final[dict[DeliveryStatus, str]] = {
    "received": "Received",
    "pending": "Sending",
    "queued": "Queued",
    "sent": "Sent",
    "delivered": "Delivered",
    "read": "Read",
    "failed": "Failed",
    "undelivered": "Not delivered",
    "not_configured": "Not sent: channel not configured",
}
