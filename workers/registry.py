"""What the worker hosts: the workflow classes and the activity callables bound to their deps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.agent import AgentActivities
from activities.channels.activities import ChannelActivities, GmailWatchActivities
from activities.crm_activities import CRMActivities
from activities.deps import ActivityDeps
from activities.guardrails.activities import GuardrailActivities
from core.settings import Settings
from workflows.conversation import ConversationWorkflow
from workflows.gmail_watch import GmailWatchWorkflow


def workflow_classes() -> list[type]:
    return [ConversationWorkflow, GmailWatchWorkflow]


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox, with OpenTelemetry passed through so workflow spans join the process's tracer."""
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules("opentelemetry"))


def activity_callables(deps: ActivityDeps) -> list[Callable[..., Any]]:
    crm, agent, channels = CRMActivities(deps), AgentActivities(deps), ChannelActivities(deps)
    gmail, guardrails = GmailWatchActivities(deps), GuardrailActivities(deps)
    return [
        crm.load_conversation_config,
        crm.resolve_customer,
        crm.open_conversation,
        crm.record_inbound_message,
        crm.ensure_ticket,
        crm.create_ticket_tool,
        crm.get_customer_history,
        crm.record_escalation,
        crm.bump_escalation,
        crm.resolve_escalation_record,
        crm.close_conversation,
        crm.record_turn_metrics,
        guardrails.check_inbound_guardrails,
        guardrails.check_reply_guardrails,
        guardrails.classify_inbound,
        agent.search_knowledge_base,
        agent.escalate_to_human,
        agent.agent_step,
        channels.prepare_reply,
        channels.send_web_form_reply,
        channels.send_whatsapp_reply,
        channels.send_email_reply,
        gmail.renew_gmail_watch,
    ]


async def build_activities(settings: Settings) -> tuple[list[Callable[..., Any]], ActivityDeps]:
    deps = ActivityDeps.create(settings)
    return activity_callables(deps), deps


async def close_activities(deps: ActivityDeps) -> None:
    await deps.close()
