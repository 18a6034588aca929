"""GDPR export and erasure through the agent API and `crm-fte customers`, on the real stack.

Each customer has a real ConversationWorkflow (its history holds the message text, its search
attributes the phone number) and CRM rows written directly. After an erasure no message text,
identifier or workflow execution of that customer is left, another customer's data is untouched,
and the audit row says that an erasure happened and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from typer.testing import CliRunner, Result

from core.settings import Settings, reset_settings_cache
from crm import merging
from crm.db import transaction
from gateway.agents import SCOPE_READ, SCOPE_WRITE, create_api_key
from tests.crm import customer_records as rec
from tests.workflows.helpers import eventually, inbound, messages_of
from workers.bridge import signal_with_start
from workers.customers_cli import customers_app
from workflows.contracts import ConversationState


async def new_key(
    sessions: async_sessionmaker[AsyncSession], scopes: tuple[str, ...] = (SCOPE_READ, SCOPE_WRITE)
) -> tuple[str, dict[str, str]]:
    name = f"Privacy {uuid.uuid4().hex[:8]}"
    async with transaction(sessions) as session:
        _, key = await create_api_key(session, name=name, scopes=scopes)
    return name, {"Authorization": f"Bearer {key}"}


class Person:
    """A customer who wrote on WhatsApp (a real workflow) and has older conversations in the CRM."""

    def __init__(self, customer_id: uuid.UUID, phone: str, workflow_id: str, texts: list[str]) -> None:
        self.customer_id = customer_id
        self.phone = phone
        self.workflow_id = workflow_id
        self.texts = texts


async def person(client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> Person:
    said = f"How do I export my projects? ref {rec.tag()}"
    message = inbound("whatsapp", said, name=f"Person {rec.tag()}")
    workflow_id = await signal_with_start(client, settings, message)

    async def answered() -> bool:
        return any(r["direction"] == "outbound" for r in await messages_of(sessions, workflow_id))

    await eventually(answered, timeout=60)
    state = await client.get_workflow_handle(workflow_id).query("state", result_type=ConversationState)
    assert state.customer_id is not None
    seeded = rec.Seeded(customer_id=uuid.UUID(state.customer_id))
    async with transaction(sessions) as session:
        await session.execute(
            text("UPDATE customers SET company = :c WHERE id = :id"), {"c": f"Co {rec.tag()}", "id": seeded.customer_id}
        )
        await rec.identifier(session, seeded, kind="email", value=f"p.{rec.tag()}@example.com", verified=False)
        await rec.conversation(session, seeded, channel="email", status="closed", escalate=True)
    assert message.sender.phone is not None
    return Person(seeded.customer_id, message.sender.phone, workflow_id, [said, *seeded.texts])


async def texts_left(sessions: async_sessionmaker[AsyncSession], texts: list[str]) -> list[str]:
    async with sessions() as session:
        found = []
        for t in texts:
            hit = await session.scalar(
                text("SELECT count(*) FROM messages WHERE content LIKE :p OR attributes::text LIKE :p"),
                {"p": f"%{t}%"},
            )
            steps = await session.scalar(
                text("SELECT count(*) FROM agent_steps WHERE payload::text LIKE :p"), {"p": f"%{t}%"}
            )
            if hit or steps:
                found.append(t)
        return found


async def workflow_gone(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        return exc.status == RPCStatusCode.NOT_FOUND
    return False


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


async def test_export_then_erase_leaves_nothing_of_the_customer_and_all_of_another(
    worker,  # type: ignore[no-untyped-def]
    http: httpx.AsyncClient,
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    name, auth = await new_key(sessions)
    _, reader = await new_key(sessions, (SCOPE_READ,))
    alice = await person(client, settings, sessions)
    bob = await person(client, settings, sessions)
    # A record merged into Alice earlier is the same person: exported and erased with her.
    async with transaction(sessions) as session:
        old = await rec.customer(session, name=f"Old Alice {rec.tag()}", email=f"old.{rec.tag()}@example.com")
        await rec.conversation(session, old, status="closed")
        await merging.merge_customers(
            session, source_id=str(old.customer_id), target_id=str(alice.customer_id), actor="x", reason="dup"
        )
    alice.texts += old.texts

    # ---- export
    exported = await http.get(f"/api/v1/customers/{alice.customer_id}/export", headers=auth)
    assert exported.status_code == 200, exported.text
    data = exported.json()
    dump = json.dumps(data)
    assert data["customer_id"] == str(alice.customer_id)
    assert {c["id"] for c in data["customers"]} == {str(alice.customer_id), str(old.customer_id)}
    assert all(t in dump for t in alice.texts)
    assert {(i["identifier_type"], i["verified"]) for i in data["identifiers"]} >= {("phone", True), ("email", False)}
    assert len(data["conversations"]) == 3 and len(data["tickets"]) >= 2
    assert data["escalations"] and data["agent_steps"] and data["merges"]
    for secret in (*bob.texts, bob.phone, str(bob.customer_id), bob.workflow_id):
        assert secret not in dump
    assert (await http.get(f"/api/v1/customers/{alice.customer_id}/export", headers=reader)).status_code == 403
    assert (await http.get(f"/api/v1/customers/{uuid.uuid4()}/export", headers=auth)).status_code == 404
    assert (await http.get("/api/v1/customers/nope/export", headers=auth)).status_code == 422
    merged_away = await http.get(f"/api/v1/customers/{old.customer_id}/export", headers=auth)
    assert merged_away.status_code == 409 and "merged into" in merged_away.json()["message"]

    # ---- refusals change nothing
    wrong = await http.post(
        f"/api/v1/customers/{alice.customer_id}/erase", json={"confirm": str(bob.customer_id)}, headers=auth
    )
    assert wrong.status_code == 422 and "confirm" in wrong.json()["message"]
    assert (await http.post(f"/api/v1/customers/{alice.customer_id}/erase", json={}, headers=auth)).status_code == 422
    assert (
        await http.post(f"/api/v1/customers/{uuid.uuid4()}/erase", json={"confirm": "x"}, headers=auth)
    ).status_code == 404
    forbidden = await http.post(
        f"/api/v1/customers/{alice.customer_id}/erase", json={"confirm": str(alice.customer_id)}, headers=reader
    )
    assert forbidden.status_code == 403
    assert await texts_left(sessions, alice.texts) == alice.texts
    assert not await workflow_gone(client, alice.workflow_id)

    # ---- erase
    erased = await http.post(
        f"/api/v1/customers/{alice.customer_id}/erase", json={"confirm": str(alice.customer_id)}, headers=auth
    )
    assert erased.status_code == 200, erased.text
    assert erased.json()["customers_erased"] == 2 and erased.json()["workflows_deleted"] >= 1

    assert await texts_left(sessions, alice.texts) == []
    async with sessions() as session:
        ids = [alice.customer_id, old.customer_id]
        customers = (
            await session.execute(
                text("SELECT name, email, phone, company, erased_at FROM customers WHERE id = ANY(:ids)"), {"ids": ids}
            )
        ).all()
        assert all(c.name is c.email is c.phone is c.company is None and c.erased_at for c in customers)
        assert (
            await session.scalar(
                text("SELECT count(*) FROM customer_identifiers WHERE customer_id = ANY(:ids)"), {"ids": ids}
            )
            == 0
        )
        assert (
            await session.scalar(
                text("SELECT count(*) FROM customer_identifiers WHERE identifier_value = :p"), {"p": alice.phone}
            )
            == 0
        )
        leftovers = await session.scalar(
            text(
                "SELECT count(*) FROM conversations WHERE workflow_id = :w OR conversation_key = :p "
                "OR (customer_id = ANY(:ids) AND (subject IS NOT NULL OR status <> 'closed'))"
            ),
            {"w": alice.workflow_id, "p": alice.phone, "ids": ids},
        )
        assert leftovers == 0
        tickets = (
            await session.execute(
                text("SELECT subject, contact_email FROM tickets WHERE customer_id = ANY(:ids)"), {"ids": ids}
            )
        ).all()
        assert tickets and all(t.subject is None and t.contact_email is None for t in tickets)
        audit = (
            await session.execute(
                text(
                    "SELECT agent_name, api_key_id, conversation_id, ticket_number, detail, to_jsonb(h)::text AS whole "
                    "FROM human_actions h WHERE action = 'customer.erased' AND detail->>'customer_id' = :c"
                ),
                {"c": str(alice.customer_id)},
            )
        ).one()
        assert audit.agent_name == name and audit.api_key_id is not None
        assert audit.detail == {"customer_id": str(alice.customer_id)}
        assert audit.conversation_id is None and audit.ticket_number is None
        assert alice.phone not in audit.whole and not any(t in audit.whole for t in alice.texts)
        assert (
            await session.scalar(
                text(
                    "SELECT count(*) FROM human_actions WHERE action = 'customer.exported' AND detail->>'customer_id' = :c"
                ),
                {"c": str(alice.customer_id)},
            )
            == 1
        )

    # Temporal: no execution of her conversation, none findable by her phone number.
    await eventually(lambda: workflow_gone(client, alice.workflow_id), timeout=60)

    async def none_by_phone() -> bool:
        return not [w async for w in client.list_workflows(f'CustomerPhone = "{alice.phone}"')]

    await eventually(none_by_phone)

    # Bob is untouched.
    assert await texts_left(sessions, bob.texts) == bob.texts
    assert not await workflow_gone(client, bob.workflow_id)
    assert [w async for w in client.list_workflows(f'CustomerPhone = "{bob.phone}"')]

    again = await http.post(
        f"/api/v1/customers/{alice.customer_id}/erase", json={"confirm": str(alice.customer_id)}, headers=auth
    )
    assert again.status_code == 409 and "already erased" in again.json()["message"]
    assert (await http.get(f"/api/v1/customers/{alice.customer_id}/export", headers=auth)).status_code == 409

    # ---- the CLI: export to a file, erase only with --yes, one-line errors
    target = tmp_path / f"customer-{bob.customer_id}.json"
    exported_cli = await asyncio.to_thread(cli, settings, ["export", str(bob.customer_id), "--out", str(target)])
    assert exported_cli.exit_code == 0, exported_cli.output
    assert json.loads(target.read_text())["customer_id"] == str(bob.customer_id)
    no_yes = await asyncio.to_thread(cli, settings, ["erase", str(bob.customer_id)])
    assert no_yes.exit_code == 1 and "--yes" in no_yes.stderr
    assert await texts_left(sessions, bob.texts) == bob.texts
    unknown = await asyncio.to_thread(cli, settings, ["export", str(uuid.uuid4())])
    assert unknown.exit_code == 1 and "no customer" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
    done = await asyncio.to_thread(cli, settings, ["erase", str(bob.customer_id), "--yes", "--agent", "Dpo"])
    assert done.exit_code == 0, done.output
    assert "erased customer" in done.stdout
    assert await texts_left(sessions, bob.texts) == []
    await eventually(lambda: workflow_gone(client, bob.workflow_id), timeout=60)
    twice = await asyncio.to_thread(cli, settings, ["erase", str(bob.customer_id), "--yes"])
    assert twice.exit_code == 3 and "already erased" in twice.stderr
