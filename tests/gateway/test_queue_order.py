"""The escalation queue: most urgent first, then SLA due soonest, then oldest; filters, counts, bad filters.

Escalations are written straight into the session's PostgreSQL (no workflow: the queue is a read
of the CRM), each with a known priority, SLA due time, channel, reason and age; the gateway runs
in-process with its real lifespan. The database is shared with other tests, so every check looks
at this test's rows (or at an invariant that holds for every row), and the rows are resolved after.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner, Result

from core.settings import Settings, reset_settings_cache
from core.vocabulary import PRIORITIES
from crm.db import transaction
from gateway.agents import SCOPE_READ, create_api_key
from tests.crm import customer_records as rec
from workers.agents_cli import escalations_app

RANK = {p: i for i, p in enumerate(reversed(PRIORITIES))}  # urgent 0 … low 3


@pytest.fixture
async def reader(sessions: async_sessionmaker[AsyncSession]) -> dict[str, str]:
    async with transaction(sessions) as session:
        _, key = await create_api_key(session, name=f"Queue Reader {rec.tag()}", scopes=(SCOPE_READ,))
    return {"Authorization": f"Bearer {key}"}


@dataclass(frozen=True)
class Seed:
    name: str
    channel: str
    reason: str
    priority: str
    due_in: timedelta
    age: timedelta


SEEDS = (
    Seed("low-soon", "email", "pricing", "low", timedelta(minutes=5), timedelta(minutes=50)),
    Seed("urgent-late", "whatsapp", "security", "urgent", timedelta(hours=8), timedelta(minutes=1)),
    Seed("high-1h-old", "web_form", "refund", "high", timedelta(hours=1), timedelta(minutes=40)),
    Seed("high-30m", "email", "legal", "high", timedelta(minutes=30), timedelta(minutes=2)),
    Seed("high-1h-new", "whatsapp", "refund", "high", timedelta(hours=1), timedelta(minutes=10)),
    Seed("medium-breached", "web_form", "human_request", "medium", -timedelta(hours=1), timedelta(hours=3)),
)
EXPECTED_ORDER = ["urgent-late", "high-30m", "high-1h-old", "high-1h-new", "medium-breached", "low-soon"]


@pytest.fixture
async def seeded(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[dict[str, str]]:
    """Six open escalations; name → ticket number. Resolved afterwards so they leave the shared queue."""
    now = datetime.now(UTC)
    tickets: dict[str, str] = {}
    conversation_ids: list[uuid.UUID] = []
    async with transaction(sessions) as session:
        for seed in SEEDS:
            who = await rec.customer(session, name=f"Queue {seed.name} {rec.tag()}")
            conv = await rec.conversation(session, who, channel=seed.channel)
            await session.execute(
                text(
                    "INSERT INTO escalations (conversation_id, ticket_id, reason, priority, sla_due_at, created_at) "
                    "VALUES (:c, :t, :r, :p, :due, :at)"
                ),
                {
                    "c": conv,
                    "t": who.ticket_ids[0],
                    "r": seed.reason,
                    "p": seed.priority,
                    "due": now + seed.due_in,
                    "at": now - seed.age,
                },
            )
            tickets[seed.name] = await session.scalar(
                text("SELECT ticket_number FROM tickets WHERE id = :t"), {"t": who.ticket_ids[0]}
            )
            conversation_ids.append(conv)
    try:
        yield tickets
    finally:
        async with transaction(sessions) as session:
            await session.execute(
                text(
                    "UPDATE escalations SET status = 'resolved', resolved_by = 'test', resolution_action = 'close', "
                    "resolved_at = now() WHERE conversation_id = ANY(:ids) AND status = 'open'"
                ),
                {"ids": conversation_ids},
            )


def parsed(item: dict[str, object]) -> tuple[int, datetime, datetime]:
    return (
        RANK[str(item["priority"])],
        datetime.fromisoformat(str(item["sla_due_at"])),
        datetime.fromisoformat(str(item["created_at"])),
    )


async def test_most_urgent_first_then_sla_due_then_age(
    http: httpx.AsyncClient, reader: dict[str, str], seeded: dict[str, str]
) -> None:
    response = await http.get("/api/v1/escalations", params={"limit": 500}, headers=reader)
    assert response.status_code == 200, response.text
    body = response.json()
    items = body["escalations"]
    keys = [parsed(i) for i in items]
    assert keys == sorted(keys), "every open escalation: priority, then SLA due, then age"
    by_ticket = {t: n for n, t in seeded.items()}
    mine = [by_ticket[i["ticket_id"]] for i in items if i["ticket_id"] in by_ticket]
    assert mine == EXPECTED_ORDER
    # The fields the console and other clients read are all still there.
    first = next(i for i in items if i["ticket_id"] == seeded["urgent-late"])
    assert set(first) >= {
        "ticket_id",
        "escalation_id",
        "conversation_id",
        "workflow_id",
        "reason",
        "priority",
        "sla_due_at",
        "overdue",
        "notified_count",
        "channel",
        "subject",
        "customer",
        "created_at",
        "last_customer_message",
        "last_customer_message_at",
    }
    assert first["channel"] == "whatsapp" and first["reason"] == "security" and first["overdue"] is False
    breached = next(i for i in items if i["ticket_id"] == seeded["medium-breached"])
    assert breached["overdue"] is True
    # Counts: every priority (most urgent first), over everything the (absent) filters match.
    counts = body["counts"]
    assert list(counts["by_priority"]) == ["urgent", "high", "medium", "low"]
    assert counts["total"] == sum(counts["by_priority"].values()) == body["count"] == len(items)
    assert counts["breached"] == sum(1 for i in items if i["overdue"]) >= 1
    assert counts["by_priority"]["high"] >= 3 and counts["by_priority"]["urgent"] >= 1


async def test_filters_narrow_the_queue_and_its_counts(
    http: httpx.AsyncClient, reader: dict[str, str], seeded: dict[str, str]
) -> None:
    async def queue(**params: object) -> dict[str, object]:
        response = await http.get("/api/v1/escalations", params={"limit": 500, **params}, headers=reader)
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body

    mine = set(seeded.values())

    def ours(body: dict[str, object]) -> list[str]:
        by_ticket = {t: n for n, t in seeded.items()}
        return [by_ticket[i["ticket_id"]] for i in body["escalations"] if i["ticket_id"] in mine]  # type: ignore[attr-defined]

    breached = await queue(breached="true")
    assert all(i["overdue"] for i in breached["escalations"])  # type: ignore[attr-defined]
    assert ours(breached) == ["medium-breached"]
    within = await queue(breached="false")
    assert not any(i["overdue"] for i in within["escalations"])  # type: ignore[attr-defined]
    assert "medium-breached" not in ours(within)

    whatsapp = await queue(channel="whatsapp")
    assert {i["channel"] for i in whatsapp["escalations"]} == {"whatsapp"}  # type: ignore[attr-defined]
    assert ours(whatsapp) == ["urgent-late", "high-1h-new"]
    two_channels = await queue(channel=["email", "web_form"])
    assert ours(two_channels) == ["high-30m", "high-1h-old", "medium-breached", "low-soon"]

    refund = await queue(reason="refund")
    assert ours(refund) == ["high-1h-old", "high-1h-new"]
    high = await queue(priority="high")
    assert ours(high) == ["high-30m", "high-1h-old", "high-1h-new"]
    assert {i["priority"] for i in high["escalations"]} == {"high"}  # type: ignore[attr-defined]
    combined = await queue(priority=["high", "urgent"], channel="whatsapp", reason=["refund", "security"])
    assert ours(combined) == ["urgent-late", "high-1h-new"]

    # A ticket number, whole or in part, any case.
    number = seeded["high-30m"]
    for search in (number, number.lower(), number.removeprefix("TKT-")):
        found = await queue(ticket=search)
        assert [i["ticket_id"] for i in found["escalations"]] == [number], search  # type: ignore[attr-defined]
        assert found["counts"] == {
            "total": 1,
            "breached": 0,
            "by_priority": {"urgent": 0, "high": 1, "medium": 0, "low": 0},
        }
    one_breached = await queue(ticket=seeded["medium-breached"], breached="true")
    assert one_breached["counts"]["breached"] == 1  # type: ignore[index]
    nothing = await queue(ticket="TKT-0000000000000")
    assert nothing["escalations"] == [] and nothing["count"] == 0
    assert nothing["counts"] == {"total": 0, "breached": 0, "by_priority": {p: 0 for p in RANK}}

    # The counts are not cut by the limit; the list is.
    limited = await http.get("/api/v1/escalations", params={"limit": 1}, headers=reader)
    body = limited.json()
    assert body["count"] == len(body["escalations"]) == 1
    assert body["counts"]["total"] >= len(seeded)


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"channel": "fax"}, "channel", "email"),
        ({"channel": ["email", "pigeon"]}, "channel", "whatsapp"),
        ({"reason": "boredom"}, "reason", "pricing"),
        ({"priority": "critical"}, "priority", "urgent"),
        ({"breached": "perhaps"}, "breached", "boolean"),
        ({"ticket": "TKT-%"}, "ticket", "pattern"),
        ({"ticket": "x" * 33}, "ticket", "32"),
        ({"limit": "0"}, "limit", "greater than or equal to 1"),
    ],
)
async def test_a_bad_filter_is_422_naming_the_field_and_why(
    http: httpx.AsyncClient, reader: dict[str, str], params: dict[str, object], field: str, words: str
) -> None:
    response = await http.get("/api/v1/escalations", params=params, headers=reader)  # type: ignore[arg-type]
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error" and field in body["message"]
    assert any(field in d["field"] and words in d["message"] for d in body["detail"]), body


async def test_a_filter_needs_the_read_scope(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/v1/escalations", params={"breached": "true"})).status_code == 401


def _cli(settings: Settings, args: list[str]) -> Result:
    env = {"DATABASE_URL": settings.database_dsn, "LOG_LEVEL": "WARNING"}
    reset_settings_cache()
    try:
        return CliRunner().invoke(escalations_app, args, env=env)
    finally:
        reset_settings_cache()


async def test_cli_lists_in_the_same_order_with_the_same_filters(settings: Settings, seeded: dict[str, str]) -> None:
    listed = await asyncio.to_thread(_cli, settings, ["list", "--json", "--limit", "500"])
    assert listed.exit_code == 0, listed.output
    by_ticket = {t: n for n, t in seeded.items()}
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [by_ticket[r["ticket_id"]] for r in rows if r["ticket_id"] in by_ticket] == EXPECTED_ORDER
    assert [parsed(r) for r in rows] == sorted(parsed(r) for r in rows)

    filtered = await asyncio.to_thread(
        _cli, settings, ["list", "--json", "--limit", "500", "--priority", "high", "--channel", "whatsapp"]
    )
    assert filtered.exit_code == 0, filtered.output
    rows = [json.loads(line) for line in filtered.stdout.splitlines()]
    assert {(r["priority"], r["channel"]) for r in rows} == {("high", "whatsapp")}
    assert [by_ticket[r["ticket_id"]] for r in rows if r["ticket_id"] in by_ticket] == ["high-1h-new"]
    breached = await asyncio.to_thread(_cli, settings, ["list", "--json", "--limit", "500", "--breached"])
    rows = [json.loads(line) for line in breached.stdout.splitlines()]
    assert rows and all(r["overdue"] for r in rows)
    by_reason = await asyncio.to_thread(_cli, settings, ["list", "--json", "--limit", "500", "--reason", "refund"])
    rows = [json.loads(line) for line in by_reason.stdout.splitlines()]
    assert {r["reason"] for r in rows} == {"refund"}

    for option, word in (("--channel", "fax"), ("--reason", "boredom"), ("--priority", "critical")):
        refused = await asyncio.to_thread(_cli, settings, ["list", option, word])
        assert refused.exit_code == 2, refused.output
        assert f"unknown {word}" in refused.output and option in refused.output
