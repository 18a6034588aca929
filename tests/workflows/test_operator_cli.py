"""The operator tasks the README documents, run with the real `temporal` CLI against the dev server."""

from __future__ import annotations

import asyncio
import json

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.settings import Settings
from tests.workflows.helpers import eventually, inbound, messages_of
from workers.bridge import signal_with_start
from workers.embedded import EmbeddedTemporal, temporal_cli_path
from workflows.contracts import ConversationState


async def temporal(server: EmbeddedTemporal, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        temporal_cli_path(),
        *args,
        "--address",
        server.address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, f"temporal {' '.join(args)}: {err.decode()}"
    return out.decode()


async def test_readme_operator_commands_find_inspect_resolve_and_reset_a_conversation(
    worker,
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    temporal_server: EmbeddedTemporal,
) -> None:
    message = inbound("web_form", "Our lawyer needs a signed DPA before Friday.")
    workflow_id = await signal_with_start(client, settings, message)

    async def escalated() -> ConversationState | None:
        state = await client.get_workflow_handle(workflow_id).query("state", result_type=ConversationState)
        return state if state.status == "escalated" and state.ticket_number else None

    state = await eventually(escalated)

    # List escalated conversations (search attributes are eventually consistent in visibility).
    async def listed() -> list[dict[str, object]] | None:
        out = await temporal(
            temporal_server,
            "workflow",
            "list",
            "--output",
            "json",
            "--query",
            'Escalated = true AND ExecutionStatus = "Running"',
        )
        rows = (
            [json.loads(line) for line in out.splitlines() if line.strip()]
            if not out.lstrip().startswith("[")
            else json.loads(out)
        )
        return rows if any(r["execution"]["workflowId"] == workflow_id for r in rows) else None

    await eventually(listed, timeout=30)
    by_ticket = await temporal(
        temporal_server, "workflow", "list", "--output", "json", "--query", f'TicketNumber = "{state.ticket_number}"'
    )
    assert workflow_id in by_ticket

    # Inspect one: describe (memo summary) and query its state.
    described = await temporal(
        temporal_server, "workflow", "describe", "--workflow-id", workflow_id, "--output", "json"
    )
    assert "summary" in described and state.ticket_number in described
    queried = await temporal(
        temporal_server, "workflow", "query", "--workflow-id", workflow_id, "--name", "state", "--output", "json"
    )
    assert '"escalated"' in queried and '"legal"' in queried

    # Resolve one with the update (waits until the human's reply was sent).
    payload = json.dumps({"agent": "Dana (legal)", "reply": "I have sent you our DPA to sign.", "action": "close"})
    updated = await temporal(
        temporal_server,
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        workflow_id,
        "--name",
        "resolve_escalation_update",
        "--input",
        payload,
    )
    assert "closed" in updated
    rows = await messages_of(sessions, workflow_id)
    assert any(r["role"] == "human_agent" and "DPA" in str(r["content"]) for r in rows)

    # Reset a stuck one: start another conversation and reset it to its first workflow task.
    other = await signal_with_start(client, settings, inbound("web_form", "How do I export a board to CSV?"))
    await eventually(lambda: _answered(sessions, other))
    await temporal(
        temporal_server,
        "workflow",
        "reset",
        "--workflow-id",
        other,
        "--type",
        "FirstWorkflowTask",
        "--reason",
        "operator test: reset a stuck conversation",
        "--yes",
    )
    description = await client.get_workflow_handle(other).describe()
    assert description.run_id is not None
    # The reset run replays the same turn; idempotent activities mean still exactly one reply.
    await asyncio.sleep(3)
    outbound = [r for r in await messages_of(sessions, other) if r["direction"] == "outbound"]
    assert len(outbound) == 1


async def _answered(sessions: async_sessionmaker[AsyncSession], workflow_id: str) -> bool:
    return any(r["direction"] == "outbound" for r in await messages_of(sessions, workflow_id))
