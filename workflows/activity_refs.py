"""Typed references to the activities the conversation workflow runs.

The workflow must not import the activity implementations (they do I/O: SQLAlchemy, HTTP clients),
so each activity is declared here by name with its one input model and its result, and the
workflow calls these declarations: `workflow.execute_activity(ensure_ticket, EnsureTicketInput(...))`
is checked by mypy and its result type comes from the annotation. The implementations in
`activities/` register under the same names; `tests/workflows/test_activity_refs.py` asserts that
every declaration here matches a registered implementation's name and types.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, NoReturn

from temporalio import activity

from core.vocabulary import Channel
from workflows.contracts import (
    AgentStepInput,
    AgentStepResult,
    AssignInput,
    BumpEscalationInput,
    CloseInput,
    ConversationConfig,
    CustomerRef,
    EnsureTicketInput,
    EscalateInput,
    EscalationState,
    GuardrailInput,
    GuardrailResult,
    InboundClassification,
    InboundMessage,
    IntakeInput,
    IntakeResult,
    OpenConversationInput,
    OutputCheckResult,
    PreparedReply,
    PrepareReplyInput,
    RecordedMessage,
    RecordInboundInput,
    RecordRatingInput,
    ResolveEscalationInput,
    SendReplyInput,
    SendResult,
    TicketRef,
    ToolInput,
    ToolResult,
    TurnMetrics,
)


def declared_only(name: str) -> NoReturn:
    """The body of an activity declaration: the worker registers the implementation under its name."""
    raise NotImplementedError(f"{name} is a declaration; the worker registers the implementation")


# ----------------------------------------------------------------------------- CRM


@activity.defn(name="load_conversation_config")
async def load_conversation_config() -> ConversationConfig:
    """The conversation's limits and timers, read from settings once per run."""
    declared_only("load_conversation_config")


@activity.defn(name="resolve_customer")
async def resolve_customer(message: InboundMessage) -> CustomerRef:
    """The customer behind a sender, across channels."""
    declared_only("resolve_customer")


@activity.defn(name="open_conversation")
async def open_conversation(inp: OpenConversationInput) -> str:
    """The conversation row's id (created once)."""
    declared_only("open_conversation")


@activity.defn(name="record_inbound_message")
async def record_inbound_message(inp: RecordInboundInput) -> RecordedMessage:
    """Store a customer message (idempotent per provider id)."""
    declared_only("record_inbound_message")


@activity.defn(name="ensure_ticket")
async def ensure_ticket(inp: EnsureTicketInput) -> TicketRef:
    """The conversation's one ticket."""
    declared_only("ensure_ticket")


@activity.defn(name="record_inbound_turn")
async def record_inbound_turn(inp: IntakeInput) -> IntakeResult:
    """Identify the senders, open the conversation, store the messages and make the ticket, at once."""
    declared_only("record_inbound_turn")


@activity.defn(name="record_escalation")
async def record_escalation(inp: EscalateInput) -> EscalationState:
    """Open the hand-off to a human."""
    declared_only("record_escalation")


@activity.defn(name="bump_escalation")
async def bump_escalation(inp: BumpEscalationInput) -> EscalationState:
    """The SLA passed: raise the priority and re-notify."""
    declared_only("bump_escalation")


@activity.defn(name="record_rating")
async def record_rating(inp: RecordRatingInput) -> bool:
    """Store the customer's rating once (a low one also as a note); True when this call stored it."""
    declared_only("record_rating")


@activity.defn(name="assign_escalation")
async def assign_escalation(inp: AssignInput) -> None:
    """Mirror who owns an open escalation (and a person's first reply) for the queue's filters."""
    declared_only("assign_escalation")


@activity.defn(name="resolve_escalation_record")
async def resolve_escalation_record(inp: ResolveEscalationInput) -> str:
    """Record the human's resolution."""
    declared_only("resolve_escalation_record")


@activity.defn(name="close_conversation")
async def close_conversation(inp: CloseInput) -> str:
    """Close the conversation and resolve its ticket."""
    declared_only("close_conversation")


@activity.defn(name="record_turn_metrics")
async def record_turn_metrics(inp: TurnMetrics) -> None:
    """The turn's latency, sentiment and token points (once per turn)."""
    declared_only("record_turn_metrics")


# ----------------------------------------------------------------------------- guardrails and the agent


@activity.defn(name="check_inbound_guardrails")
async def check_inbound_guardrails(inp: GuardrailInput) -> GuardrailResult:
    """Must a human answer these messages?"""
    declared_only("check_inbound_guardrails")


@activity.defn(name="check_reply_guardrails")
async def check_reply_guardrails(inp: ToolInput) -> OutputCheckResult:
    """May the model's draft reply be sent?"""
    declared_only("check_reply_guardrails")


@activity.defn(name="classify_inbound")
async def classify_inbound(inp: GuardrailInput) -> InboundClassification:
    """With a model configured: may these messages, which the rules let through, still need a human?"""
    declared_only("classify_inbound")


@activity.defn(name="agent_step")
async def agent_step(inp: AgentStepInput) -> AgentStepResult:
    """One model call; its text and tool calls are stored in agent_steps."""
    declared_only("agent_step")


@activity.defn(name="search_knowledge_base")
async def search_knowledge_base(inp: ToolInput) -> ToolResult:
    """Tool: search the knowledge base."""
    declared_only("search_knowledge_base")


@activity.defn(name="create_ticket")
async def create_ticket(inp: ToolInput) -> ToolResult:
    """Tool: set the ticket's category and priority."""
    declared_only("create_ticket")


@activity.defn(name="get_customer_history")
async def get_customer_history(inp: ToolInput) -> ToolResult:
    """Tool: the customer's earlier conversations."""
    declared_only("get_customer_history")


@activity.defn(name="escalate_to_human")
async def escalate_to_human(inp: ToolInput) -> ToolResult:
    """Tool: the model hands the conversation to a person."""
    declared_only("escalate_to_human")


# The model's tools that run as activities (`send_response` is handled by the workflow itself).
TOOLS: Final[dict[str, Callable[[ToolInput], Awaitable[ToolResult]]]] = {
    "search_knowledge_base": search_knowledge_base,
    "create_ticket": create_ticket,
    "get_customer_history": get_customer_history,
    "escalate_to_human": escalate_to_human,
}


# ----------------------------------------------------------------------------- replies


@activity.defn(name="prepare_reply")
async def prepare_reply(inp: PrepareReplyInput) -> PreparedReply:
    """Format a reply for the channel and record it (pending) under its idempotency key."""
    declared_only("prepare_reply")


@activity.defn(name="send_web_form_reply")
async def send_web_form_reply(inp: SendReplyInput) -> SendResult:
    """Deliver a recorded reply on the web form (the ticket page)."""
    declared_only("send_web_form_reply")


@activity.defn(name="send_whatsapp_reply")
async def send_whatsapp_reply(inp: SendReplyInput) -> SendResult:
    """Send a recorded reply through Twilio WhatsApp."""
    declared_only("send_whatsapp_reply")


@activity.defn(name="send_email_reply")
async def send_email_reply(inp: SendReplyInput) -> SendResult:
    """Send a recorded reply through Gmail, in the customer's thread."""
    declared_only("send_email_reply")


SEND_REPLY: Final[dict[Channel, Callable[[SendReplyInput], Awaitable[SendResult]]]] = {
    "web_form": send_web_form_reply,
    "whatsapp": send_whatsapp_reply,
    "email": send_email_reply,
}
