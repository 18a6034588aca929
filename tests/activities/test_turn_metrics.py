"""`record_turn_metrics` on a real CRM: a turn's points are recorded once however often it runs.

The activity runs as a local activity: a worker that dies before the workflow task completes runs
the whole turn's short steps again, and a reset replays the turn. Either way /api/v1/metrics/channels
must not count the turn twice.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import text
from temporalio.testing import ActivityEnvironment

from activities.crm_activities import CRMActivities
from activities.deps import ActivityDeps
from workflows.contracts import InboundMessage, OpenConversationInput, SenderIdentity, TurnMetrics


async def _conversation(deps: ActivityDeps, env: ActivityEnvironment) -> str:
    crm = CRMActivities(deps)
    message = InboundMessage(
        channel="whatsapp",
        external_message_id=f"SM{uuid.uuid4().hex}",
        conversation_key=f"+1555{uuid.uuid4().int % 10**7:07d}",
        sender=SenderIdentity(phone=f"+1555{uuid.uuid4().int % 10**7:07d}"),
        text="Hi",
        received_at=datetime.now(UTC),
    )
    customer = await env.run(crm.resolve_customer, message)
    return str(
        await env.run(
            crm.open_conversation,
            OpenConversationInput(
                workflow_id=f"wf-{uuid.uuid4().hex}",
                run_id=uuid.uuid4().hex,
                channel="whatsapp",
                conversation_key=message.conversation_key,
                customer_id=customer.customer_id,
            ),
        )
    )


async def _points(deps: ActivityDeps, conversation_id: str) -> list[tuple[str, str | None, float]]:
    async with deps.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT metric_type, dimensions->>'turn', value FROM agent_metrics WHERE conversation_id = :c "
                "ORDER BY metric_type, dimensions->>'turn'"
            ),
            {"c": conversation_id},
        )
        return [(r[0], r[1], r[2]) for r in rows]


async def test_a_rerun_turn_records_its_points_once(deps: ActivityDeps) -> None:
    env = ActivityEnvironment()
    crm = CRMActivities(deps)
    conversation_id = await _conversation(deps, env)

    def turn(number: int, latency: float) -> TurnMetrics:
        return TurnMetrics(
            conversation_id=conversation_id,
            channel="whatsapp",
            latency_ms=latency,
            sentiment=0.2,
            escalated=False,
            prompt_tokens=100,
            completion_tokens=20,
            turn=number,
        )

    await env.run(crm.record_turn_metrics, turn(1, 250.0))
    await env.run(crm.record_turn_metrics, turn(1, 900.0))  # the same turn, run again after a crash
    await env.run(crm.record_turn_metrics, turn(2, 300.0))

    assert await _points(deps, conversation_id) == [
        ("llm_tokens", "1", 120.0),
        ("llm_tokens", "2", 120.0),
        ("response_latency_ms", "1", 250.0),
        ("response_latency_ms", "2", 300.0),
        ("sentiment", "1", 0.2),
        ("sentiment", "2", 0.2),
    ]


async def test_points_without_a_turn_number_are_not_deduplicated(deps: ActivityDeps) -> None:
    """Callers that do not know the turn (older workflow histories) still record every point."""
    env = ActivityEnvironment()
    crm = CRMActivities(deps)
    conversation_id = await _conversation(deps, env)
    point = TurnMetrics(
        conversation_id=conversation_id, channel="whatsapp", latency_ms=5.0, sentiment=0, escalated=False
    )
    await env.run(crm.record_turn_metrics, point)
    await env.run(crm.record_turn_metrics, point)
    latencies = [p for p in await _points(deps, conversation_id) if p[0] == "response_latency_ms"]
    assert latencies == [("response_latency_ms", None, 5.0), ("response_latency_ms", None, 5.0)]
