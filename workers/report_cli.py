"""`crm-fte report run --date YYYY-MM-DD`: run the daily report for one day now, and wait for it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from typing import Annotated

import typer

from workers.terminal import make_console, plain

report_app = typer.Typer(
    rich_markup_mode=None, help="The daily support report: run it for a day.", no_args_is_help=True
)
console = make_console()


def parse_day(value: str, *, today: date) -> date:
    """A day that has ended (UTC), written YYYY-MM-DD; ValueError says what is wrong."""
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"--date must be a day written YYYY-MM-DD, not {value.strip()[:40]!r}") from None
    if len(value.strip()) != 10:
        raise ValueError(f"--date must be a day written YYYY-MM-DD, not {value.strip()[:40]!r}")
    if day >= today:
        latest = date.fromordinal(today.toordinal() - 1).isoformat()
        raise ValueError(f"{day.isoformat()} has not ended yet (UTC): the latest day to report on is {latest}")
    return day


@report_app.command("run")
def report_run(
    day_text: Annotated[str, typer.Option("--date", help="The UTC day to report on, YYYY-MM-DD.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the stored report as JSON.")] = False,
) -> None:
    """Compute DATE's report (once: a day already reported is kept), send it to the sinks, print it."""
    from temporalio.client import WorkflowFailureError
    from temporalio.common import WorkflowIDReusePolicy
    from temporalio.exceptions import WorkflowAlreadyStartedError

    from activities.notifications import report_render
    from core.temporal import connect_temporal
    from crm.db import create_engine, create_sessionmaker
    from crm.report_document import ReportSummary
    from crm.repositories import daily_reports
    from workers.cli import fail, target_settings
    from workflows.report_contracts import DailyReportInput, DailyReportOutcome, daily_report_workflow_id
    from workflows.reports import DAILY_REPORT_WORKFLOW_TIMEOUT, DailyReportWorkflow

    try:
        day = parse_day(day_text, today=datetime.now(UTC).date())
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    settings = target_settings("report", ("database", "temporal"))

    async def main() -> tuple[DailyReportOutcome, ReportSummary | None]:
        try:
            client = await connect_temporal(settings, identity="crm-fte-cli:report")
        except Exception as exc:
            raise RuntimeError(f"cannot reach Temporal at {settings.temporal_address}") from exc
        workflow_id = daily_report_workflow_id(day)
        try:
            handle = await client.start_workflow(
                DailyReportWorkflow.run,
                DailyReportInput(day=day),
                id=workflow_id,
                task_queue=settings.temporal_task_queue,
                execution_timeout=DAILY_REPORT_WORKFLOW_TIMEOUT,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            # The same day is running already (another operator, a retry): wait for that run.
            handle = client.get_workflow_handle(workflow_id, result_type=DailyReportOutcome)
        outcome = await handle.result()
        engine = create_engine(settings)
        try:
            async with create_sessionmaker(engine)() as session:
                stored = await daily_reports.get_report(session, day=day)
        finally:
            await engine.dispose()
        return outcome, ReportSummary.model_validate(stored.figures) if stored else None

    try:
        outcome, report = asyncio.run(main())
    except WorkflowFailureError as exc:
        cause: BaseException | None = exc.cause
        while getattr(cause, "cause", None) is not None:
            cause = getattr(cause, "cause", None)
        raise fail(f"the report for {day.isoformat()} failed: {getattr(cause, 'message', None) or exc}") from None
    except RuntimeError as exc:
        raise fail(str(exc)) from None
    if as_json:
        body = {
            "outcome": outcome.model_dump(mode="json"),
            "report": report.model_dump(mode="json") if report else None,
        }
        console.print(json.dumps(body), soft_wrap=True)
        return
    state = "computed now" if outcome.created else "already stored (kept as it was)"
    console.print(plain(f"Report for {day.isoformat()}: {state}", "green"))
    if report is not None:
        for name, value in report_render.lines(report):
            console.print(plain(f"  {name}: {value}"))
    sent = ", ".join(outcome.delivered) or "none"
    console.print(plain(f"  Delivered to: {sent}"))
    if outcome.refused or outcome.gave_up:
        raise fail(f"not delivered to: {', '.join(outcome.refused + outcome.gave_up)} (see daily_report_deliveries)")
