"""The Prometheus metrics the Helm chart's alerts read, counted once per event on a real CRM.

Temporal re-runs activities (a retry after a lost completion; a local activity re-run when the
worker died before the workflow task completed), so each counter must not count the re-run:
conversations started (escalation rate), reply latency, SLA breaches.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY
from temporalio.testing import ActivityEnvironment

from activities.crm_activities import CRMActivities
from activities.deps import ActivityDeps
from workflows.contracts import (
    BumpEscalationInput,
    EscalateInput,
    InboundMessage,
    IntakeInput,
    SenderIdentity,
    TurnMetrics,
)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def message(key: str) -> InboundMessage:
    return InboundMessage(
        channel="whatsapp",
        external_message_id=f"SM{uuid.uuid4().hex}",
        conversation_key=key,
        sender=SenderIdentity(phone=key),
        text="Hi, where is my invoice?",
        received_at=datetime.now(UTC),
    )


def intake(key: str, messages: list[InboundMessage], conversation_id: str | None = None) -> IntakeInput:
    return IntakeInput(
        workflow_id=f"conversation-whatsapp-{key}",
        run_id=uuid.uuid4().hex,
        channel="whatsapp",
        conversation_key=key,
        messages=messages,
        conversation_id=conversation_id,
        needs_ticket=False,
        screen=False,
    )


async def test_series_exist_at_zero_before_any_event(deps: ActivityDeps) -> None:
    # increase() needs a sample before the first increment: the worker exports every label at 0.
    assert REGISTRY.get_sample_value("crm_fte_escalation_sla_breaches_total", {"priority": "urgent"}) is not None
    assert REGISTRY.get_sample_value("crm_fte_conversations_started_total", {"channel": "web_form"}) is not None
    assert REGISTRY.get_sample_value("crm_fte_escalations_total", {"reason": "legal"}) is not None


async def test_a_conversation_is_counted_once_at_its_first_intake(deps: ActivityDeps) -> None:
    env = ActivityEnvironment()
    crm = CRMActivities(deps)
    key = f"+1555{uuid.uuid4().int % 10**7:07d}"
    first = message(key)
    before = sample("crm_fte_conversations_started_total", channel="whatsapp")

    result = await env.run(crm.record_inbound_turn, intake(key, [first]))
    assert sample("crm_fte_conversations_started_total", channel="whatsapp") == before + 1
    # The same intake run again (a re-run local activity): its message is a duplicate now.
    await env.run(crm.record_inbound_turn, intake(key, [first]))
    # A later turn of the same conversation: the workflow knows its conversation by then.
    await env.run(crm.record_inbound_turn, intake(key, [message(key)], conversation_id=result.conversation_id))
    assert sample("crm_fte_conversations_started_total", channel="whatsapp") == before + 1


async def test_reply_latency_is_observed_once_per_turn(deps: ActivityDeps) -> None:
    env = ActivityEnvironment()
    crm = CRMActivities(deps)
    key = f"+1555{uuid.uuid4().int % 10**7:07d}"
    conversation_id = (await env.run(crm.record_inbound_turn, intake(key, [message(key)]))).conversation_id
    count = "crm_fte_reply_latency_seconds_count"
    before = sample(count, channel="whatsapp"), sample("crm_fte_reply_latency_seconds_sum", channel="whatsapp")

    def turn(number: int, latency_ms: float) -> TurnMetrics:
        return TurnMetrics(
            conversation_id=conversation_id,
            channel="whatsapp",
            latency_ms=latency_ms,
            sentiment=0.1,
            escalated=False,
            turn=number,
        )

    await env.run(crm.record_turn_metrics, turn(1, 2500.0))
    await env.run(crm.record_turn_metrics, turn(1, 9000.0))  # the same turn again
    await env.run(crm.record_turn_metrics, turn(2, 500.0))
    assert sample(count, channel="whatsapp") == before[0] + 2
    assert sample("crm_fte_reply_latency_seconds_sum", channel="whatsapp") == before[1] + 3.0


async def test_an_sla_breach_is_counted_once(deps: ActivityDeps) -> None:
    env = ActivityEnvironment()
    crm = CRMActivities(deps)
    key = f"+1555{uuid.uuid4().int % 10**7:07d}"
    conversation_id = (await env.run(crm.record_inbound_turn, intake(key, [message(key)]))).conversation_id
    due = datetime.now(UTC) + timedelta(hours=2)
    escalation = await env.run(
        crm.record_escalation,
        EscalateInput(
            conversation_id=conversation_id, ticket_number=None, reason="refund", priority="high", sla_due_at=due
        ),
    )
    before = sample("crm_fte_escalation_sla_breaches_total", priority="urgent")
    bump = BumpEscalationInput(
        escalation_id=escalation.escalation_id, new_priority="urgent", new_sla_due_at=due + timedelta(hours=2)
    )
    await env.run(crm.bump_escalation, bump)
    await env.run(crm.bump_escalation, bump)  # a retried attempt
    assert sample("crm_fte_escalation_sla_breaches_total", priority="urgent") == before + 1
    # The next deadline passes too: one more breach.
    await env.run(crm.bump_escalation, bump.model_copy(update={"new_sla_due_at": due + timedelta(hours=4)}))
    assert sample("crm_fte_escalation_sla_breaches_total", priority="urgent") == before + 2
