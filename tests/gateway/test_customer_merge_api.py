"""Merge and unmerge through the agent API and `crm-fte customers`, on the real stack.

An open conversation's real ConversationWorkflow learns its new customer (the `customer_changed`
signal): its state query and its search attributes follow the merge and the unmerge. Every bad
request is a 4xx with a reason (or a one-line CLI error) and changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from typer.testing import CliRunner, Result

from core.settings import Settings, reset_settings_cache
from crm.db import transaction
from gateway.agents import SCOPE_READ, SCOPE_WRITE, create_api_key
from tests.crm import customer_records as rec
from tests.workflows.helpers import eventually, inbound, messages_of
from workers.bridge import signal_with_start
from workers.customers_cli import customers_app
from workflows import search_attributes as sa
from workflows.contracts import ConversationState


async def new_key(
    sessions: async_sessionmaker[AsyncSession], scopes: tuple[str, ...] = (SCOPE_READ, SCOPE_WRITE)
) -> tuple[str, dict[str, str]]:
    name = f"Merger {uuid.uuid4().hex[:8]}"
    async with transaction(sessions) as session:
        _, key = await create_api_key(session, name=name, scopes=scopes)
    return name, {"Authorization": f"Bearer {key}"}


async def seed_pair(sessions: async_sessionmaker[AsyncSession]) -> tuple[rec.Seeded, rec.Seeded]:
    async with transaction(sessions) as session:
        t = rec.tag()
        source = await rec.customer(session, name=f"Src {t}")
        target = await rec.customer(session, name=f"Dst {t}", email=f"dst.{t}@example.com")
        await rec.identifier(session, source, kind="email", value=f"src.{t}@example.com", verified=True)
        await rec.identifier(session, target, kind="email", value=f"dst.{t}@example.com", verified=True)
        await rec.conversation(session, source, status="closed")
        await rec.conversation(session, target, status="closed")
    return source, target


async def audit_count(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(text("SELECT count(*) FROM human_actions WHERE action LIKE 'customer.%'")) or 0)


async def state_of(sessions: async_sessionmaker[AsyncSession], ids: list[uuid.UUID]) -> dict[str, Any]:
    async with sessions() as session:
        return await rec.snapshot(session, ids)


def cli(settings: Settings, args: list[str]) -> Result:
    env = {
        "DATABASE_URL": settings.database_dsn,
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "TEMPORAL_NAMESPACE": settings.temporal_namespace,
        "LOG_LEVEL": "WARNING",
    }
    reset_settings_cache()
    try:
        return CliRunner().invoke(customers_app, args, env=env)
    finally:
        reset_settings_cache()


async def test_merge_signals_the_open_workflow_and_unmerge_brings_it_back(
    worker,  # type: ignore[no-untyped-def]
    http: httpx.AsyncClient,
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    name, auth = await new_key(sessions)
    # A real WhatsApp conversation: its workflow stays open, waiting for the next message.
    message = inbound("whatsapp", "Hi, how do I export my projects to CSV?")
    workflow_id = await signal_with_start(client, settings, message)

    async def answered() -> bool:
        rows = await messages_of(sessions, workflow_id)
        return any(r["direction"] == "outbound" for r in rows)

    await eventually(answered, timeout=60)
    handle = client.get_workflow_handle(workflow_id)
    source_id = (await handle.query("state", result_type=ConversationState)).customer_id
    t = rec.tag()
    async with transaction(sessions) as session:
        target = await rec.customer(session, name=f"Lisa {t}", email=f"lisa.{t}@example.com")
        await rec.identifier(session, target, kind="email", value=f"lisa.{t}@example.com", verified=True)

    preview = await http.get(
        f"/api/v1/customers/{source_id}/merge-preview", params={"into": str(target.customer_id)}, headers=auth
    )
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["open_workflows"] == 1 and len(body["conversation_ids"]) == 1
    assert body["source"]["phone"] == message.sender.phone
    assert [i["verified"] for i in body["target"]["identifiers"]] == [True]

    merged = await http.post(
        f"/api/v1/customers/{source_id}/merge",
        json={"into": str(target.customer_id), "reason": "Same person: confirmed on the phone"},
        headers=auth,
    )
    assert merged.status_code == 200, merged.text
    result = merged.json()
    assert result["workflows_told"] == [workflow_id] and result["workflows_not_told"] == []
    assert result["actor"] == name

    async def follows(customer_id: str, email: str | None) -> bool:
        state = await handle.query("state", result_type=ConversationState)
        attrs = (await handle.describe()).typed_search_attributes
        return state.customer_id == customer_id and attrs.get(sa.CUSTOMER_EMAIL) == email

    await eventually(lambda: follows(str(target.customer_id), f"lisa.{t}@example.com"))
    listed = await http.get(f"/api/v1/customers/{target.customer_id}/merges", headers=auth)
    assert listed.status_code == 200
    assert [m["id"] for m in listed.json()["merges"]] == [result["merge_id"]]
    gone = await http.get(f"/api/v1/customers/{source_id}/merges", headers=auth)
    assert gone.json()["merged_into"] == str(target.customer_id)

    undone = await http.post(f"/api/v1/merges/{result['merge_id']}/unmerge", headers=auth)
    assert undone.status_code == 200, undone.text
    assert undone.json()["unmerged"] and undone.json()["workflows_told"] == [workflow_id]
    await eventually(lambda: follows(source_id, None))

    async with sessions() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT agent_name, action, api_key_id IS NOT NULL AS keyed FROM human_actions "
                    "WHERE detail->>'merge_id' = :m ORDER BY id"
                ),
                {"m": result["merge_id"]},
            )
        ).all()
    assert [(r.agent_name, r.action, r.keyed) for r in rows] == [
        (name, "customer.merged", True),
        (name, "customer.unmerged", True),
    ]


async def test_bad_requests_are_4xx_with_a_reason_and_change_nothing(
    http: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, auth = await new_key(sessions)
    _, reader = await new_key(sessions, (SCOPE_READ,))
    source, target = await seed_pair(sessions)
    src, dst = source.customer_id, target.customer_id
    ids = [src, dst]
    before = await state_of(sessions, ids)
    audited = await audit_count(sessions)
    unknown = uuid.uuid4()

    cases: list[tuple[str, str, dict[str, Any] | None, int, str]] = [
        ("GET", f"/api/v1/customers/not-a-uuid/merge-preview?into={dst}", None, 422, "customer_id"),
        ("GET", f"/api/v1/customers/{src}/merge-preview?into=nope", None, 422, "into"),
        ("GET", f"/api/v1/customers/{src}/merge-preview", None, 422, "into"),
        ("GET", f"/api/v1/customers/{src}/merge-preview?into={src}", None, 409, "into itself"),
        ("GET", f"/api/v1/customers/{unknown}/merge-preview?into={dst}", None, 404, "no customer"),
        ("POST", f"/api/v1/customers/{src}/merge", {"into": str(src), "reason": "x"}, 409, "into itself"),
        ("POST", f"/api/v1/customers/{src}/merge", {"into": str(unknown), "reason": "x"}, 404, "no customer"),
        ("POST", f"/api/v1/customers/{unknown}/merge", {"into": str(dst), "reason": "x"}, 404, "no customer"),
        ("POST", f"/api/v1/customers/{src}/merge", {"into": "123", "reason": "x"}, 422, "into"),
        ("POST", f"/api/v1/customers/{src}/merge", {"into": str(dst), "reason": "  "}, 422, "reason"),
        ("POST", f"/api/v1/customers/{src}/merge", {"into": str(dst)}, 422, "reason"),
        ("POST", "/api/v1/customers/xyz/merge", {"into": str(dst), "reason": "x"}, 422, "customer_id"),
        ("POST", f"/api/v1/merges/{unknown}/unmerge", None, 404, "no merge"),
        ("POST", "/api/v1/merges/nope/unmerge", None, 422, "merge_id"),
        ("GET", f"/api/v1/customers/{unknown}/merges", None, 404, "no customer"),
    ]
    for method, path, body, status, reason in cases:
        response = await http.request(method, path, json=body, headers=auth)
        assert response.status_code == status, (path, body, response.text)
        assert reason in response.text, (path, response.text)
        assert response.json()["message"], response.text
    # Merging needs the write scope.
    refused = await http.post(f"/api/v1/customers/{src}/merge", json={"into": str(dst), "reason": "x"}, headers=reader)
    assert refused.status_code == 403
    assert (
        await http.post(f"/api/v1/customers/{src}/merge", json={"into": str(dst), "reason": "x"})
    ).status_code == 401
    assert await state_of(sessions, ids) == before
    assert await audit_count(sessions) == audited

    merged = await http.post(f"/api/v1/customers/{src}/merge", json={"into": str(dst), "reason": "dup"}, headers=auth)
    assert merged.status_code == 200
    merge_id = merged.json()["merge_id"]
    before = await state_of(sessions, ids)
    audited = await audit_count(sessions)
    third = (await seed_pair(sessions))[0].customer_id
    for path, body in (
        (f"/api/v1/customers/{src}/merge", {"into": str(third), "reason": "again"}),
        (f"/api/v1/customers/{third}/merge", {"into": str(src), "reason": "into a tombstone"}),
        (f"/api/v1/customers/{src}/merge", {"into": str(dst), "reason": "twice"}),
    ):
        response = await http.post(path, json=body, headers=auth)
        assert response.status_code == 409 and "already merged" in response.json()["message"], response.text
    # Past the window: refused, nothing moves back.
    async with transaction(sessions) as session:
        await session.execute(
            text("UPDATE customer_merges SET merged_at = now() - interval '200 hours' WHERE id = :m"), {"m": merge_id}
        )
    late = await http.post(f"/api/v1/merges/{merge_id}/unmerge", headers=auth)
    assert late.status_code == 409 and "unmerge window" in late.json()["message"]
    after = await state_of(sessions, ids)
    assert after["conversations"] == before["conversations"] and after["customers"] == before["customers"]
    assert await audit_count(sessions) == audited


async def test_cli_previews_merges_lists_and_unmerges_with_one_line_errors(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    source, target = await seed_pair(sessions)
    src, dst = str(source.customer_id), str(target.customer_id)

    preview = await asyncio.to_thread(cli, settings, ["merge-preview", src, dst])
    assert preview.exit_code == 0, preview.output
    assert "1 conversation," in preview.stdout and "verified" in preview.stdout
    asked = await asyncio.to_thread(cli, settings, ["merge", src, dst, "--reason", "dup"])
    assert asked.exit_code == 1 and "pass --yes" in asked.stderr
    merged = await asyncio.to_thread(
        cli, settings, ["merge", src, dst, "--reason", "dup", "--yes", "--json", "--agent", "Cli Person"]
    )
    assert merged.exit_code == 0, merged.output
    result = json.loads(merged.stdout)
    assert result["actor"] == "Cli Person" and len(result["conversation_ids"]) == 1

    again = await asyncio.to_thread(cli, settings, ["merge", src, dst, "--reason", "dup", "--yes"])
    assert again.exit_code == 3
    assert len(again.stderr.strip().splitlines()) == 1 and "already merged" in again.stderr
    itself = await asyncio.to_thread(cli, settings, ["merge-preview", dst, dst])
    assert itself.exit_code == 3 and "into itself" in itself.stderr
    unknown = await asyncio.to_thread(cli, settings, ["merge-preview", str(uuid.uuid4()), dst])
    assert unknown.exit_code == 1 and "no customer" in unknown.stderr
    garbage = await asyncio.to_thread(cli, settings, ["unmerge", "garbage"])
    assert garbage.exit_code == 1 and "not a valid merge id" in garbage.stderr

    listed = await asyncio.to_thread(cli, settings, ["merges", dst])
    assert listed.exit_code == 0 and result["merge_id"] in listed.stdout
    undone = await asyncio.to_thread(cli, settings, ["unmerge", result["merge_id"]])
    assert undone.exit_code == 0, undone.output
    assert "unmerged" in undone.stdout
    twice = await asyncio.to_thread(cli, settings, ["unmerge", result["merge_id"]])
    assert twice.exit_code == 3 and "already undone" in twice.stderr
    async with sessions() as session:
        owner = await rec.owner_of(session, "conversations", source.conversation_ids)
    assert owner == {source.customer_id}

    # The real entry point: `crm-fte customers ...` is mounted, and a refusal is one line on stderr.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.cli",
        "customers",
        "merge",
        src,
        src,
        "--reason",
        "x",
        "--yes",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "DATABASE_URL": settings.database_dsn, "TEMPORAL_ADDRESS": settings.temporal_address},
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 3, stderr
    assert stdout == b"" and stderr.decode().strip() == "crm-fte: a customer cannot be merged into itself"
