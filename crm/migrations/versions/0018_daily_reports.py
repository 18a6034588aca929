"""Daily reports: one row per day (the report id is the date), and its delivery to each sink.

`DailyReportWorkflow` computes a day's figures once and stores them here (insert-on-conflict-do-
nothing: running the day again keeps the first report), then sends it to each configured sink; a
`daily_report_deliveries` row per (day, sink) records the attempts so a delivered report is never
sent again. `figures` is the report as JSON (aggregates only; its unanswered questions are
shortened to one line each).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here, not imported: a migration is history (see docs/architecture.md).
_SINKS = ("email", "slack", "webhook")
_STATUSES = ("pending", "delivered", "refused")


def _in(words: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{w}'" for w in words) + ")"


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE daily_reports (
            report_date date NOT NULL,
            since timestamptz NOT NULL,
            until timestamptz NOT NULL,
            figures jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_daily_reports PRIMARY KEY (report_date),
            CONSTRAINT ck_daily_reports_window CHECK (since < until)
        )
        """
    )
    op.execute(
        f"""
        CREATE TABLE daily_report_deliveries (
            report_date date NOT NULL REFERENCES daily_reports (report_date) ON DELETE CASCADE,
            sink text NOT NULL,
            status text NOT NULL DEFAULT 'pending',
            attempts integer NOT NULL DEFAULT 0,
            last_error text,
            created_at timestamptz NOT NULL DEFAULT now(),
            last_attempt_at timestamptz,
            delivered_at timestamptz,
            CONSTRAINT pk_daily_report_deliveries PRIMARY KEY (report_date, sink),
            CONSTRAINT ck_daily_report_deliveries_sink CHECK (sink IN {_in(_SINKS)}),
            CONSTRAINT ck_daily_report_deliveries_status CHECK (status IN {_in(_STATUSES)}),
            CONSTRAINT ck_daily_report_deliveries_attempts CHECK (attempts >= 0),
            CONSTRAINT ck_daily_report_deliveries_delivered_at
                CHECK ((status = 'delivered') = (delivered_at IS NOT NULL))
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS daily_report_deliveries")
    op.execute("DROP TABLE IF EXISTS daily_reports")
