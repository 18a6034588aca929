"""Team notifications: one row per notification and sink, so a delivery is never sent twice.

`send_notification` (activities/notifications) records each attempt here before it calls the sink
and marks the row `delivered` (or `refused`, for good) after; a delivered row is never sent again.
No foreign key to conversations: a test notification (`crm-fte notify test`) names none, and a row
holds no personal data (ids, the sink's status and its last error only).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here, not imported: a migration is history (see docs/architecture.md).
_KINDS = ("escalation_new", "sla_due_soon", "sla_breached", "customer_replied")
_SINKS = ("email", "slack", "webhook")
_STATUSES = ("pending", "delivered", "refused")


def _in(words: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{w}'" for w in words) + ")"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE notification_deliveries (
            idempotency_key text NOT NULL,
            sink text NOT NULL,
            kind text NOT NULL,
            conversation_id text NOT NULL,
            status text NOT NULL DEFAULT 'pending',
            attempts integer NOT NULL DEFAULT 0,
            last_error text,
            provider_id text,
            created_at timestamptz NOT NULL DEFAULT now(),
            last_attempt_at timestamptz,
            delivered_at timestamptz,
            CONSTRAINT pk_notification_deliveries PRIMARY KEY (idempotency_key, sink),
            CONSTRAINT ck_notification_deliveries_sink CHECK (sink IN {_in(_SINKS)}),
            CONSTRAINT ck_notification_deliveries_kind CHECK (kind IN {_in(_KINDS)}),
            CONSTRAINT ck_notification_deliveries_status CHECK (status IN {_in(_STATUSES)}),
            CONSTRAINT ck_notification_deliveries_attempts CHECK (attempts >= 0),
            CONSTRAINT ck_notification_deliveries_delivered_at
                CHECK ((status = 'delivered') = (delivered_at IS NOT NULL))
        )
        """
    )
    op.execute("CREATE INDEX ix_notification_deliveries_conversation ON notification_deliveries (conversation_id)")
    # What is still waiting (a sink that is down), oldest first.
    op.execute(
        "CREATE INDEX ix_notification_deliveries_pending ON notification_deliveries (created_at) "
        "WHERE status = 'pending'"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS notification_deliveries")
