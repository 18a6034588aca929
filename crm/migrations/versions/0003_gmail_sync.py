"""Gmail sync state: the last processed historyId and the push watch's expiry, per mailbox.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row per support mailbox. The Pub/Sub webhook reads history from `history_id` and moves
    # it forward only after every new message reached Kafka; the watch-renewal activity writes the
    # baseline (first time only) and `watch_expiration`. Both writers are upserts that set
    # `updated_at` themselves, so this table needs no set_updated_at() trigger.
    op.execute(
        """
        CREATE TABLE gmail_sync_state (
            mailbox text PRIMARY KEY,
            history_id bigint NOT NULL,
            watch_expiration timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT ck_gmail_sync_state_mailbox_lower CHECK (mailbox = lower(mailbox)),
            CONSTRAINT ck_gmail_sync_state_history_id CHECK (history_id > 0)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS gmail_sync_state")
