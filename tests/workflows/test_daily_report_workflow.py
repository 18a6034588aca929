"""DailyReportWorkflow on the real Temporal server: computed once per day, kept, sent to a webhook
receiver that verifies the HMAC signature as docs/notifications.md tells receivers to; the schedule;
`crm-fte report run` as an operator runs it.

The worker replays every task (max_cached_workflows=0). The day is in 2002, so the rows it commits
fall outside every other test's window.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.worker import Worker

from activities.deps import ActivityDeps
from core.settings import Settings
from crm.db import transaction
from crm.repositories import daily_reports
from tests.crm.report_rows import seed_known_day
from tests.fakes.webhook_sink import WebhookSink
from tests.workflows.helpers import eventually
from workers.registry import activity_callables, workflow_classes, workflow_runner
from workers.report_cli import parse_day
from workers.schedules import DAILY_REPORT_SCHEDULE_ID, ensure_daily_report_schedule
from workflows.report_contracts import (
    DailyReportErrorType,
    DailyReportInput,
    DailyReportOutcome,
    daily_report_workflow_id,
    report_day_for,
)
from workflows.reports import DailyReportWorkflow

SECRET = "daily-report-test-secret"
DAY = date(2002, 5, 6)


class VerifyingReceiver(WebhookSink):
    """A webhook receiver that verifies before parsing (docs/notifications.md): 401 when the signature
    or the timestamp is wrong, else 200; `verified` lists the bodies it accepted."""

    def __init__(self) -> None:
        super().__init__()
        self.verified: list[dict[str, object]] = []
        self.rejected = 0

    def build_app(self) -> ASGIApp:
        async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
            request = Request(scope, receive)
            body = await request.body()
            stamp = request.headers.get("X-CRM-FTE-Timestamp", "")
            fresh = stamp.isdigit() and abs(time.time() - int(stamp)) <= 300
            expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            given = request.headers.get("X-CRM-FTE-Signature", "")
            if fresh and hmac.compare_digest(f"v1={expected}", given):
                self.verified.append({"delivery": request.headers.get("X-CRM-FTE-Delivery"), **json.loads(body)})
                response = Response("stored", status_code=200)
            else:
                self.rejected += 1
                response = Response("bad signature", status_code=401)
            await response(scope, receive, send)

        return app


@pytest.fixture
def receiver() -> Iterator[VerifyingReceiver]:
    with VerifyingReceiver() as sink:
        yield sink


@pytest.fixture
async def report_worker(client: Client, settings: Settings, receiver: VerifyingReceiver) -> AsyncIterator[Settings]:
    own = settings.model_copy(
        update={
            "temporal_task_queue": f"report-{uuid.uuid4().hex[:8]}",
            "notify_webhook_url": receiver.url("/hooks/reports"),
            "notify_webhook_secret": SecretStr(SECRET),
            "notify_http_timeout_seconds": 5.0,
            "public_base_url": "https://support.example.test",
        }
    )
    deps = ActivityDeps.create(own)
    worker = Worker(
        client,
        task_queue=own.temporal_task_queue,
        workflows=workflow_classes(),
        workflow_runner=workflow_runner(),
        activities=activity_callables(deps),
        max_cached_workflows=0,
    )
    try:
        async with worker:
            yield own
    finally:
        await deps.close()


async def _run(client: Client, own: Settings, day: date) -> DailyReportOutcome:
    return await client.execute_workflow(
        DailyReportWorkflow.run,
        DailyReportInput(day=day),
        id=daily_report_workflow_id(day),
        task_queue=own.temporal_task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )


async def test_a_day_is_reported_once_signed_and_kept_once_when_run_twice(
    client: Client,
    report_worker: Settings,
    receiver: VerifyingReceiver,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await seed_known_day(session, datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC))

    first = await _run(client, report_worker, DAY)
    assert first == DailyReportOutcome(day=DAY, created=True, delivered=["webhook"])
    assert receiver.rejected == 0 and len(receiver.verified) == 1
    posted = receiver.verified[0]
    assert posted["delivery"] == posted["id"] == f"daily_report:{DAY.isoformat()}"
    assert (
        posted["type"] == "daily_report" and posted["dashboard_url"] == "https://support.example.test/agent#dashboard"
    )
    report = posted["report"]
    assert isinstance(report, dict)
    # The figures tests/crm/test_report_figures.py computes by hand for the same rows.
    assert report["conversations"] == 5 and report["escalations"] == 4
    assert report["outcomes"]["resolution_rate"] == 0.75 and report["outcomes"]["automation_rate"] == 0.5
    assert report["sla"] == {"due": 3, "breached": 1}
    assert report["first_response"] == {"count": 4, "p50_seconds": 60.0, "p95_seconds": 523.5}
    assert (report["csat_average"], report["csat_ratings"]) == (3.5, 2)
    assert report["unanswered_questions"][0]["text"] == "How do I export invoices to PDF?"
    assert report["unanswered_questions"][0]["count"] == 2

    # Run again (an operator, a retry): the stored report stays as it was, nothing is sent again.
    again = await _run(client, report_worker, DAY)
    assert again == DailyReportOutcome(day=DAY, created=False, delivered=["webhook"])
    assert len(receiver.verified) == 1
    async with sessions() as session:
        rows = await session.scalar(text("SELECT count(*) FROM daily_reports WHERE report_date = :d"), {"d": DAY})
        stored = await daily_reports.get_report(session, day=DAY)
        deliveries = await daily_reports.deliveries_of(session, day=DAY)
    assert rows == 1 and stored is not None and stored.figures == report
    assert [(d.sink, d.status, d.attempts) for d in deliveries] == [("webhook", "delivered", 1)]


async def test_a_day_that_has_not_ended_fails_at_once(client: Client, report_worker: Settings) -> None:
    today = datetime.now(UTC).date()
    with pytest.raises(WorkflowFailureError) as failed:
        await _run(client, report_worker, today)
    cause = failed.value.cause
    while getattr(cause, "cause", None) is not None:
        cause = cause.cause  # type: ignore[union-attr]
    assert getattr(cause, "type", None) == DailyReportErrorType.DAY_NOT_ENDED


async def test_the_schedule_runs_daily_at_the_set_time_for_the_day_before(
    client: Client, report_worker: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    own = report_worker.model_copy(update={"daily_report_time_utc": "05:30"})
    assert await ensure_daily_report_schedule(client, own) == DAILY_REPORT_SCHEDULE_ID
    handle = client.get_schedule_handle(DAILY_REPORT_SCHEDULE_ID)
    try:
        described = await handle.describe()
        calendar = described.schedule.spec.calendars[0]
        assert [r.start for r in calendar.hour] == [5] and [r.start for r in calendar.minute] == [30]
        assert described.schedule.spec.time_zone_name == "UTC"
        # Idempotent: a second worker start updates it in place.
        assert await ensure_daily_report_schedule(client, own) == DAILY_REPORT_SCHEDULE_ID
        # A run now reports on yesterday (UTC).
        await handle.trigger()
        yesterday = datetime.now(UTC).date() - timedelta(days=1)

        async def stored() -> bool:
            async with sessions() as session:
                return await daily_reports.get_report(session, day=yesterday) is not None

        assert await eventually(stored, timeout=30)
    finally:
        await handle.delete()


def test_the_scheduled_day_is_the_utc_day_before() -> None:
    assert report_day_for(datetime(2026, 12, 2, 6, 0, tzinfo=UTC)) == date(2026, 12, 1)
    assert report_day_for(datetime(2026, 12, 2, 0, 30, tzinfo=UTC)) == date(2026, 12, 1)
    # 23:30 on the 1st at UTC-5 is 04:30 UTC on the 2nd: the UTC day before is the 1st.
    assert report_day_for(datetime(2026, 12, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))) == date(2026, 12, 1)


def test_the_date_option_is_checked() -> None:
    today = date(2026, 12, 2)
    assert parse_day("2026-12-01", today=today) == date(2026, 12, 1)
    for bad in ("2026-13-01", "yesterday", "20261201", "2026-12-02", "2027-01-01"):
        with pytest.raises(ValueError):
            parse_day(bad, today=today)


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.cli",
        "report",
        "run",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "LOG_LEVEL": "WARNING", **env},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode or 0, out.decode(), err.decode()


async def test_report_run_triggers_a_day_and_refuses_a_bad_date(
    report_worker: Settings, receiver: VerifyingReceiver
) -> None:
    own = report_worker
    env = {
        "DATABASE_URL": own.database_dsn,
        "TEMPORAL_ADDRESS": own.temporal_address,
        "TEMPORAL_TASK_QUEUE": own.temporal_task_queue,
    }
    day = date(2002, 7, 8)
    code, out, err = await _cli("--date", day.isoformat(), env=env)
    assert code == 0, err
    assert f"Report for {day.isoformat()}: computed now" in out and "Delivered to: webhook" in out
    assert "CSAT: no ratings" in out
    code, out, err = await _cli("--date", day.isoformat(), env=env)
    assert code == 0 and "already stored" in out
    assert len(receiver.verified) == 1

    code, out, err = await _cli("--date", "2002-02-30", env=env)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "YYYY-MM-DD" in err and "Traceback" not in err
