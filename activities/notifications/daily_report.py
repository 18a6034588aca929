"""The daily report's activities: compute and keep one day's report, send it to one sink.

`compute_daily_report` is idempotent per day (the row is inserted once; a second run keeps the
first report). `send_daily_report` is idempotent per (day, sink), as `send_notification` is: the
attempt is recorded first, a delivered row returns without sending, a refused one refuses again.
The senders are the notification sinks' own (`activities.notifications.sinks`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, time, timedelta

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import ActivityDeps
from activities.notifications import report_render as render
from activities.notifications.activities import configured_sinks
from activities.notifications.sinks import SinkRefused, post_slack, post_webhook, send_email
from core.logging import get_logger
from core.vocabulary import NotificationSink
from crm.db import transaction
from crm.report_document import ReportSummary
from crm.repositories import daily_reports
from crm.repositories.reports import report_figures
from workflows.notification_contracts import NotificationErrorType
from workflows.report_contracts import (
    DailyReportDelivered,
    DailyReportDelivery,
    DailyReportErrorType,
    DailyReportRequest,
    DailyReportStored,
)
from workflows.reports import COMPUTE_DAILY_REPORT_ACTIVITY, SEND_DAILY_REPORT_ACTIVITY

log = get_logger(__name__)


def day_window(day: date) -> tuple[datetime, datetime]:
    """[00:00, 24:00) of a UTC day."""
    since = datetime.combine(day, time(0), tzinfo=UTC)
    return since, since + timedelta(days=1)


def _refused(message: str) -> ApplicationError:
    return ApplicationError(message, type=NotificationErrorType.REFUSED, non_retryable=True)


class DailyReportActivities:
    """Compute, keep and send the daily support report."""

    def __init__(self, deps: ActivityDeps) -> None:
        self.deps = deps

    @activity.defn(name=COMPUTE_DAILY_REPORT_ACTIVITY)
    async def compute_daily_report(self, inp: DailyReportRequest) -> DailyReportStored:
        """Compute and keep a day's report (once per day), and say which sinks are configured."""
        s = self.deps.settings
        since, until = day_window(inp.day)
        now = datetime.now(UTC)
        if until > now:
            raise ApplicationError(
                f"{inp.day.isoformat()} has not ended yet (UTC): its report would be incomplete",
                type=DailyReportErrorType.DAY_NOT_ENDED,
                non_retryable=True,
            )
        sinks = configured_sinks(s)
        async with transaction(self.deps.sessions) as session:
            if await daily_reports.get_report(session, day=inp.day) is not None:
                log.info("daily_report.already_stored", day=inp.day.isoformat())
                return DailyReportStored(day=inp.day, created=False, sinks=sinks)
            figures = await report_figures(
                session,
                since=since,
                until=until,
                now=now,
                prompt_cost_per_1k_usd=s.llm_prompt_cost_per_1k_usd,
                completion_cost_per_1k_usd=s.llm_completion_cost_per_1k_usd,
            )
            document = ReportSummary.of(
                figures,
                prompt_cost_per_1k_usd=s.llm_prompt_cost_per_1k_usd,
                completion_cost_per_1k_usd=s.llm_completion_cost_per_1k_usd,
            )
            # A concurrent run of the same day may have stored it meanwhile: the first one stays.
            created = await daily_reports.store_report(
                session, day=inp.day, since=since, until=until, figures=document.model_dump(mode="json")
            )
        log.info("daily_report.stored", day=inp.day.isoformat(), created=created, sinks=sinks)
        return DailyReportStored(day=inp.day, created=created, sinks=sinks)

    @activity.defn(name=SEND_DAILY_REPORT_ACTIVITY)
    async def send_daily_report(self, inp: DailyReportDelivery) -> DailyReportDelivered:
        """Send a stored day's report to one sink, at most once (a delivered one is never sent again)."""
        day, sink = inp.day, inp.sink
        async with transaction(self.deps.sessions) as session:
            stored = await daily_reports.get_report(session, day=day)
            if stored is None:
                raise _refused(f"no report is stored for {day.isoformat()}")
            row = await daily_reports.begin_delivery(session, day=day, sink=sink, at=datetime.now(UTC))
        if row.status == "delivered":
            log.info("daily_report.already_delivered", sink=sink, day=day.isoformat())
            return DailyReportDelivered(sink=sink, attempts=row.attempts, already_delivered=True)
        if row.status == "refused":
            raise _refused(row.last_error or f"{sink} refused this report")
        report = ReportSummary.model_validate(stored.figures)
        try:
            await self._deliver(day, report, sink)
        except SinkRefused as exc:
            await self._record_failure(day, sink, str(exc), final=True)
            log.warning("daily_report.refused", sink=sink, day=day.isoformat(), error=str(exc))
            raise _refused(str(exc)) from None
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            await self._record_failure(day, sink, error, final=False)
            log.warning(
                "daily_report.attempt_failed", sink=sink, day=day.isoformat(), attempt=row.attempts, error=error
            )
            raise
        async with transaction(self.deps.sessions) as session:
            await daily_reports.record_delivered(session, day=day, sink=sink, at=datetime.now(UTC))
        log.info("daily_report.delivered", sink=sink, day=day.isoformat(), attempts=row.attempts)
        return DailyReportDelivered(sink=sink, attempts=row.attempts)

    async def _record_failure(self, day: date, sink: NotificationSink, error: str, *, final: bool) -> None:
        async with transaction(self.deps.sessions) as session:
            await daily_reports.record_failure(session, day=day, sink=sink, error=error, final=final)

    async def _deliver(self, day: date, report: ReportSummary, sink: NotificationSink) -> None:
        s = self.deps.settings
        link = render.dashboard_url(s)
        if sink == "email":
            if not s.notify_email_to:
                raise SinkRefused("NOTIFY_EMAIL_TO is not set")
            # A stable Message-ID per day: a retried attempt finds its own earlier send.
            message_id = "report-" + hashlib.sha256(render.delivery_id(day).encode()).hexdigest()[:32]
            await send_email(
                s,
                message_id=message_id,
                to=s.notify_email_to,
                subject=render.headline(day),
                text=render.email_text(day, report, link),
            )
            return
        async with httpx.AsyncClient(timeout=s.notify_http_timeout_seconds, follow_redirects=False) as client:
            if sink == "slack":
                if s.notify_slack_webhook_url is None:
                    raise SinkRefused("NOTIFY_SLACK_WEBHOOK_URL is not set")
                await post_slack(
                    client, s.notify_slack_webhook_url.get_secret_value(), render.slack_payload(day, report, link)
                )
                return
            if s.notify_webhook_url is None:
                raise SinkRefused("NOTIFY_WEBHOOK_URL is not set")
            if s.notify_webhook_secret is None or not s.notify_webhook_secret.get_secret_value():
                # Never send an unsigned webhook: its receiver could not tell it from a forgery.
                raise SinkRefused("NOTIFY_WEBHOOK_SECRET is not set: an unsigned webhook is never sent")
            await post_webhook(
                client,
                str(s.notify_webhook_url),
                secret=s.notify_webhook_secret.get_secret_value(),
                delivery_id=render.delivery_id(day),
                body=render.webhook_body(day, report, link),
            )
