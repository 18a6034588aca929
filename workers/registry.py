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
from activities.identity import IdentityActivities
from activities.notifications import NotificationActivities
from activities.notifications.daily_report import DailyReportActivities
from core.settings import Settings
from workflows.conversation import ConversationWorkflow
from workflows.gmail_watch import GmailWatchWorkflow
from workflows.identity_confirmation import IdentityConfirmationWorkflow
from workflows.notifications import NotificationWorkflow
from workflows.reports import DailyReportWorkflow


def workflow_classes() -> list[type]:
    return [
        ConversationWorkflow,
        GmailWatchWorkflow,
        IdentityConfirmationWorkflow,
        NotificationWorkflow,
        DailyReportWorkflow,
    ]


# Modules the workflows import that hold no state and do no I/O: loaded once per worker instead of
# once per workflow instance inside the sandbox (a measurable share of the worker's CPU per turn).
# The workflow modules themselves stay sandboxed. OpenTelemetry passes through so workflow spans
# join the process's tracer.
PASSTHROUGH_MODULES = (
    "opentelemetry",
    "core.vocabulary",
    "workflows.activity_refs",
    "workflows.contracts",
    "workflows.notification_contracts",
    "workflows.policies",
    "workflows.report_contracts",
    "workflows.search_attributes",
)


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox, with the pure modules above passed through."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    )


def activity_callables(deps: ActivityDeps) -> list[Callable[..., Any]]:
    crm, agent, channels = CRMActivities(deps), AgentActivities(deps), ChannelActivities(deps)
    gmail, guardrails = GmailWatchActivities(deps), GuardrailActivities(deps)
    identity = IdentityActivities(deps)
    notifications = NotificationActivities(deps)
    reports = DailyReportActivities(deps)
    return [
        crm.load_conversation_config,
        crm.resolve_customer,
        crm.open_conversation,
        crm.record_inbound_message,
        crm.record_inbound_turn,
        crm.ensure_ticket,
        crm.create_ticket_tool,
        crm.get_customer_history,
        crm.record_escalation,
        crm.bump_escalation,
        crm.resolve_escalation_record,
        crm.assign_escalation,
        crm.record_rating,
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
        identity.send_identity_confirmation,
        notifications.notification_sinks,
        notifications.send_notification,
        reports.compute_daily_report,
        reports.send_daily_report,
    ]


async def build_activities(settings: Settings) -> tuple[list[Callable[..., Any]], ActivityDeps]:
    deps = ActivityDeps.create(settings)
    return activity_callables(deps), deps


async def close_activities(deps: ActivityDeps) -> None:
    await deps.close()
