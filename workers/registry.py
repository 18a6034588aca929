"""What the worker hosts: the workflow classes and the activity callables bound to their deps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from activities.agent import AgentActivities
from activities.channels import ChannelActivities
from activities.crm_activities import CRMActivities
from activities.deps import ActivityDeps
from core.settings import Settings
from workflows.conversation import ConversationWorkflow


def workflow_classes() -> list[type]:
    return [ConversationWorkflow]


def activity_callables(deps: ActivityDeps) -> list[Callable[..., Any]]:
    crm, agent, channels = CRMActivities(deps), AgentActivities(deps), ChannelActivities(deps)
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
        agent.check_inbound_guardrails,
        agent.check_reply_guardrails,
        agent.search_knowledge_base,
        agent.escalate_to_human,
        agent.agent_step,
        channels.prepare_reply,
        channels.send_web_form_reply,
        channels.send_whatsapp_reply,
        channels.send_email_reply,
    ]


async def build_activities(settings: Settings) -> tuple[list[Callable[..., Any]], ActivityDeps]:
    deps = ActivityDeps.create(settings)
    return activity_callables(deps), deps


async def close_activities(deps: ActivityDeps) -> None:
    await deps.close()
