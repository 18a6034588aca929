"""Record workflow histories for the Replayer test: `python -m tests.workflows.record_histories`.

Starts the embedded services in a temporary directory, runs three real conversations (a question
answered from the knowledge base; an escalation resolved by a human; one a person claims, answers
twice, hands back, takes over and closes), and writes their histories
to tests/workflows/histories/. Re-record after an intended workflow change that is guarded by
`workflow.patched` or a change of an activity's input, keeping the previous files under a
version prefix (v1_* are from before the short steps became local activities, v2_* from before
the send activities took `SendReplyInput`, v3_* from before a turn's intake became one activity)
so the old shapes keep being replayed; never re-record
to paper over a replay failure.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

from temporalio.client import Client

from activities.deps import ActivityDeps
from core.logging import configure_logging
from core.settings import Settings
from core.temporal import connect_temporal
from crm import db
from kb.embeddings import create_embedder
from kb.ingest import default_docs_path, ingest_path
from tests.workflows.helpers import eventually, inbound, make_worker
from workers.bridge import signal_with_start
from workers.embedded import EmbeddedKafka, EmbeddedPostgres, EmbeddedTemporal, free_port
from workers.temporal_setup import ensure_search_attributes
from workflows.contracts import OWNERSHIP_UPDATE, ConversationState, OwnershipChange, OwnershipOutcome

OUT = Path(__file__).parent / "histories"


async def record(settings: Settings) -> None:
    client = await connect_temporal(settings)
    await ensure_search_attributes(client)
    deps = ActivityDeps.create(settings)
    await ingest_path(default_docs_path(), sessions=deps.sessions, embedder=create_embedder(settings))
    async with make_worker(client, settings, deps):
        answered = await signal_with_start(client, settings, inbound("web_form", "How do I connect Slack?"))

        async def state(workflow_id: str) -> ConversationState:
            return await client.get_workflow_handle(workflow_id).query("state", result_type=ConversationState)

        await eventually(lambda: _has_outbound(state, answered))
        escalated = await signal_with_start(client, settings, inbound("whatsapp", "How much is the Pro plan?"))
        await eventually(lambda: _is(state, escalated, "escalated"))
        await client.get_workflow_handle(escalated).signal(
            "resolve_escalation", {"agent": "Sam", "reply": "Sales will call you today.", "action": "close"}
        )
        await client.get_workflow_handle(escalated).result()
        owned = await _owned_then_handed_back(client, settings, state)
        for name, workflow_id in (
            ("answered_web_question", answered),
            ("escalated_then_resolved", escalated),
            ("owned_then_handed_back", owned),
        ):
            history = await client.get_workflow_handle(workflow_id).fetch_history()
            (OUT / f"{name}.json").write_text(history.to_json())
    await deps.close()


async def _owned_then_handed_back(client: Client, settings: Settings, state) -> str:  # type: ignore[no-untyped-def]
    """Escalated; claimed; two replies; handed back with a note; taken over again; closed."""
    workflow_id = await signal_with_start(client, settings, inbound("web_form", "How much is the Pro plan?"))
    await eventually(lambda: _is(state, workflow_id, "escalated"))
    handle = client.get_workflow_handle(workflow_id)
    for change in (
        OwnershipChange(action="claim", agent="Ana"),
        OwnershipChange(action="reply", agent="Ana", reply="Checking the price for you."),
        OwnershipChange(action="reply", agent="Ana", reply="It is 20 dollars a seat."),
        OwnershipChange(action="hand_back", agent="Ana", note="Quoted the list price."),
        OwnershipChange(action="take_over", agent="Ana"),
        OwnershipChange(action="close", agent="Ana"),
    ):
        await handle.execute_update(OWNERSHIP_UPDATE, change, result_type=OwnershipOutcome)
    await handle.result()
    return workflow_id


async def _has_outbound(state, workflow_id: str) -> bool:  # type: ignore[no-untyped-def]
    return any(m.direction == "outbound" for m in (await state(workflow_id)).last_messages)


async def _is(state, workflow_id: str, status: str) -> bool:  # type: ignore[no-untyped-def]
    current = await state(workflow_id)
    return current.status == status and any(m.direction == "outbound" for m in current.last_messages)


def main() -> None:
    configure_logging(level="WARNING", log_format="console")
    root = Path(tempfile.mkdtemp(prefix="crm-fte-record-"))
    postgres = EmbeddedPostgres(root, free_port(), root / "logs")
    temporal = EmbeddedTemporal(root, free_port(), free_port(), root / "logs", headless=True)
    kafka = EmbeddedKafka(free_port(), root / "logs")
    postgres.start()
    temporal.start()
    kafka.start()
    try:
        db.upgrade(postgres.url())
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=postgres.url(),
            temporal_address=temporal.address,
            kafka_bootstrap_servers=kafka.bootstrap_servers,
            temporal_task_queue=f"record-{uuid.uuid4().hex[:6]}",
        )
        asyncio.run(record(settings))
    finally:
        kafka.stop()
        temporal.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
